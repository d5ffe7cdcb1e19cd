#!/usr/bin/env bash
# What transport KPIs and biflows ([kpi], issue 16) cost the worker: `tapflow bench`
# through DPDK's pcap driver with and without a [kpi] section, in alternating pairs (who
# goes first alternates too), 64-byte frames, on two traces: 100k IPv4/UDP flows
# (--create-flows) and 50k TCP conversations, a data segment and its ACK a round, so 100k
# flows (bench/tcp-conversations.py). Two configurations: biflows with TCP KPIs, and
# biflows alone (tcp = false). Rates are per second of CPU time the worker got (mpps_cpu),
# since the host is shared. Prints one markdown row per trace and configuration: median
# off, median on, median of the per-pair ratios on / off and their spread, the load.
#   bench/kpi-cost.sh [OUT_DIR]     REPEAT (default 5), DURATION (default 3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bin=$(tapflow_bin)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
repeat=${REPEAT:-5}
duration=${DURATION:-3}
udp="$out/udp-100k-64B.pcap"
tcp="$out/tcp-50k-conversations.pcap"
[ -f "$udp" ] || "$bin" bench --pcap "$udp" --create-flows 100000 --frame-size 60 --create-only >&2
[ -f "$tcp" ] || python3 "$here/tcp-conversations.py" "$tcp" 50000 2 >&2
printf '[kpi]\nbiflow = true\ntcp = true\n' >"$out/kpi-on.toml"
printf '[kpi]\nbiflow = true\ntcp = false\n' >"$out/biflow-only.toml"

measure() { # args... ; prints mpps_cpu
    "$bin" bench "$@" --duration "$duration" --ceiling-duration 0.5 --json 2>/dev/null | tail -1 |
        tee -a "$out/results.jsonl" | json_field mpps_cpu
}

off_on() { # a: [kpi] off, b: on ($file, $config)
    case $1 in
        a) measure --pcap "$file" ;;
        b) measure --pcap "$file" --config "$out/$config.toml" ;;
    esac
}

echo "| trace | [kpi] | worker Mpps off | worker Mpps on | on / off (pairs) | spread | load |"
echo "|---|---|---|---|---|---|---|"
for trace in udp tcp; do
    for config in kpi-on biflow-only; do
        case $trace in
            udp) file=$udp label="100k UDP flows" ;;
            tcp) file=$tcp label="50k TCP conversations" ;;
        esac
        case $config in
            kpi-on) what="biflow + tcp" ;;
            biflow-only) what="biflow" ;;
        esac
        result=$(paired off_on "$repeat")
        read -r off on ratio lo hi load_start load_end <<<"$result"
        printf '| %s | %s | %.2f | %.2f | %.3f | %s-%s | %s-%s |\n' "$label" "$what" \
            "$off" "$on" "$ratio" "$lo" "$hi" "$load_start" "$load_end"
    done
done
