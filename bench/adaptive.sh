#!/usr/bin/env bash
# Adaptive sampling ([sampling.adaptive], issue 19), two questions:
#  1. How does the controller hold a budget? A generated capture replayed at its own pace
#     (`replay --realtime`, a receive ring that drops and counts when full), first with a
#     budget it cannot reach (the worker's unsampled busy share), then with half of that:
#     prints the changes and the busy share, and plots busy share and interval per period
#     (bench/adaptive-plot.py -> OUT_DIR/adaptive.svg).
#  2. What does the controller cost when it does not sample? `tapflow bench` on the
#     synthetic source, with and without a controller that may not move (max_interval 1),
#     in alternating pairs: one markdown row (median off, on, ratio of pairs, spread).
#   bench/adaptive.sh [OUT_DIR]     REPEAT (default 5), DURATION (default 3), SPACING_US
#                                   (default 1: a million packets a second)
# The capture: a million flows of 4 packets, all live at once, in trains of 32 frames: a
# flow table far larger than the CPU caches, where accounting a packet costs most and
# sampling relieves most (a sampled-out packet still costs its receive, parse and sampling
# hash). A change of interval ends the cached flows lazily (no flush): the receive drops
# say what a change costs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bin=$(tapflow_bin)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
repeat=${REPEAT:-5}
duration=${DURATION:-3}
spacing=${SPACING_US:-1}

trace="$out/adaptive-${spacing}us.pcap"
[ -f "$trace" ] || "$bin" generate "$trace" --flows 1000000 --packets-per-flow 4 \
    --frame-size 60 --spacing-us "$spacing" --live-flows 1000000 --train 32 >&2
start_sink
trap stop_sink EXIT

config() { # budget max_interval file
    cat >"$3" <<EOF
[sampling.adaptive]
enabled = true
budget_busy = $1
min_interval = 1
max_interval = $2
adjust_period_ms = 100
EOF
}

replay() { # config; prints the summary JSON, the debug log to $out/log
    RUST_LOG=info,probe::adaptive=debug "$bin" replay "$trace" --source file --realtime \
        --ring-frames 262144 --collector "127.0.0.1:$SINK_PORT" --json --config "$1" \
        2>"$out/log"
}

busy_share() { # summary JSON on stdin
    python3 -c 'import json,sys; a=json.load(sys.stdin)["counters"]["extensions"]["adaptive"]; print("%.3f" % (a["busy_microseconds"] / a["observed_microseconds"]))'
}

config 0.95 1 "$out/observe.toml"
unsampled=$(replay "$out/observe.toml" | busy_share)
budget=$(awk -v b="$unsampled" 'BEGIN { printf "%.3f", b / 2 }')
config "$budget" 256 "$out/hold.toml"
summary=$(replay "$out/hold.toml")
held=$(echo "$summary" | busy_share)
missed=$(echo "$summary" | json_field tapflow_nic_missed_total)
echo "unsampled busy share $unsampled; budget $budget: busy share $held over the run, receive drops ${missed:-0}"
grep -o 'sampling 1 in .*' "$out/log" || true
python3 "$here/adaptive-plot.py" "$budget" "$out/adaptive.svg" \
    "busy share and sampling interval, budget $budget ($(load1) load)" <"$out/log"
echo "plot: $out/adaptive.svg"

config 0.95 1 "$out/still.toml"
off_on() { # a: no controller, b: a controller that may not move; prints mpps_cpu
    local with=()
    [ "$1" = b ] && with=(--config "$out/still.toml")
    "$bin" bench --synthetic 100000 --frame-size 60 --duration "$duration" \
        --ceiling-duration 0.5 --json "${with[@]}" 2>/dev/null | tail -1 | json_field mpps_cpu
}
result=$(paired off_on "$repeat")
read -r off on ratio lo hi load_start load_end <<<"$result"
echo "| source | flows | frame | worker Mpps off | worker Mpps on (controller, not sampling) | on / off (pairs) | spread | load |"
echo "|---|---|---|---|---|---|---|---|"
printf '| synthetic | 100k | 64 B | %.2f | %.2f | %.3f | %s-%s | %s-%s |\n' \
    "$off" "$on" "$ratio" "$lo" "$hi" "$load_start" "$load_end"
