#!/usr/bin/env bash
# Usage: bench/compare-peers.sh [PCAP]
#
# Converts the same capture to IPFIX with tapflow (its own file reader, and DPDK's pcap
# driver), softflowd (-r) and pmacctd (nfprobe plugin), each sending to a loopback UDP port
# that is bound but never read, and prints for each: wall time, CPU seconds (user + sys of
# the process and its children, as wait4 reports them, to the microsecond: see `measure` in
# lib.sh), packets per second per core
# (packets / CPU seconds) and peak RSS; then tapflow's advantage over each peer.
#
# Without PCAP it generates one with `tapflow generate` (1 005 055 packets: 50 000 flows of
# 20 packets, 64-byte frames, tapflow's realistic protocol mix, 100 flows live at a time).
#
# Environment:
#   TAPFLOW        tapflow binary (default: a release build of this checkout)
#   REPEAT         runs per tool; the median is reported (default 3)
#   MAX_FLOWS      flow table size given to every tool (default 262144)
#   TOOLS          which to run (default "tapflow-file tapflow-dpdk softflowd pmacctd")
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

REPEAT=${REPEAT:-3}
MAX_FLOWS=${MAX_FLOWS:-262144}
TOOLS=${TOOLS:-"tapflow-file tapflow-dpdk softflowd pmacctd"}

for tool in python3; do
    command -v "$tool" >/dev/null || {
        echo "compare-peers: $tool is needed (Debian: apt-get install python3)" >&2
        exit 1
    }
done
TAPFLOW=$(tapflow_bin)
work=$(mktemp -d /tmp/tapflow-peers.XXXXXX)
trap 'stop_sink; rm -rf "$work"' EXIT

pcap=${1:-}
if [ -z "$pcap" ]; then
    pcap=$work/peers.pcap
    "$TAPFLOW" generate "$pcap" --flows 50000 --packets-per-flow 20 --frame-size 60 >&2
fi
[ -r "$pcap" ] || { echo "compare-peers: cannot read $pcap" >&2; exit 1; }
pcap=$(cd "$(dirname "$pcap")" && pwd)/$(basename "$pcap")

start_sink
port=$SINK_PORT
[ -n "$port" ] || { echo "compare-peers: could not start the UDP sink" >&2; exit 1; }

cat >"$work/pmacctd.conf" <<EOF
daemonize: false
pcap_savefile: $pcap
pcap_savefile_wait: false
plugins: nfprobe
nfprobe_receiver: 127.0.0.1:$port
nfprobe_version: 10
nfprobe_maxflows: $MAX_FLOWS
! pmacct's advice for high rates: a large buffer between the core and the plugin
! (with the defaults it runs about six times slower here).
plugin_buffer_size: 102400
plugin_pipe_size: 102400000
logfile: $work/pmacctd.log
EOF

command_of() {
    case $1 in
    tapflow-file) echo "$TAPFLOW replay $pcap --source file --cache-size $MAX_FLOWS --collector 127.0.0.1:$port" ;;
    tapflow-dpdk) echo "$TAPFLOW replay $pcap --source dpdk --cache-size $MAX_FLOWS --collector 127.0.0.1:$port" ;;
    softflowd) echo "softflowd -r $pcap -n 127.0.0.1:$port -v 10 -m $MAX_FLOWS" ;;
    pmacctd) echo "pmacctd -f $work/pmacctd.conf" ;;
    esac
}

# The packet count, from tapflow's own reader (the same for every tool).
packets=$("$TAPFLOW" replay "$pcap" --source file --cache-size "$MAX_FLOWS" \
    --collector "127.0.0.1:$port" | sed -n 's/^tapflow replay .*: \([0-9,]*\) packets via.*/\1/p' | tr -d ,)
[ -n "$packets" ] || { echo "compare-peers: tapflow could not read $pcap" >&2; exit 1; }

echo "compare-peers: $pcap, $packets packets, flow tables of $MAX_FLOWS, $REPEAT run(s) each, load $(load1)"
declare -A wall cpu rss pps
for tool in $TOOLS; do
    cmd=$(command_of "$tool")
    first=${cmd%% *}
    command -v "$first" >/dev/null || { echo "compare-peers: $first not found, skipping $tool" >&2; continue; }
    : >"$work/$tool.times"
    for _ in $(seq "$REPEAT"); do
        # shellcheck disable=SC2086
        if ! measure "$work/time" $cmd >"$work/$tool.log" 2>&1; then
            echo "compare-peers: $tool failed:" >&2
            tail -5 "$work/$tool.log" >&2
            continue 2
        fi
        cat "$work/time" >>"$work/$tool.times"
    done
    wall[$tool]=$(awk '{print $1}' "$work/$tool.times" | median)
    cpu[$tool]=$(awk '{print $2 + $3}' "$work/$tool.times" | median)
    rss[$tool]=$(awk '{print $4}' "$work/$tool.times" | median)
    pps[$tool]=$(awk -v p="$packets" -v c="${cpu[$tool]}" 'BEGIN { printf "%.0f", p / (c > 0 ? c : 0.001) }')
done

printf '%-14s %12s %8s %8s %14s %10s\n' tool packets "wall s" "CPU s" "pps per core" "peak RSS"
printf '%-14s %12s %8s %8s %14s %10s\n' -------------- ------------ -------- -------- -------------- ----------
for tool in $TOOLS; do
    [ -n "${cpu[$tool]:-}" ] || continue
    printf '%-14s %12s %8.3f %8.3f %14s %7.0f MB\n' "$tool" "$packets" "${wall[$tool]}" "${cpu[$tool]}" \
        "${pps[$tool]}" "$(awk -v k="${rss[$tool]}" 'BEGIN { print k / 1024 }')"
done
echo
for ours in tapflow-file tapflow-dpdk; do
    [ -n "${pps[$ours]:-}" ] || continue
    for peer in softflowd pmacctd; do
        [ -n "${pps[$peer]:-}" ] || continue
        awk -v a="${pps[$ours]}" -v b="${pps[$peer]}" -v o="$ours" -v p="$peer" \
            'BEGIN { printf "%s / %s: %.1fx packets per second per core\n", o, p, a / b }'
    done
done
