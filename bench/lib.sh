# Shared helpers of the bench/ scripts (sourced, not run).
# shellcheck shell=bash

# The tapflow binary: $TAPFLOW, else a release build of this checkout (built if missing).
tapflow_bin() {
    if [ -n "${TAPFLOW:-}" ]; then
        echo "$TAPFLOW"
        return
    fi
    local root target
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    target=${CARGO_TARGET_DIR:-$root/target}
    if [ ! -x "$target/release/tapflow" ]; then
        echo "bench: building tapflow (release) in $target" >&2
        (cd "$root" && cargo build --release -p tapflow >&2) || exit 1
    fi
    echo "$target/release/tapflow"
}

# The 1-minute load average.
load1() {
    cut -d' ' -f1 /proc/loadavg
}

# A field of a one-line JSON object: json_field NAME < json
json_field() {
    sed -n "s/.*\"$1\": *\"\{0,1\}\([^,\"}]*\).*/\1/p"
}

# The median of numbers on stdin, one per line.
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Paired measurements of two configurations, A and B: `paired RUN REPEAT`, where `RUN a`
# and `RUN b` each print one rate. The order alternates pair by pair, so that each side
# goes first as often and both meet the same minutes of a shared host. Prints one line:
# "MEDIAN_A MEDIAN_B MEDIAN_RATIO LOWEST_RATIO HIGHEST_RATIO LOAD_START LOAD_END", the
# ratios being B / A; fails if a run does.
paired() { # RUN REPEAT
    local run=$1 repeat=$2 i a b as=() bs=() ratios=() load_start
    load_start=$(load1)
    for i in $(seq "$repeat"); do
        if [ $((i % 2)) -eq 1 ]; then
            a=$("$run" a) || return
            b=$("$run" b) || return
        else
            b=$("$run" b) || return
            a=$("$run" a) || return
        fi
        as+=("$a") bs+=("$b")
        ratios+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')")
    done
    echo "$(printf '%s\n' "${as[@]}" | median) $(printf '%s\n' "${bs[@]}" | median)" \
        "$(printf '%s\n' "${ratios[@]}" | median)" \
        "$(printf '%s\n' "${ratios[@]}" | sort -g | head -1)" \
        "$(printf '%s\n' "${ratios[@]}" | sort -g | tail -1)" "$load_start" "$(load1)"
}

# Starts a UDP "collector" on 127.0.0.1 that binds a port and never reads it: the kernel
# drops what overflows its buffer, so exporters send as they would to a busy collector, and
# no collector process competes for the CPU. Sets SINK_PORT and SINK_PID; call it directly
# (not in $(...), which would lose SINK_PID) and stop it with stop_sink. With an argument,
# the sink runs inside that network namespace (`ip netns exec` execs it: SINK_PID is its).
SINK_PID=""
SINK_PORT=""
start_sink() { # [NETNS]
    local portfile in_ns=()
    [ $# -gt 0 ] && in_ns=(ip netns exec "$1")
    portfile=$(mktemp)
    "${in_ns[@]}" python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
time.sleep(86400)
' >"$portfile" &
    SINK_PID=$!
    for _ in $(seq 50); do
        [ -s "$portfile" ] && break
        sleep 0.1
    done
    SINK_PORT=$(cat "$portfile")
    rm -f "$portfile"
}

# What the live scripts need, or exit saying what is missing: every TOOL on the PATH, and
# root (they make a network namespace). live_preconditions SCRIPT TOOL...
live_preconditions() { # SCRIPT TOOL...
    local script=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || {
            echo "$script: $tool is needed (scripts/setup.sh installs it)" >&2
            exit 1
        }
    done
    [ "$(id -u)" = 0 ] || { echo "$script: run as root (network namespace)" >&2; exit 1; }
}

# A network namespace NETNS with a veth pair tfa <-> tfb, both up, and IPv6 off so that no
# router solicitation joins the frames counted; `ip netns del NETNS` removes it all.
make_veth_namespace() { # NETNS
    ip netns add "$1"
    ip netns exec "$1" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1
    ip netns exec "$1" ip link add tfa type veth peer name tfb
    for dev in lo tfa tfb; do ip netns exec "$1" ip link set "$dev" up; done
}

stop_sink() {
    if [ -n "$SINK_PID" ]; then
        kill "$SINK_PID" 2>/dev/null
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=""
    fi
}

# Runs a command and writes "WALL USER SYS MAXRSS_KB" to OUTFILE: measure OUTFILE CMD ARGS...
# Like `/usr/bin/time -f "%e %U %S %M"` (the same wait4 accounting: the process and the
# children it waited for), but to the microsecond: GNU time rounds CPU time to 10 ms, which
# is 7% of a 0.14 s replay. The command's own exit status is returned.
measure() {
    local out=$1
    shift
    python3 -c '
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
start = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - start
with open(out, "w") as f:
    f.write("%.6f %.6f %.6f %d\n" % (wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
' "$out" "$@"
}
