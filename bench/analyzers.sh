#!/usr/bin/env bash
# What the analyzers of [analyzers.*] (issue 18) cost the worker: `tapflow bench` with no
# configuration, with all four analyzers off, each one alone "always", all four "always",
# and all four "auto" on benign traffic (the triggers stay off: the shared statistics
# alone). Configurations alternate run by run (paired: run i of each sees the same minutes
# of this shared machine); each cell is the median over REPEAT runs of the worker's rate
# per second of its own CPU time, and its ratio to the no-configuration run of the same
# round.
#
#   bench/analyzers.sh            # REPEAT=5 DURATION=3
#   CONFIGS="none all-always" SOURCES=pcap bench/analyzers.sh   # the target row only
#
# Sources: the synthetic source (100k IPv4/UDP flows, 64-byte frames) and DPDK's pcap
# driver on a 100k-flow `tapflow generate` trace of 64-byte frames (TCP with handshakes,
# UDP, ICMP, IPv4 and IPv6).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
bin=$(tapflow_bin)
repeat=${REPEAT:-5}
duration=${DURATION:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

analyzer_config() { # MODE_SYN MODE_HALF MODE_DNS MODE_DEST
    printf '[analyzers.syn_flood]\ntrigger = "%s"\n[analyzers.half_open]\ntrigger = "%s"\n' "$1" "$2"
    printf '[analyzers.dns]\ntrigger = "%s"\n[analyzers.per_destination]\ntrigger = "%s"\n' "$3" "$4"
}
analyzer_config off off off off >"$work/all-off.toml"
analyzer_config always off off off >"$work/syn_flood.toml"
analyzer_config off always off off >"$work/half_open.toml"
analyzer_config off off always off >"$work/dns.toml"
analyzer_config off off off always >"$work/per_destination.toml"
analyzer_config always always always always >"$work/all-always.toml"
analyzer_config auto auto auto auto >"$work/all-auto.toml"
read -r -a configs <<<"${CONFIGS:-none all-off syn_flood half_open dns per_destination all-always all-auto}"
sources=${SOURCES:-synthetic pcap}

"$bin" generate "$work/mixed.pcap" --flows 100000 --packets-per-flow 4 --frame-size 60 --seed 18 >/dev/null

measure() { # SOURCE_ARGS... -- prints "config round mpps_cpu" lines
    for round in $(seq "$repeat"); do
        for config in "${configs[@]}"; do
            local extra=()
            [ "$config" != none ] && extra=(--config "$work/$config.toml")
            local line
            line=$("$bin" bench "$@" --duration "$duration" --ceiling-duration 1 \
                --export none --json "${extra[@]}" 2>/dev/null | tail -1)
            echo "$config $round $(echo "$line" | json_field mpps_cpu)"
        done
    done
}

report() { # TITLE FILE
    echo
    echo "$1 (load before: $(load1))"
    echo
    echo "| configuration | Mpps per CPU-second (median) | paired ratio to no configuration (median) |"
    echo "|---|---|---|"
    for config in "${configs[@]}"; do
        local rate ratio
        rate=$(awk -v c="$config" '$1 == c { print $3 }' "$2" | median)
        ratio=$(awk -v c="$config" '$1 == "none" { base[$2] = $3 } $1 == c { v[$2] = $3 }
            END { for (r in v) print v[r] / base[r] }' "$2" | median)
        printf '| %s | %.3f | %.3f |\n' "$config" "$rate" "$ratio"
    done
}

if [[ " $sources " == *" synthetic "* ]]; then
    measure --synthetic 100000 --frame-size 60 >"$work/synthetic.txt"
    report "Synthetic source, 100k IPv4/UDP flows, 64 B" "$work/synthetic.txt"
fi
if [[ " $sources " == *" pcap "* ]]; then
    measure --pcap "$work/mixed.pcap" >"$work/pcap.txt"
    report "DPDK pcap driver, 100k mixed flows (tapflow generate), 64 B" "$work/pcap.txt"
fi
