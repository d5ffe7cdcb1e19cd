#!/usr/bin/env bash
# Usage: bench/run-all.sh [OUT_DIR]
#
# Runs every measurement of BENCHMARKS.md's "Data plane" section and prints its tables
# (markdown). Raw results: OUT_DIR/results.jsonl (one `tapflow bench --json` object per
# run) and OUT_DIR/peers-*.txt. Traces are written to OUT_DIR too (about 2.3 GB at most).
#
#   single worker, DPDK pcap driver (infinite_rx):  1k, 100k, 1M flows x 64- and 1000-byte
#   single worker, synthetic source:                1k, 100k, 1M, 10M flows x 64 and 1000
#   scaling 1 -> 2 workers:                         pcap 100k flows, synthetic 1M flows
#   softflowd and pmacctd on the same files:        bench/compare-peers.sh, two traces
#
# Each configuration runs REPEAT times (default 3); the run with the median worker rate is
# reported. About 20 minutes on a 2-core machine. Environment: TAPFLOW (binary), REPEAT,
# DURATION (worker phase seconds, default 3), CEILING (ceiling phase seconds, default 1.5),
# PEERS=0 to skip the peer comparison.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

OUT=${1:-/tmp/tapflow-bench}
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-3}
CEILING=${CEILING:-1.5}
PEERS=${PEERS:-1}
command -v python3 >/dev/null || { echo "run-all: python3 is needed" >&2; exit 1; }
TAPFLOW=$(tapflow_bin)
export TAPFLOW
mkdir -p "$OUT"
results=$OUT/results.jsonl
: >"$results"

# bench LABEL ENV ARGS...: REPEAT runs of `tapflow bench ARGS --json`, tagged with LABEL.
bench() {
    local label=$1 env=$2
    shift 2
    local i line
    for i in $(seq "$REPEAT"); do
        echo "run-all: [$label] run $i/$REPEAT: tapflow bench $* (load $(load1))" >&2
        line=$(env $env "$TAPFLOW" bench "$@" --duration "$DURATION" --ceiling-duration "$CEILING" --json)
        printf '{"label": "%s", "env": "%s", "args": "%s", %s\n' "$label" "$env" "$*" "${line#\{}" >>"$results"
    done
}

trace() { # trace FLOWS FRAME -> path (created once)
    local path=$OUT/trace-$1-$2.pcap
    if [ ! -s "$path" ]; then
        "$TAPFLOW" bench --pcap "$path" --create-flows "$1" --frame-size "$2" --create-only >&2
    fi
    echo "$path"
}

for frame in 60 1000; do
    for flows in 1000 100000 1000000; do
        bench "pcap" "" --pcap "$(trace "$flows" "$frame")"
    done
done
for frame in 60 1000; do
    for flows in 1000 100000 1000000; do
        bench "synthetic" "" --synthetic "$flows" --frame-size "$frame"
    done
    # 2^24 entries (1.4 GB) for 10M flows: 60% load, under 2 GB.
    bench "synthetic" "" --synthetic 10000000 --frame-size "$frame" --cache-size 16777216
done
bench "scaling" "" --pcap "$(trace 100000 60)" --workers 2
bench "scaling" "" --synthetic 1000000 --workers 2

python3 - "$results" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in runs:
    groups.setdefault((r["label"], r["env"], r["args"]), []).append(r)
rows = []
for rs in groups.values():
    # The run with the median worker / ceiling ratio; the spread of both beside it.
    rs.sort(key=lambda r: r["ratio"])
    r = dict(rs[len(rs) // 2])
    r["ratios"] = "%.2f-%.2f" % (rs[0]["ratio"], rs[-1]["ratio"])
    # DPDK rows divide by the ceiling measured in slices of the worker's own window; the
    # ratio to the ceiling's separate phase (seconds earlier) is shown beside it.
    phase = sorted(x.get("ratio_phase", x["ratio"]) for x in rs)
    r["phase_ratios"] = "%.2f (%.2f-%.2f)" % (phase[len(phase) // 2], phase[0], phase[-1])
    rates = sorted(x["mpps_cpu"] for x in rs)
    r["rates"] = "%.1f-%.1f" % (rates[0], rates[-1])
    rows.append(r)

def flows(n):
    return {1000: "1k", 100000: "100k", 1000000: "1M", 10000000: "10M"}.get(n, str(n))

def table(title, select, memory=False, source=False):
    sel = [r for r in rows if select(r)]
    if not sel:
        return
    print("\n#### " + title + "\n")
    head = ["flows", "frame", "workers", "ceiling Mpps", "worker Mpps", "worker / ceiling",
            "ns/packet", "Gbps", "worker Mpps (wall)", "evicting packets",
            "runs: Mpps; ratio", "ratio to the ceiling's own phase", "load"]
    if memory:
        head[10:10] = ["table", "bytes/flow", "RSS", "peak RSS"]
    if source:
        head[0:0] = ["source"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in sel:
        frame = float(r["frame_bytes"])
        cells = [flows(r["flows"]), "%d B" % round(frame + 4), str(r["workers"]),
                 "%.2f" % r["ceiling_mpps_cpu"], "%.2f" % r["mpps_cpu"], "%.2f" % r["ratio"],
                 "%.0f" % r["ns_per_packet"], "%.2f" % (r["mpps_cpu"] * frame * 8 / 1000),
                 "%.2f" % r["mpps"], "%.3f%%" % (100.0 * r["evictions"] / max(1, r["packets"])),
                 "%s; %s" % (r["rates"], r["ratios"]), r["phase_ratios"],
                 r["load_before"].split()[0]]
        if memory:
            cells[10:10] = ["%d MB" % (r["table_bytes"] >> 20), "%.0f" % r["bytes_per_flow"],
                            "%d MB" % (r["rss_bytes"] >> 20),
                            "%d MB" % (r["peak_rss_bytes"] >> 20)]
        if source:
            cells[0:0] = [r["source"]]
        print("| " + " | ".join(cells) + " |")

def is_64(r):
    return float(r["frame_bytes"]) == 60.0

table("Single worker, DPDK pcap driver (infinite_rx)", lambda r: r["label"] == "pcap")
table("Single worker, synthetic source", lambda r: r["label"] == "synthetic", memory=True)
table("Scaling, 1 and 2 workers", lambda r: r["label"] == "scaling" or (
    r["label"] in ("pcap", "synthetic") and is_64(r)
    and ((r["source"] == "dpdk-pcap" and r["flows"] == 100000)
         or (r["source"] == "synthetic" and r["flows"] == 1000000))), source=True)
EOF

if [ "$PEERS" = 1 ]; then
    echo "run-all: peers on the generated realistic trace" >&2
    "$TAPFLOW" generate "$OUT/peers-mix.pcap" --flows 50000 --packets-per-flow 20 --frame-size 60 >&2
    "$here/compare-peers.sh" "$OUT/peers-mix.pcap" | tee "$OUT/peers-mix.txt"
    echo "run-all: peers on 100k concurrent flows" >&2
    "$TAPFLOW" bench --pcap "$OUT/peers-100k.pcap" --create-flows 100000 --rounds 10 \
        --frame-size 60 --create-only >&2
    "$here/compare-peers.sh" "$OUT/peers-100k.pcap" | tee "$OUT/peers-100k.txt"
fi
