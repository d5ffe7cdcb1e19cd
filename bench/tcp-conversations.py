#!/usr/bin/env python3
"""Writes a pcap of TCP conversations for the KPI benchmark (BENCHMARKS.md, "Transport
KPIs"): CONVERSATIONS client/server pairs, each round one 60-byte data segment from the
client (6 bytes of payload) and one 60-byte ACK back, round-robin over the conversations,
so every flow (2 x CONVERSATIONS, both directions) stays live in the cache while the file
loops. Sequence numbers advance each round, as in a real transfer.

    bench/tcp-conversations.py OUT.pcap [CONVERSATIONS] [ROUNDS]
"""

import struct
import sys


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(src, dst, sport, dport, seq, ack, flags, payload):
    tcp_len = 20 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, tcp_len)
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    # Ethernet pads to the 60-byte minimum (a 64-byte frame with its FCS).
    return (eth + ip + tcp).ljust(60, b"\0")


def main():
    path = sys.argv[1]
    conversations = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    payload = b"tapflw"
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        t = 1_700_000_000 * 1_000_000
        for r in range(rounds):
            for c in range(conversations):
                client = bytes([10, 1 + (c >> 16), (c >> 8) & 0xFF, c & 0xFF])
                server = bytes([172, 16, 0, 1 + c % 200])
                sport = 10_000 + c % 50_000
                seq = 1_000 + r * len(payload)
                for f in (
                    frame(client, server, sport, 443, seq, 5_000, 0x18, payload),
                    frame(server, client, 443, sport, 5_000, seq + len(payload), 0x10, b""),
                ):
                    out.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(f), len(f)))
                    out.write(f)
                    t += 1
    print(f"wrote {2 * conversations * rounds} packets, {2 * conversations} flows to {path}")


if __name__ == "__main__":
    main()
