#!/usr/bin/env python3
"""Real TCP stacks across an emulated path, captured at a tap, for tapflow's KPI test.

    tcp_paths.py run OUTDIR      (as root) builds client, tap and server namespaces joined
                                 by veth pairs, runs the scenarios, writes OUTDIR/tap.pcap
                                 and OUTDIR/truth.json, and removes the namespaces.

The kernel has no netem, so the tap namespace runs a user-space relay: raw AF_PACKET
sockets on its two veths (checksum and segmentation offloads off everywhere, so every
frame is one real segment with a real checksum), every frame stamped by the kernel on
arrival and written to the capture there (the tap point), then held for the delay of the
side it goes to and sent on, unless it is dropped (a share of the bulk transfer's data
frames, and every SYN to the unanswered port, both after the tap point).

Truth written for the test: the delays of the two sides (the handshake RTTs seen at the
tap), each scenario's ports and expected outcome, the sending kernels' retransmission
counters (TCP_INFO's tcpi_total_retrans, which `ss -ti` prints as retrans:x/TOTAL, per
socket of the bulk transfer; `nstat` TcpRetransSegs per namespace).

Modes `relay`, `server` and `client` are what `run` starts inside the namespaces.
"""

import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque

CLIENT_IP = "10.77.0.1"
SERVER_IP = "10.77.0.2"
# Handshake RTTs at the tap: frames to the server wait SERVER_DELAY, frames to the client
# CLIENT_DELAY (the other leg of each round trip is a veth, microseconds).
SERVER_DELAY = 0.012
CLIENT_DELAY = 0.030
LOSS = 0.03
SEED = 16

BULK_PORT, RESET_PORT, MIDSTREAM_PORT, REFUSED_PORT, UNANSWERED_PORT = 5001, 5002, 5003, 5004, 5999
# The client's source port per scenario, so the test finds each connection.
CLIENT_PORTS = {
    "bulk": 41001,
    "refused": 41002,
    "reset": 41003,
    "unanswered": 41004,
    "midstream": 41005,
}
BULK_BYTES = 400_000
# Frames of the midstream connection with payload that pass before the capture starts.
MIDSTREAM_SKIP = 4

ETH_P_ALL = 3
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
TCP_INFO_TOTAL_RETRANS = 100  # byte offset of tcpi_total_retrans in struct tcp_info
TCP_INFO_UNACKED = 24  # tcpi_unacked


# ------------------------------------------------------------------------------------
# relay (tap namespace)
# ------------------------------------------------------------------------------------

def tcp_fields(frame):
    """(sport, dport, flags, payload_len) of an IPv4/TCP frame, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    tcp = 14 + ihl
    if len(frame) < tcp + 20:
        return None
    sport, dport = struct.unpack_from("!HH", frame, tcp)
    doff = (frame[tcp + 12] >> 4) * 4
    return sport, dport, frame[tcp + 13], total - ihl - doff


class Pcap:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

    def write(self, stamp_ns, frame):
        sec, ns = divmod(stamp_ns, 1_000_000_000)
        self.f.write(struct.pack("<IIII", sec, ns // 1000, len(frame), len(frame)))
        self.f.write(frame)

    def close(self):
        self.f.close()


def open_port(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((ifname, 0))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setblocking(False)
    return s


def relay(args):
    client_side, server_side, pcap_path = args
    pcap = Pcap(pcap_path)
    ports = {"client": open_port(client_side), "server": open_port(server_side)}
    # Frames from the client go to the server side after SERVER_DELAY, and back.
    route = {
        ports["client"]: (ports["server"], SERVER_DELAY),
        ports["server"]: (ports["client"], CLIENT_DELAY),
    }
    queues = {ports["client"]: deque(), ports["server"]: deque()}
    # Real-time priority: on a busy machine a normal process may wait milliseconds for a
    # CPU, and every such wait would lengthen the emulated paths.
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (AttributeError, PermissionError, OSError):
        pass
    rng = random.Random(SEED)
    midstream_seen = 0
    stats = {"frames": 0, "captured": 0, "dropped_data": 0, "dropped_syn": 0}
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    print("ready", flush=True)
    while running[0]:
        now = time.time()
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - now) if due else 0.05
        try:
            readable, _, _ = select.select(list(route), [], [], timeout)
        except InterruptedError:
            continue
        for sock in readable:
            out, delay = route[sock]
            while True:
                try:
                    frame, anc, _, addr = sock.recvmsg(65535, 64)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                stamp_ns = time.time_ns()
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", data[:16])
                        stamp_ns = sec * 1_000_000_000 + nsec
                stats["frames"] += 1
                tcp = tcp_fields(frame)
                capture = True
                drop = False
                if tcp:
                    sport, dport, flags, payload = tcp
                    if MIDSTREAM_PORT in (sport, dport) and midstream_seen < MIDSTREAM_SKIP:
                        capture = False
                        if payload > 0:
                            midstream_seen += 1
                    if dport == UNANSWERED_PORT and flags & 0x12 == 0x02:
                        drop = True
                        stats["dropped_syn"] += 1
                    if BULK_PORT in (sport, dport) and payload > 0 and rng.random() < LOSS:
                        drop = True
                        stats["dropped_data"] += 1
                if capture:
                    pcap.write(stamp_ns, frame)
                    stats["captured"] += 1
                if not drop:
                    queues[out].append((stamp_ns / 1e9 + delay, frame))
        now = time.time()
        for out, queue in queues.items():
            while queue and queue[0][0] <= now:
                out.send(queue.popleft()[1])
    pcap.close()
    print(json.dumps(stats), flush=True)


# ------------------------------------------------------------------------------------
# server and client (their namespaces)
# ------------------------------------------------------------------------------------

def tcp_info(sock, offset):
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), offset)[0]


def wait_all_acked(sock):
    deadline = time.time() + 20
    while tcp_info(sock, TCP_INFO_UNACKED) and time.time() < deadline:
        time.sleep(0.01)


def recv_exactly(sock, n):
    got = 0
    while got < n:
        chunk = sock.recv(min(65536, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def recv_to_eof(sock):
    total = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return total
        total += len(chunk)


def listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((SERVER_IP, port))
    s.listen(8)
    return s


def server(args):
    (results_path,) = args
    results = open(results_path, "w")
    lock = threading.Lock()

    def report(**fields):
        with lock:
            results.write(json.dumps(fields) + "\n")
            results.flush()

    def bulk(conn):
        received = recv_to_eof(conn)
        conn.sendall(os.urandom(BULK_BYTES))
        wait_all_acked(conn)
        report(scenario="bulk", received=received, total_retrans=tcp_info(conn, TCP_INFO_TOTAL_RETRANS))
        conn.close()

    def reset(conn):
        recv_exactly(conn, 100)
        conn.sendall(b"r" * 1000)
        wait_all_acked(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def midstream(conn):
        while True:
            data = conn.recv(100)
            if not data:
                break
            conn.sendall(data)
        conn.close()

    handlers = {}
    for port, handler in [(BULK_PORT, bulk), (RESET_PORT, reset), (MIDSTREAM_PORT, midstream)]:
        handlers[listener(port)] = handler
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select(list(handlers), [], [])
        for s in readable:
            conn, _ = s.accept()
            threading.Thread(target=handlers[s], args=(conn,), daemon=True).start()


def client_socket(scenario):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((CLIENT_IP, CLIENT_PORTS[scenario]))
    return s


def client(_args):
    out = {}
    # A bulk transfer each way across the lossy path, closed by FIN both ways.
    s = client_socket("bulk")
    s.connect((SERVER_IP, BULK_PORT))
    s.sendall(os.urandom(BULK_BYTES))
    s.shutdown(socket.SHUT_WR)
    received = recv_to_eof(s)
    wait_all_acked(s)
    out["bulk"] = {"received": received, "total_retrans": tcp_info(s, TCP_INFO_TOTAL_RETRANS)}
    s.close()
    time.sleep(0.2)
    # Nobody listens: the server's kernel answers the SYN with a RST.
    s = client_socket("refused")
    try:
        s.connect((SERVER_IP, REFUSED_PORT))
        out["refused"] = "connected"
    except ConnectionRefusedError:
        out["refused"] = "refused"
    s.close()
    # The server aborts an established connection (SO_LINGER 0: RST).
    s = client_socket("reset")
    s.connect((SERVER_IP, RESET_PORT))
    s.sendall(b"q" * 100)
    got = recv_exactly(s, 1000)
    try:
        s.recv(100)
        out["reset"] = {"received": got, "reset": False}
    except ConnectionResetError:
        out["reset"] = {"received": got, "reset": True}
    s.close()
    # The relay drops every SYN to this port: the kernel retransmits it, then gives up.
    s = client_socket("unanswered")
    s.settimeout(1.5)
    try:
        s.connect((SERVER_IP, UNANSWERED_PORT))
        out["unanswered"] = "connected"
    except (socket.timeout, TimeoutError):
        out["unanswered"] = "timed out"
    s.close()
    # The capture starts after this connection's handshake and first exchanges.
    s = client_socket("midstream")
    s.connect((SERVER_IP, MIDSTREAM_PORT))
    for i in range(10):
        s.sendall(bytes([i]) * 100)
        recv_exactly(s, 100)
    s.close()
    time.sleep(0.3)
    print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------
# orchestration
# ------------------------------------------------------------------------------------

def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def nstat_retrans(ns):
    out = sh("ip", "netns", "exec", ns, "nstat", "-az", "TcpRetransSegs").stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "TcpRetransSegs":
            return int(parts[1])
    raise RuntimeError(f"no TcpRetransSegs in nstat output: {out!r}")


def run(args):
    (outdir,) = args
    tag = f"{os.getpid() % 100000}"
    ns = {"client": f"tfkc{tag}", "tap": f"tfkt{tag}", "server": f"tfks{tag}"}
    me = os.path.abspath(__file__)
    procs = []
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
        links = [("client", f"c0{tag}", f"t0{tag}"), ("server", f"s0{tag}", f"t1{tag}")]
        for side, end, tap_end in links:
            sh("ip", "link", "add", end, "netns", ns[side], "type", "veth", "peer", "name", tap_end, "netns", ns["tap"])
        addresses = {"client": CLIENT_IP, "server": SERVER_IP}
        for side, end, tap_end in links:
            sh("ip", "-n", ns[side], "addr", "add", f"{addresses[side]}/24", "dev", end)
            for namespace, dev in [(ns[side], end), (ns["tap"], tap_end)]:
                sh("ip", "netns", "exec", namespace, "ethtool", "-K", dev,
                   "rx", "off", "tx", "off", "tso", "off", "gso", "off", "gro", "off", check=False)
                offloads = sh("ip", "netns", "exec", namespace, "ethtool", "-k", dev).stdout
                for feature in ["tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload"]:
                    if f"{feature}: on" in offloads:
                        raise RuntimeError(f"{dev}: {feature} is still on")
                sh("ip", "-n", namespace, "link", "set", dev, "up")
            sh("ip", "-n", ns[side], "link", "set", "lo", "up")
        for name in ns.values():
            sh("ip", "-n", name, "link", "set", "lo", "up")

        def start(side, *mode_args):
            p = subprocess.Popen(
                ["ip", "netns", "exec", ns[side], sys.executable, me, *mode_args],
                stdout=subprocess.PIPE, text=True)
            procs.append(p)
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"{mode_args[0]} did not start: {line!r}")
            return p

        pcap = os.path.join(outdir, "tap.pcap")
        relay_proc = start("tap", "relay", f"t0{tag}", f"t1{tag}", pcap)
        server_results = os.path.join(outdir, "server.jsonl")
        start("server", "server", server_results)
        before = {side: nstat_retrans(ns[side]) for side in ("client", "server")}
        out = sh("ip", "netns", "exec", ns["client"], sys.executable, me, "client").stdout
        client_results = json.loads(out.strip().splitlines()[-1])
        time.sleep(0.5)
        after = {side: nstat_retrans(ns[side]) for side in ("client", "server")}
        relay_proc.send_signal(signal.SIGTERM)
        relay_stats = json.loads(relay_proc.communicate(timeout=10)[0].strip().splitlines()[-1])
        server_bulk = [json.loads(l) for l in open(server_results) if '"bulk"' in l]
        truth = {
            "client_ip": CLIENT_IP,
            "server_ip": SERVER_IP,
            "rtt_server_us": round(SERVER_DELAY * 1e6),
            "rtt_client_us": round(CLIENT_DELAY * 1e6),
            "client_ports": CLIENT_PORTS,
            "server_ports": {
                "bulk": BULK_PORT, "refused": REFUSED_PORT, "reset": RESET_PORT,
                "unanswered": UNANSWERED_PORT, "midstream": MIDSTREAM_PORT,
            },
            "bulk_bytes": BULK_BYTES,
            "client": client_results,
            "server_bulk": server_bulk[0] if server_bulk else None,
            "nstat_retrans": {side: after[side] - before[side] for side in after},
            "relay": relay_stats,
        }
        with open(os.path.join(outdir, "truth.json"), "w") as f:
            json.dump(truth, f, indent=1)
        print(json.dumps(truth))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for name in ns.values():
            sh("ip", "netns", "del", name, check=False)


if __name__ == "__main__":
    modes = {"run": run, "relay": relay, "server": server, "client": client}
    modes[sys.argv[1]](sys.argv[2:])
