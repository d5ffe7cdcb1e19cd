#!/usr/bin/env bash
# What the millisecond monitor ([monitor], issue 17) costs the worker: `tapflow bench`
# with and without bench/monitor.toml, in alternating pairs, 100k flows of 64-byte frames,
# on the synthetic source and on DPDK's pcap driver. Rates are per second of CPU time the
# worker got (mpps_cpu), since the host is shared. Prints one markdown row per source:
# median off, median on, median of the per-pair ratios and their spread.
#   bench/monitor-cost.sh [OUT_DIR]     REPEAT (default 5), DURATION (default 3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bin=$(tapflow_bin)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
repeat=${REPEAT:-5}
duration=${DURATION:-3}
trace="$out/flows-100k-64B.pcap"
[ -f "$trace" ] || "$bin" bench --pcap "$trace" --create-flows 100000 --frame-size 60 --create-only >&2

measure() { # source-args... ; prints mpps_cpu
    "$bin" bench "$@" --duration "$duration" --json 2>/dev/null | tail -1 | tee -a "$out/results.jsonl" | json_field mpps_cpu
}

off_on() { # a: without the monitor, b: with it ($args)
    case $1 in
        a) measure "${args[@]}" ;;
        b) measure "${args[@]}" --config "$here/monitor.toml" ;;
    esac
}

echo "| source | flows | frame | worker Mpps off | worker Mpps on | on / off (pairs) | spread | load |"
echo "|---|---|---|---|---|---|---|---|"
for source in synthetic dpdk-pcap; do
    case $source in
        synthetic) args=(--synthetic 100000 --frame-size 60) ;;
        dpdk-pcap) args=(--pcap "$trace") ;;
    esac
    result=$(paired off_on "$repeat")
    read -r off on ratio lo hi load_start load_end <<<"$result"
    printf '| %s | 100k | 64 B | %.2f | %.2f | %.3f | %s-%s | %s-%s |\n' "$source" \
        "$off" "$on" "$ratio" "$lo" "$hi" "$load_start" "$load_end"
done
