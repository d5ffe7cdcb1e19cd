#!/usr/bin/env bash
# Usage: bench/live-sweep.sh [OUT_DIR]     (root: it makes a network namespace)
#
# The highest loss-free rate one worker takes from a live kernel interface. A namespace
# with a veth pair (tfa -> tfb, MTU 1500) is made; for each reader of tfb and each frame
# size, tcpreplay plays DURATION seconds' worth of a generated capture into tfa at each
# rate of RATES (packets per second, then --topspeed), and the frames the reader accounted
# are compared with the frames the veth delivered (tfb's rx_packets):
#
#   tapflow-afp   tapflow run, device net_af_packet0,iface=tfb, one worker
#   tapflow-xdp   tapflow run, device net_af_xdp0,iface=tfb, one worker
#   softflowd     softflowd -i tfb (Debian's, libpcap, its defaults) exporting IPFIX to
#                 nfcapd: packets in the flows nfcapd received after `softflowctl shutdown`
#   nfpcapd       nfpcapd -i tfb (Debian's nfdump, its defaults), packets in the flows it
#                 writes, read back with nfdump
#
# A step is loss-free when the reader accounted every delivered frame. For tapflow the
# steps also show the losses it counted itself (nic missed + errors + no mbuf + xdp ring
# full), which must equal the frames it lost. The last line of each table row says which
# rate tcpreplay actually reached at --topspeed: where that is the highest loss-free
# rate, tcpreplay capped the sweep, not the reader. Prints markdown
# tables; every step goes to OUT_DIR/steps.tsv.
#
# Environment:
#   TAPFLOW    tapflow binary (default: a release build of this checkout)
#   RATES      rates to try, ascending (default "25000 50000 100000 200000 400000 800000")
#   DURATION   seconds of traffic per step (default 2)
#   SIZES      frame sizes (default "64 600")
#   TOOLS      readers (default "tapflow-afp tapflow-xdp softflowd nfpcapd")
#   PIN        tapflow's [workers] pin (default true: worker on CPU 1, exporter on 0)
#   RX_DESCRIPTORS  tapflow's [[port]] rx_descriptors (default 1024; AF_XDP's ring size)
#   IDLE_SLEEP_US   tapflow's [workers] idle_sleep_us (default: tapflow's own)
#   KERNEL_RING_MB  tapflow's [[port]] kernel_ring_mb for af_packet (default: its own)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

RATES=${RATES:-"25000 50000 100000 200000 400000 800000"}
DURATION=${DURATION:-2}
SIZES=${SIZES:-"64 600"}
TOOLS=${TOOLS:-"tapflow-afp tapflow-xdp softflowd nfpcapd"}
PIN=${PIN:-true}
RX_DESCRIPTORS=${RX_DESCRIPTORS:-1024}

live_preconditions live-sweep tcpreplay softflowd softflowctl nfpcapd nfdump python3 ip
TAPFLOW=$(tapflow_bin)
out=${1:-$(mktemp -d /tmp/tapflow-live-sweep.XXXXXX)}
mkdir -p "$out"
work=$(mktemp -d /tmp/tapflow-live.XXXXXX)
ns=tfbench-$$
in_ns() { ip netns exec "$ns" "$@"; }
reader_pid=""
collector_pid=""
cleanup() {
    [ -n "$reader_pid" ] && kill "$reader_pid" 2>/dev/null || true
    [ -n "$collector_pid" ] && kill "$collector_pid" 2>/dev/null || true
    stop_sink
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

make_veth_namespace "$ns"
# tapflow's records go to a sink in the namespace (bound, never read).
start_sink "$ns"

delivered() { in_ns cat /sys/class/net/tfb/statistics/rx_packets; }

# Starts a reader of tfb; sets reader_pid (`ip netns exec` execs the reader, so the pid
# is the reader's own). $1: tool.
start_reader() {
    local tool=$1 device
    rm -rf "$work/reader" && mkdir -p "$work/reader"
    case $tool in
    tapflow-afp | tapflow-xdp)
        device=net_af_packet0,iface=tfb
        [ "$tool" = tapflow-xdp ] && device=net_af_xdp0,iface=tfb
        cat >"$work/reader/tapflow.toml" <<EOF
[dpdk]
lcores = "0-1"
hugepages = false
memory_mb = 512
file_prefix = "tfbench-$$"
[[port]]
device = "$device"
rx_descriptors = $RX_DESCRIPTORS
${KERNEL_RING_MB:+$([ "$tool" = tapflow-afp ] && echo "kernel_ring_mb = $KERNEL_RING_MB")}
[workers]
count = 1
pin = $PIN
${IDLE_SLEEP_US:+idle_sleep_us = $IDLE_SLEEP_US}
[cache]
capacity = 262144
[[collector]]
address = "127.0.0.1:$SINK_PORT"
[stats]
interval = 1
prometheus = false
EOF
        ip netns exec "$ns" "$TAPFLOW" run --config "$work/reader/tapflow.toml" \
            >"$work/reader/stdout" 2>"$work/reader/stderr" &
        reader_pid=$!
        for _ in $(seq 300); do
            if grep -q "running:" "$work/reader/stderr"; then
                # What tapflow says of its ports ("ring is 64 MB").
                grep -h "port " "$work/reader/stderr" >>"$out/tapflow-ports.log" || true
                return
            fi
            sleep 0.1
        done
        echo "live-sweep: tapflow did not start:" >&2
        cat "$work/reader/stderr" >&2
        exit 1
        ;;
    softflowd)
        mkdir -p "$work/reader/flows"
        ip netns exec "$ns" nfcapd -w "$work/reader/flows" -b 127.0.0.1 -p 2056 -B 67108864 -t 3600 \
            >/dev/null 2>&1 &
        collector_pid=$!
        ip netns exec "$ns" softflowd -i tfb -d -6 -v 10 -n 127.0.0.1:2056 -m 262144 \
            -c "$work/reader/ctl" -p "$work/reader/pid" >/dev/null 2>&1 &
        reader_pid=$!
        for _ in $(seq 100); do
            [ -S "$work/reader/ctl" ] && break
            sleep 0.1
        done
        ;;
    nfpcapd)
        mkdir -p "$work/reader/flows"
        ip netns exec "$ns" nfpcapd -i tfb -w "$work/reader/flows" -t 3600 >/dev/null 2>&1 &
        reader_pid=$!
        sleep 2
        ;;
    esac
    sleep 0.5
}

# Stops the reader; sets `accounted` to the frames it accounted. $1: tool.
stop_reader() {
    local tool=$1 n
    case $tool in
    tapflow-*)
        kill -TERM "$reader_pid"
        wait "$reader_pid" || true
        n=$(sed -n 's/^packets received *//p' "$work/reader/stdout" | tr -d ,)
        ;;
    softflowd)
        # shutdown expires and exports every flow; nfcapd writes its file on SIGTERM.
        in_ns softflowctl -c "$work/reader/ctl" shutdown >/dev/null 2>&1 || kill "$reader_pid"
        wait "$reader_pid" || true
        sleep 0.5
        kill -TERM "$collector_pid"
        wait "$collector_pid" || true
        n=$(nfdump -R "$work/reader/flows" -q -N -o 'fmt:%pkt' 2>/dev/null |
            awk '{ s += $1 } END { print s + 0 }')
        ;;
    nfpcapd)
        kill -TERM "$reader_pid"
        wait "$reader_pid" || true
        n=$(nfdump -R "$work/reader/flows" -q -N -o 'fmt:%pkt' 2>/dev/null |
            awk '{ s += $1 } END { print s + 0 }')
        ;;
    esac
    reader_pid=""
    accounted=${n:-0}
}

# tcpreplay's achieved rate from its report ("Rated: ... , 123456.78 pps").
achieved_pps() {
    sed -n 's/.*Rated:.*, *\([0-9.]*\) pps.*/\1/p' | head -1 | cut -d. -f1
}

printf 'tool\tframe\trate\tsent_pps\tdelivered\taccounted\tlost\tcounted_by_tapflow\n' \
    >"$out/steps.tsv"
declare -A best cap
for size in $SIZES; do
    pcap=$work/trace-$size.pcap
    # IPv4/UDP only, so every frame is one every reader accounts; 60 B + FCS = 64 B.
    "$TAPFLOW" bench --pcap "$pcap" --create-flows 2000 --rounds 100 \
        --frame-size "$((size - 4))" --create-only >/dev/null
    for tool in $TOOLS; do
        best[$tool/$size]=0
        for rate in $RATES top; do
            if [ "$rate" = top ]; then
                limit=200000
                speed=(--topspeed)
            else
                limit=$((rate * DURATION))
                [ "$limit" -gt 200000 ] && limit=200000
                speed=(--pps "$rate")
            fi
            start_reader "$tool"
            before=$(delivered)
            sent=$(in_ns tcpreplay -K -i tfa "${speed[@]}" --limit "$limit" "$pcap" 2>&1 |
                achieved_pps)
            sleep 1
            got=$(delivered)
            stop_reader "$tool"
            cp "$work/reader/stdout" "$out/$tool-$size-$rate.txt" 2>/dev/null || true
            delivered_n=$((got - before))
            lost=$((delivered_n - accounted))
            # tapflow's own count of what it lost (nic missed + errors + no mbuf + xdp
            # ring full).
            counted=-
            if [ "${tool%%-*}" = tapflow ]; then
                counted=$(sed -n 's/^nic \(missed\|errors\|no mbuf\|xdp ring full\) *//p' \
                    "$work/reader/stdout" | tr -d , | awk '{ s += $1 } END { print s + 0 }')
            fi
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$size" "$rate" "$sent" \
                "$delivered_n" "$accounted" "$lost" "$counted" | tee -a "$out/steps.tsv" >&2
            if [ "$rate" = top ]; then
                cap[$tool/$size]=$sent
                if [ "$lost" -le 0 ]; then best[$tool/$size]="$sent (tcpreplay's cap)"; fi
            elif [ "$lost" -le 0 ]; then
                best[$tool/$size]=$rate
            else
                break
            fi
        done
    done
done

echo
echo "load average at the end: $(load1); $(nproc) CPUs"
echo
echo "| reader | frame | highest loss-free rate (pps) | tcpreplay --topspeed reached (pps) |"
echo "| --- | --- | --- | --- |"
for size in $SIZES; do
    for tool in $TOOLS; do
        echo "| $tool | $size B | ${best[$tool/$size]} | ${cap[$tool/$size]:-not reached} |"
    done
done
