#!/usr/bin/env bash
# Usage: bench/flood-detect.sh [OUT_DIR]     (root: it makes a network namespace)
# Background processes are started with `ip netns exec` itself (it execs them), so that
# the PIDs kept are theirs.
#
# How soon a SYN flood is detected, tapflow's syn_flood analyzer beside FastNetMon
# (Debian's 1.2) reading the same traffic in the same run (issue 18). FastNetMon has no
# file input, so the trace of tests/analyzers_flood.rs (20 s of benign TCP and UDP, 15,000
# spoofed SYNs to 10.0.0.80:80 at 5,000 a second from 8.35 s) is played by tcpreplay at
# its own timing into one end of a veth pair in a namespace; both read the other end:
#
#   tapflow      tapflow run, net_af_packet on tfb, the test's [analyzers.syn_flood]
#                (auto: on at 1,000 SYNs/s to one destination), events to a Unix socket
#   FastNetMon   mirror_afpacket on tfb, threshold_pps = 1000 for the trace's /24s (its other
#                settings as Debian ships them: a 5 s average, checked every second),
#                ban on, a notify script that notes when it is called
#
# Detection time: from the first flood SYN entering tfb (dumpcap's kernel timestamp) to
# tapflow's syn_flood_start event reaching its socket, and to FastNetMon calling its
# script with "ban" for the victim; wall clock for all three. A first round plays the
# trace without the flood: neither should raise anything. Prints a markdown table.
#
# Environment: TAPFLOW (tapflow binary), REPEAT (flood rounds, default 3),
# FASTNETMON_EXTRA (lines added to FastNetMon's configuration, e.g.
# "average_calculation_time = 1" for a 1 s average instead of its default 5 s).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
REPEAT=${REPEAT:-3}

live_preconditions flood-detect tcpreplay dumpcap tshark fastnetmon python3 ip
TAPFLOW=$(tapflow_bin)
out=${1:-$(mktemp -d /tmp/tapflow-flood.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

echo "flood-detect: writing the traces (tests/analyzers_flood.rs)" >&2
(cd "$here/.." && TAPFLOW_FLOOD_DIR=$out cargo test --release --locked -q \
    --test analyzers_flood -- --ignored write_the_traces_for_the_bench >&2)

ns=tfflood-$$
in_ns() { ip netns exec "$ns" "$@"; }
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    stop_sink
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
make_veth_namespace "$ns"
# The records' sink (bound, never read).
start_sink "$ns"

# One round: $1 trace, $2 round directory. Prints "flood_start tapflow fastnetmon" (wall
# seconds; "-" for nothing raised).
round() {
    local trace=$1 dir=$2
    mkdir -p "$dir"
    rm -f "$dir/events.sock"
    # The victim's and the benign servers' networks (FastNetMon keeps counters for every
    # address of its networks: a /8 costs it 19 GB).
    printf '10.0.0.0/24\n10.1.0.0/24\n10.2.0.0/24\n' >"$dir/networks"
    : >"$dir/whitelist"
    printf '#!/bin/sh\necho "$(date +%%s.%%N) $*" >>%s\n' "$dir/notified" >"$dir/notify.sh"
    chmod +x "$dir/notify.sh"
    cat >"$dir/fastnetmon.conf" <<CONF
mirror_afpacket = on
interfaces = tfb
networks_list_path = $dir/networks
white_list_path = $dir/whitelist
process_incoming_traffic = on
process_outgoing_traffic = on
enable_ban = on
ban_for_pps = on
ban_for_bandwidth = off
ban_for_flows = off
threshold_pps = 1000
notify_script_enabled = on
notify_script_path = $dir/notify.sh
enable_api = off
graphite = off
logging_local_syslog_logging = off
${FASTNETMON_EXTRA:-}
CONF
    cat >"$dir/tapflow.toml" <<CONF
[dpdk]
hugepages = false
memory_mb = 512
file_prefix = "tfflood-$$"
[[port]]
device = "net_af_packet0,iface=tfb"
[workers]
count = 1
[[collector]]
address = "127.0.0.1:$SINK_PORT"
[stats]
prometheus = false
[events]
output = "unix:$dir/events.sock"
$(cat "$out/analyzers.toml")
CONF
    # The events' listener stamps each datagram as it arrives.
    ip netns exec "$ns" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "w") as f:
    while True:
        data = s.recv(65536)
        f.write("%.6f %s\n" % (time.time(), data.decode().strip()))
        f.flush()
' "$dir/events.sock" "$dir/events" &
    local listener=$!
    pids+=("$listener")
    ip netns exec "$ns" fastnetmon --configuration_file "$dir/fastnetmon.conf" --log_file "$dir/fastnetmon.log" \
        --disable_pid_logic >/dev/null 2>&1 &
    local fnm=$!
    pids+=("$fnm")
    ip netns exec "$ns" "$TAPFLOW" run --config "$dir/tapflow.toml" >"$dir/tapflow.out" 2>"$dir/tapflow.err" &
    local tf=$!
    pids+=("$tf")
    for _ in $(seq 300); do
        grep -q "running:" "$dir/tapflow.err" && break
        sleep 0.1
    done
    ip netns exec "$ns" dumpcap -q -i tfb -c 1 -w "$dir/first-syn.pcapng" \
        -f 'dst host 10.0.0.80 and tcp[tcpflags] & tcp-syn != 0' >/dev/null 2>&1 &
    local dump=$!
    pids+=("$dump")
    sleep 3 # FastNetMon reads its networks and opens its socket
    in_ns tcpreplay -q -i tfa "$trace" >"$dir/tcpreplay.out" 2>&1
    sleep 4 # FastNetMon's average and ban run once a second
    kill -TERM "$tf" "$fnm" "$dump" 2>/dev/null || true
    wait "$tf" 2>/dev/null || true
    kill "$listener" 2>/dev/null || true
    local start tapflow fastnetmon
    start=$(tshark -r "$dir/first-syn.pcapng" -T fields -e frame.time_epoch 2>/dev/null | head -1 || true)
    tapflow=$(grep -m1 '"type": *"syn_flood_start"' "$dir/events" 2>/dev/null | cut -d' ' -f1 || true)
    fastnetmon=$(grep -m1 '10.0.0.80.*ban' "$dir/notified" 2>/dev/null | cut -d' ' -f1 || true)
    echo "${start:--} ${tapflow:--} ${fastnetmon:--}"
}

delay() { # start detected
    [ "$1" = - ] || [ "$2" = - ] && { echo "not raised"; return; }
    awk -v s="$1" -v d="$2" 'BEGIN { printf "%.3f s", d - s }'
}

echo "| round | trace | tcpreplay | tapflow: syn_flood_start after the first flood SYN | FastNetMon: ban after the first flood SYN | load |"
echo "|---|---|---|---|---|---|"
read -r _ tf fnm < <(round "$out/background.pcap" "$out/background")
printf '| 0 | background only | %s | %s | %s | %s |\n' \
    "$(grep -o 'Rated: [^,]*, [^,]*, [0-9.]* pps' "$out/background/tcpreplay.out" | sed 's/.*, //')" \
    "$([ "$tf" = - ] && echo "nothing raised" || echo "raised at $tf")" \
    "$([ "$fnm" = - ] && echo "nothing raised" || echo "raised at $fnm")" "$(load1)"
for r in $(seq "$REPEAT"); do
    read -r start tf fnm < <(round "$out/flood.pcap" "$out/flood-$r")
    printf '| %s | flood | %s | %s | %s | %s |\n' "$r" \
        "$(grep -o 'Rated: [^,]*, [^,]*, [0-9.]* pps' "$out/flood-$r/tcpreplay.out" | sed 's/.*, //')" \
        "$(delay "$start" "$tf")" "$(delay "$start" "$fnm")" "$(load1)"
done
