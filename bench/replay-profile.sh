#!/usr/bin/env bash
# Usage: bench/replay-profile.sh PCAP [REPLAY ARGS...]
#
# Where a file replay's CPU goes, beside what merely reading the file costs. Records
# `tapflow replay PCAP --source file --collector 127.0.0.1:PORT [ARGS]` with `perf record
# -e cpu-clock -c 100000` (one sample per 0.1 ms of CPU, every thread, user and kernel)
# into a loopback UDP port bound and never read, and sorts the samples by thread and
# symbol into:
#
#   reading    the worker's file reader (probe::pcap) and the kernel's read of the file
#   parsing    the parser's general path (probe::parse) and the worker's loop, into which
#              the parser's fast path is inlined
#   cache      the flow table (flowcache)
#   export     the export loop's thread: encoding and the kernel's UDP sends
#   table      the kernel zeroing the flow table's pages as they are first touched
#   start-up   loading the binary and its libraries, threads, the rest of the main thread
#
# Then measures merely reading the file, median of 5: `dd` to /dev/null (the kernel's
# copy alone) and, when built, tapflow's reader into a sink that only counts
# (`cargo build --release -p probe --example read_capture`).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

[ $# -ge 1 ] || {
    sed -n '2,21p' "$0" >&2
    exit 2
}
pcap=$1
shift
command -v perf >/dev/null || { echo "replay-profile: perf is needed (Debian: linux-perf)" >&2; exit 1; }
TAPFLOW=$(tapflow_bin)
work=$(mktemp -d /tmp/tapflow-profile.XXXXXX)
trap 'stop_sink; rm -rf "$work"' EXIT
start_sink
[ -n "$SINK_PORT" ] || { echo "replay-profile: could not start the UDP sink" >&2; exit 1; }

perf record -q -e cpu-clock -c 100000 -o "$work/perf.data" -- \
    "$TAPFLOW" replay "$pcap" --source file --collector "127.0.0.1:$SINK_PORT" "$@" >/dev/null
perf report -i "$work/perf.data" --no-children --sort comm,sym --stdio -n -t $'\t' 2>/dev/null |
    grep -v '^#' | grep -v '^$' >"$work/report"

# Fields: overhead, samples, thread, symbol ("[k] name" or "[.] name").
awk -F'\t' '
{
    samples = $2; thread = $3; sym = $4
    kernel = (sym ~ /^\[k\]/)
    if (kernel && sym ~ /clear_page|folio_zero/) {
        # The kernel zeroing the flow table'"'"'s pages, in whichever thread touches them
        # first (the worker, in a replay).
        cat = "table"
    } else if (thread ~ /^tapflow-worker/) {
        if (sym ~ /flowcache::/) cat = "cache"
        else if (sym ~ /probe::pcap::|BufReader|FileSource/ || kernel) cat = "reading"
        else cat = "parsing"
    } else if (thread ~ /^tapflow-events/) {
        cat = "export"
    } else {
        if (sym ~ /exporter::|export_loop|crossbeam|send|udp|ip_|skb|net|sock/) cat = "export"
        else cat = "start-up"
    }
    n[cat] += samples; total += samples
}
END {
    printf "%-10s %10s %8s\n", "part", "CPU ms", "share"
    split("reading parsing cache export table start-up", order, " ")
    for (i = 1; i <= 6; i++) {
        c = order[i]
        printf "%-10s %10.1f %7.1f%%\n", c, n[c] / 10, total ? 100 * n[c] / total : 0
    }
    printf "%-10s %10.1f\n", "total", total / 10
}' "$work/report"

echo
echo "merely reading $(basename "$pcap") ($(stat -c %s "$pcap") bytes), median of 5:"
for _ in 1 2 3 4 5; do
    measure "$work/time" dd if="$pcap" of=/dev/null bs=1M status=none
    awk '{ printf "%.6f\n", $2 + $3 }' "$work/time"
done | median | awk '{ printf "  dd to /dev/null:            %6.1f ms CPU\n", $1 * 1000 }'
reader=$(dirname "$TAPFLOW")/examples/read_capture
if [ -x "$reader" ]; then
    for _ in 1 2 3 4 5; do
        measure "$work/time" "$reader" "$pcap" 1 >/dev/null
        awk '{ printf "%.6f\n", $2 + $3 }' "$work/time"
    done | median | awk '{ printf "  tapflow reader, no worker:  %6.1f ms CPU (whole process)\n", $1 * 1000 }'
else
    echo "  (tapflow reader: build it with cargo build --release -p probe --example read_capture)"
fi
