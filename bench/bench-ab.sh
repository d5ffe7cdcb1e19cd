#!/usr/bin/env bash
# Usage: bench/bench-ab.sh BEFORE AFTER [OUT_DIR]
#
# Paired before/after runs of the data plane: BEFORE and AFTER (two tapflow binaries)
# alternate REPEAT times (who goes first alternates too), each `tapflow bench SOURCE
# --duration DURATION --ceiling-duration 0.5 --json $ARGS`, 100k flows of 64-byte frames,
# on the synthetic source and on DPDK's pcap driver. Rates are per second of CPU time the
# worker got (mpps_cpu), since the host is shared. Prints one markdown row per source: the
# median of each binary, the median and range of the per-pair ratios AFTER / BEFORE, and
# the load average at the start and the end.
#
# Environment: REPEAT (default 6), DURATION (default 3), ARGS (for both), ARGS_BEFORE,
# ARGS_AFTER (one side only: the same binary twice for "cost against off").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

[ $# -ge 2 ] || {
    sed -n '2,13p' "$0" >&2
    exit 2
}
before=$1
after=$2
out=${3:-$(mktemp -d)}
mkdir -p "$out"
repeat=${REPEAT:-6}
duration=${DURATION:-3}
read -r -a args_before <<<"${ARGS_BEFORE:-${ARGS:-}}"
read -r -a args_after <<<"${ARGS_AFTER:-${ARGS:-}}"
trace="$out/flows-100k-64B.pcap"
[ -f "$trace" ] || "$after" bench --pcap "$trace" --create-flows 100000 --frame-size 60 --create-only >&2

measure() { # binary args... ; prints mpps_cpu
    "$@" --duration "$duration" --ceiling-duration 0.5 --json 2>/dev/null | tail -1 |
        tee -a "$out/results.jsonl" | json_field mpps_cpu
}

before_after() { # a: the BEFORE binary, b: the AFTER one ($src)
    case $1 in
        a) measure "$before" bench "${src[@]}" "${args_before[@]}" ;;
        b) measure "$after" bench "${src[@]}" "${args_after[@]}" ;;
    esac
}

echo "| source | flows | frame | before Mpps (CPU) | after Mpps (CPU) | after / before (pairs) | spread | load |"
echo "|---|---|---|---|---|---|---|---|"
for source in synthetic dpdk-pcap; do
    case $source in
        synthetic) src=(--synthetic 100000 --frame-size 60) ;;
        dpdk-pcap) src=(--pcap "$trace") ;;
    esac
    result=$(paired before_after "$repeat")
    read -r b a ratio lo hi load_start load_end <<<"$result"
    printf '| %s | 100k | 64 B | %.2f | %.2f | %.3f | %s-%s | %s-%s |\n' "$source" \
        "$b" "$a" "$ratio" "$lo" "$hi" "$load_start" "$load_end"
done
