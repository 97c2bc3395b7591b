"""Synthetic benchmark trace for bench-overhead.sh.

Interleaved TCP connections (handshake, data, FIN) and DNS-like UDP
exchanges over 60 s; TCP packet counts are log-normal (--mu, --sigma: the
default gives a median of 20 and a mean of about 46 packets), payloads are
filler bytes. Deterministic (seeded).

usage: make-bench-trace.py OUT.pcap CONNECTIONS [--mu M] [--sigma S] [--udp-share F]
"""
import argparse
import random
import struct

import dpkt

ap = argparse.ArgumentParser(description="synthetic benchmark trace")
ap.add_argument("out")
ap.add_argument("connections", type=int)
ap.add_argument("--mu", type=float, default=3.0)
ap.add_argument("--sigma", type=float, default=1.3)
ap.add_argument("--udp-share", type=float, default=0.35)
args = ap.parse_args()
rng = random.Random(1)
out = dpkt.pcap.Writer(open(args.out, "wb"), snaplen=65535)
n_conn = args.connections
events = []  # (ts, seq, bytes)
seq = 0
t0 = 1_700_000_000.0

def eth(ip):
    return bytes(dpkt.ethernet.Ethernet(src=b"\x00\x01\x02\x03\x04\x05", dst=b"\x00\x01\x02\x03\x04\x06", type=dpkt.ethernet.ETH_TYPE_IP, data=ip))

def ip4(src, dst, p, proto):
    ip = dpkt.ip.IP(src=src, dst=dst, p=proto, ttl=64, data=p)
    if proto == 17:
        p.ulen = 8 + len(p.data)
    ip.len = 20 + len(bytes(p))
    return ip

for i in range(n_conn):
    start = t0 + rng.uniform(0, 60)
    cli = struct.pack("!I", 0x0a000000 + rng.randrange(1, 60000))
    srv = struct.pack("!I", 0xc0a80000 + rng.randrange(1, 500))
    sport = rng.randrange(1024, 65535)
    if rng.random() < args.udp_share:
        # DNS-like: query + answer
        q = dpkt.udp.UDP(sport=sport, dport=53, data=b"q" * rng.randrange(30, 60))
        a = dpkt.udp.UDP(sport=53, dport=sport, data=b"a" * rng.randrange(60, 300))
        events.append((start, eth(ip4(cli, srv, q, 17))))
        events.append((start + rng.uniform(0.001, 0.05), eth(ip4(srv, cli, a, 17))))
        continue
    npk = max(4, int(rng.lognormvariate(args.mu, args.sigma)))
    npk = min(npk, 3000)
    t = start
    cseq, sseq = rng.randrange(1 << 31), rng.randrange(1 << 31)
    dport = rng.choice([80, 443, 22, 8080, 993])
    def tcp(fromcli, flags, payload=b""):
        global cseq, sseq
        if fromcli:
            seg = dpkt.tcp.TCP(sport=sport, dport=dport, seq=cseq, ack=sseq, flags=flags, data=payload, win=65535)
            cseq = (cseq + len(payload) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)) % (1 << 32)
            return eth(ip4(cli, srv, seg, 6))
        seg = dpkt.tcp.TCP(sport=dport, dport=sport, seq=sseq, ack=cseq, flags=flags, data=payload, win=65535)
        sseq = (sseq + len(payload) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)) % (1 << 32)
        return eth(ip4(srv, cli, seg, 6))
    A = dpkt.tcp.TH_ACK
    events.append((t, tcp(True, dpkt.tcp.TH_SYN))); t += rng.uniform(0.001, 0.03)
    events.append((t, tcp(False, dpkt.tcp.TH_SYN | A))); t += rng.uniform(0.0001, 0.001)
    events.append((t, tcp(True, A)))
    for k in range(npk - 4):
        t += rng.expovariate(200)
        fromcli = rng.random() < 0.3
        size = rng.choice([0, 100, 500, 1448, 1448, 1448])
        events.append((t, tcp(fromcli, A | (dpkt.tcp.TH_PUSH if size else 0), b"x" * size)))
    t += 0.001
    events.append((t, tcp(True, dpkt.tcp.TH_FIN | A)))
    events.append((t + 0.001, tcp(False, dpkt.tcp.TH_FIN | A)))
    events.append((t + 0.002, tcp(True, A)))

events.sort(key=lambda e: e[0])
for ts, b in events:
    out.writepkt(b, ts)
print(len(events), "packets", n_conn, "connections ->", args.out)
