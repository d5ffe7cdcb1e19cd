#!/usr/bin/env bash
# Usage: bench/replay-ab.sh BEFORE AFTER FILE [FILE...]
#
# Paired before/after runs of a file replay: for each capture, BEFORE and AFTER (two
# tapflow binaries) alternate REPEAT times, each `tapflow replay FILE --source file
# --collector 127.0.0.1:PORT $ARGS` into a loopback UDP port bound and never read. Prints
# per capture the median CPU seconds (user + sys of the whole process, wait4: `measure` in
# lib.sh) of each binary and the median and range of the per-pair ratios BEFORE / AFTER.
#
# Environment:
#   REPEAT   pairs per capture (default 9)
#   ARGS     extra replay arguments for both (e.g. "--cache-size 262144")
#   ARGS_BEFORE, ARGS_AFTER  for one side only (default ARGS): the same binary twice with
#            a capability off and on, for "cost against off"
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

[ $# -ge 3 ] || {
    sed -n '2,15p' "$0" >&2
    exit 2
}
before=$1
after=$2
shift 2
REPEAT=${REPEAT:-9}
ARGS=${ARGS:-}
ARGS_BEFORE=${ARGS_BEFORE:-$ARGS}
ARGS_AFTER=${ARGS_AFTER:-$ARGS}
work=$(mktemp -d /tmp/tapflow-ab.XXXXXX)
trap 'stop_sink; rm -rf "$work"' EXIT
start_sink
[ -n "$SINK_PORT" ] || { echo "replay-ab: could not start the UDP sink" >&2; exit 1; }

cpu_of() {
    # shellcheck disable=SC2086
    measure "$work/time" "$1" replay "$2" --source file --collector "127.0.0.1:$SINK_PORT" \
        $3 >"$work/log" 2>&1 || { echo "replay-ab: $1 failed on $2:" >&2; tail -5 "$work/log" >&2; exit 1; }
    awk '{ printf "%.6f\n", $2 + $3 }' "$work/time"
}

echo "replay-ab: $REPEAT pairs per capture, load $(load1)"
printf '%-28s %10s %10s %18s\n' capture "before s" "after s" "before/after (range)"
for file in "$@"; do
    : >"$work/pairs"
    for _ in $(seq "$REPEAT"); do
        b=$(cpu_of "$before" "$file" "$ARGS_BEFORE")
        a=$(cpu_of "$after" "$file" "$ARGS_AFTER")
        echo "$b $a" >>"$work/pairs"
    done
    mb=$(awk '{ print $1 }' "$work/pairs" | median)
    ma=$(awk '{ print $2 }' "$work/pairs" | median)
    ratios=$(awk '{ printf "%.4f\n", $1 / ($2 > 0 ? $2 : 1e-6) }' "$work/pairs")
    mr=$(echo "$ratios" | median)
    lo=$(echo "$ratios" | sort -g | head -1)
    hi=$(echo "$ratios" | sort -g | tail -1)
    printf '%-28s %10.4f %10.4f %8.2fx (%.2f-%.2f)\n' "$(basename "$file")" "$mb" "$ma" "$mr" "$lo" "$hi"
done
