#!/usr/bin/env python3
"""Writes N [[policy]] tables shaped like an operator's (host and subnet sources in 10/8,
destination subnets and hosts in 172.17-31.x, TCP or UDP service ports and ranges, a
fifth of them ignore rules), then a catch-all metering rule, for `tapflow bench
--config`. None of the N selects the bench's synthetic traffic (10.x -> 172.16.0.1:5201
UDP), so every new flow is classified through every tuple and lands on the catch-all:
the classifier's worst case, and every record is marked. Deterministic for a seed.

    bench/policy-rules.py 1000 > /tmp/rules-1000.toml
"""
import random
import sys

n = int(sys.argv[1])
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
out = []
for i in range(n):
    lines = ['[[policy]]', f'name = "rule-{i}"']
    if rng.randrange(4):
        length = rng.choice([16, 24, 32])
        addr = [10, rng.randrange(256), rng.randrange(256), rng.randrange(256)]
        mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
        value = int.from_bytes(bytes(addr), "big") & mask
        lines.append(f'src = ["{".".join(str(b) for b in value.to_bytes(4, "big"))}/{length}"]')
    length = rng.choice([20, 24, 28, 32])
    addr = [172, 17 + rng.randrange(15), rng.randrange(256), rng.randrange(256)]
    mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
    value = int.from_bytes(bytes(addr), "big") & mask
    lines.append(f'dst = ["{".".join(str(b) for b in value.to_bytes(4, "big"))}/{length}"]')
    proto = rng.choice([None, "udp", "tcp", "tcp", "tcp", "tcp"])
    if proto:
        lines.append(f'proto = ["{proto}"]')
        kind = rng.randrange(4)
        if kind == 0:
            lo = 1024 + rng.randrange(60000)
            lines.append(f'dst_port = ["{lo}-{lo + 100}"]')
        elif kind > 1:
            lines.append(f'dst_port = [{rng.choice([22, 53, 80, 123, 443, 873, 3306, 5432, 8080, 8443])}]')
    if rng.randrange(5) == 0:
        lines.append('action = "ignore"')
    else:
        lines.append(f'tag = {i}')
    out.append("\n".join(lines))
out.append('[[policy]]\nname = "rest"\ntag = 1000000')
print("\n\n".join(out))
