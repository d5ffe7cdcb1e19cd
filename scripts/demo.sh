#!/usr/bin/env bash
# Demo: generate a capture, replay it through DPDK's pcap driver into nfdump's nfcapd on
# loopback, and show what the collector decoded next to the capture's own totals.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

out=demo-out
port=${TAPFLOW_DEMO_PORT:-20555}
export_version=${TAPFLOW_DEMO_EXPORT:-ipfix}
rm -rf "$out" && mkdir -p "$out/nfcapd"

echo "== building tapflow (release)"
cargo build --release --quiet
tapflow=target/release/tapflow

echo "== generating $out/demo.pcap"
# The default mix includes ARP (not IP) frames; malformed frames (--noise) are left out here
# because tshark, the independent truth below, still calls a broken IP header "ip".
$tapflow generate "$out/demo.pcap" --flows 2000 --packets-per-flow 25

echo "== starting nfcapd on 127.0.0.1:$port"
nfcapd -w "$out/nfcapd" -b 127.0.0.1 -p "$port" -B 67108864 -t 3600 >"$out/nfcapd.log" 2>&1 &
nfcapd_pid=$!
trap 'kill "$nfcapd_pid" 2>/dev/null || true' EXIT
sleep 1
kill -0 "$nfcapd_pid" || { cat "$out/nfcapd.log"; echo "nfcapd did not start" >&2; exit 1; }

echo "== replaying through DPDK (net_pcap) as $export_version"
$tapflow replay "$out/demo.pcap" --collector "127.0.0.1:$port" --export "$export_version"

# nfcapd writes its file when it stops.
sleep 1
kill -TERM "$nfcapd_pid"
wait "$nfcapd_pid" 2>/dev/null || true
trap - EXIT

echo
echo "== what nfcapd decoded: top addresses by bytes"
nfdump -R "$out/nfcapd" -s ip/bytes -n 10 | head -n 13
echo
echo "== totals: collector vs. the capture itself"
read -r c_flows c_packets c_bytes < <(nfdump -R "$out/nfcapd" -q -N -o 'fmt:%fl %pkt %byt' | awk '{f+=$1; p+=$2; b+=$3} END {print f, p, b}')
# Ground truth from tshark: IP packets and their IP total lengths.
read -r t_packets t_bytes < <(tshark -r "$out/demo.pcap" -Y 'ip or ipv6' -T fields -e ip.len -e ipv6.plen 2>/dev/null \
    | awk -F'\t' '{n++; if ($1 != "") { split($1, a, ","); b += a[1] } else { split($2, a, ","); b += a[1] + 40 } } END {print n, b}')
printf '%-22s %10s %14s %16s\n' "" flows packets bytes
printf '%-22s %10s %14s %16s\n' "capture (tshark, IP)" "" "$t_packets" "$t_bytes"
printf '%-22s %10s %14s %16s\n' "collector (nfdump)" "$c_flows" "$c_packets" "$c_bytes"
if [[ $t_packets == "$c_packets" && $t_bytes == "$c_bytes" ]]; then
    echo "MATCH: every IP packet and byte of the capture reached the collector."
else
    echo "MISMATCH between the capture and the collector" >&2
    exit 1
fi
