#!/usr/bin/env bash
# Usage: bench/compare-peers.sh [PCAP]
#
# Converts the same capture to IPFIX with tapflow (its own file reader, and DPDK's pcap
# driver), YAF (--in FILE), ipfixprobe (pcap input), softflowd (-r) and pmacctd (nfprobe
# plugin), each sending to a loopback UDP port that is bound but never read, and prints for
# each: wall time, CPU seconds (user + sys of the whole process and its children, as wait4
# reports them, to the microsecond: see `measure` in lib.sh), packets per second per core
# (packets / CPU seconds) and peak RSS; then tapflow's advantage over each peer. The runs
# are paired: each round runs every tool once, in turn, and a ratio is the median of the
# rounds' ratios, so the machine's drift over minutes falls on both sides alike.
#
# YAF and ipfixprobe are not in Debian: bench/build-peers.sh builds them from their
# sources; a tool whose program is missing is skipped, saying so.
#
# Without PCAP it generates one with `tapflow generate` (1 005 055 packets: 50 000 flows of
# 20 packets, 64-byte frames, tapflow's realistic protocol mix, 100 flows live at a time).
#
# Environment:
#   TAPFLOW        tapflow binary (default: a release build of this checkout)
#   REPEAT         rounds; medians are reported (default 3)
#   MAX_FLOWS      flow table size given to every tool (default 262144; ipfixprobe's table
#                  is a power of two: the nearest at or above it)
#   TOOLS          which to run (default "tapflow-file tapflow-dpdk yaf yaf-file ipfixprobe
#                  softflowd pmacctd"; yaf-file is YAF writing its IPFIX to a file)
#   YAF, IPFIXPROBE  the peers' programs (default: yaf and ipfixprobe on PATH, else under
#                  PEERS, the PREFIX given to bench/build-peers.sh, default /usr/local)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

REPEAT=${REPEAT:-3}
MAX_FLOWS=${MAX_FLOWS:-262144}
TOOLS=${TOOLS:-"tapflow-file tapflow-dpdk yaf yaf-file ipfixprobe softflowd pmacctd"}
PEERS=${PEERS:-/usr/local}
YAF=${YAF:-$(command -v yaf || echo "$PEERS/bin/yaf")}
IPFIXPROBE=${IPFIXPROBE:-$(command -v ipfixprobe || echo "$PEERS/ipfixprobe/bin/ipfixprobe")}
# ipfixprobe sizes its table as 2^size.
cache_exponent=$(awk -v n="$MAX_FLOWS" 'BEGIN { e = 0; while (2 ^ e < n) e++; print e }')

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
    yaf) echo "$YAF --in $pcap --out 127.0.0.1 --ipfix udp --ipfix-port $port --max-flows $MAX_FLOWS" ;;
    # YAF's UDP export costs it several times its processing: its file output beside it.
    yaf-file) echo "$YAF --in $pcap --out $work/yaf.ipfix --max-flows $MAX_FLOWS" ;;
    ipfixprobe) echo "$IPFIXPROBE -i pcap;file=$pcap -s cache;size=$cache_exponent -o ipfix;host=127.0.0.1;port=$port;udp" ;;
    softflowd) echo "softflowd -r $pcap -n 127.0.0.1:$port -v 10 -m $MAX_FLOWS" ;;
    pmacctd) echo "pmacctd -f $work/pmacctd.conf" ;;
    esac
}

# The packet count, from tapflow's own reader (the same for every tool).
packets=$("$TAPFLOW" replay "$pcap" --source file --cache-size "$MAX_FLOWS" \
    --collector "127.0.0.1:$port" | sed -n 's/^tapflow replay .*: \([0-9,]*\) packets via.*/\1/p' | tr -d ,)
[ -n "$packets" ] || { echo "compare-peers: tapflow could not read $pcap" >&2; exit 1; }

echo "compare-peers: $pcap, $packets packets, flow tables of $MAX_FLOWS, $REPEAT round(s), load $(load1)"
declare -A wall cpu rss pps
running=""
for tool in $TOOLS; do
    cmd=$(command_of "$tool")
    first=${cmd%% *}
    command -v "$first" >/dev/null || { echo "compare-peers: $first not found, skipping $tool" >&2; continue; }
    running="$running $tool"
    : >"$work/$tool.times"
done
for round in $(seq "$REPEAT"); do
    for tool in $running; do
        [ -e "$work/$tool.times" ] || continue
        # shellcheck disable=SC2086
        if ! measure "$work/time" $(command_of "$tool") >"$work/$tool.log" 2>&1; then
            echo "compare-peers: $tool failed:" >&2
            tail -5 "$work/$tool.log" >&2
            rm -f "$work/$tool.times"
            continue
        fi
        sed "s/^/$round /" "$work/time" >>"$work/$tool.times"
    done
done
for tool in $running; do
    [ -s "$work/$tool.times" ] || continue
    wall[$tool]=$(awk '{print $2}' "$work/$tool.times" | median)
    cpu[$tool]=$(awk '{print $3 + $4}' "$work/$tool.times" | median)
    rss[$tool]=$(awk '{print $5}' "$work/$tool.times" | median)
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
    for peer in yaf yaf-file ipfixprobe softflowd pmacctd; do
        [ -n "${pps[$peer]:-}" ] || continue
        # The ratio of each round's CPU seconds, peer / ours; median and range.
        join <(awk '{print $1, $3 + $4}' "$work/$ours.times" | sort) \
            <(awk '{print $1, $3 + $4}' "$work/$peer.times" | sort) |
            awk '{print $3 / ($2 > 0 ? $2 : 1e-6)}' | sort -g >"$work/ratios"
        printf '%s uses %.1fx less CPU than %s (rounds: %.1f-%.1fx)\n' "$ours" \
            "$(median <"$work/ratios")" "$peer" "$(head -1 "$work/ratios")" "$(tail -1 "$work/ratios")"
    done
done
