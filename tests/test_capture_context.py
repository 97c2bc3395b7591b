"""Host context in the offline extractor: exact counts per flow (multa_broker/context.py).

One synthetic capture holds a scan, a flood and a brute force, far enough
apart in time and address that each scenario's counts can be written down by
hand. The expectations would change if the definition were wired wrongly:
ports counted per address, transports mixed, expiry off by one at exactly
60 s, the start taken in other roles than Zeek's new_connection handlers see
(those the first packet leaves), or connections that are never emitted left
out of the counts. tests/test_zeek_context.py checks the same against Zeek.
"""

from __future__ import annotations

import struct
from pathlib import Path

from multa_broker.capture import read_connections
from multa_broker.capture import pcapwriter as pw
from multa_broker.capture.pcapwriter import SYN
from multa_broker.flow import Flow, validate
from support.packets import tcp_session

SCANNER, TARGET = "10.0.0.66", "10.0.0.10"
FLOODED = "10.0.0.20"
BRUTE, SSH = "10.0.0.77", "10.0.0.2"
CLIENT, DNS = "10.0.0.5", "10.0.0.53"


def eth(seg) -> bytes:
    return pw.ether(pw.ip(seg))


def syn(t: float, src: str, sport: int, dst: str, dport: int) -> tuple[float, bytes]:
    return (t, eth(pw.tcp(src, sport, dst, dport, SYN)))


def session(t: float, c: str, cport: int, s: str, sport: int) -> list[tuple[float, bytes]]:
    """A short complete TCP connection (8 packets)."""
    return tcp_session(t, c, cport, s, sport)


def dns(flags: int) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01"


def capture() -> list[tuple[float, bytes]]:
    frames: list[tuple[float, bytes]] = []
    # Scan (t=100): one SYN each to TARGET ports 1..4, then port 4 over UDP (another
    # port: 4/udp is not 4/tcp), then port 22 on two other hosts (a new host, no new
    # port after the first), then a full connection to TARGET:80.
    for i, port in enumerate((1, 2, 3, 4)):
        frames.append(syn(100.0 + i * 0.1, SCANNER, 50000 + i, TARGET, port))
    frames.append((100.4, eth(pw.udp(SCANNER, 50004, TARGET, 4, b"probe"))))
    frames.append(syn(100.5, SCANNER, 50005, "10.0.1.1", 22))
    frames.append(syn(100.6, SCANNER, 50006, "10.0.1.2", 22))
    frames += session(100.7, SCANNER, 50007, TARGET, 80)
    # Flood (t=200): SYNs to FLOODED:80 from spoofed sources, one of them twice,
    # and one UDP packet to FLOODED:80 (another endpoint: 80/udp).
    for i, src in enumerate(("172.16.0.1", "172.16.0.2", "172.16.0.1", "172.16.0.3")):
        frames.append(syn(200.0 + i * 0.01, src, 1024 + i, FLOODED, 80))
    frames.append((200.04, eth(pw.udp("172.16.0.4", 1028, FLOODED, 80, b"u" * 10))))
    # Brute force (t=300): four logins to SSH:22 from BRUTE at 300, 310, 320, then
    # exactly 60 s after the first (it has just left the window), then just inside
    # 60 s of the second (it has not).
    for i, t in enumerate((300.0, 310.0, 320.0, 360.0, 369.999)):
        frames += session(t, BRUTE, 40000 + i, SSH, 22)
    # Role flips (t=500). Zeek's new_connection handlers run after the packet that
    # created the connection, so they see the roles that packet left: a query; a
    # reply-first packet from port 53 (flipped while the connection is created); a
    # response sent by the originator as the first packet (the DNS analyzer flips
    # it at that packet); and a response sent by the originator as the second
    # packet, after one too short to parse (flipped later: the start's roles stay).
    frames.append((500.0, eth(pw.udp(CLIENT, 40001, DNS, 53, dns(0x0100)))))
    frames.append((500.01, eth(pw.udp(DNS, 53, CLIENT, 40001, dns(0x8180)))))
    frames.append((501.0, eth(pw.udp(DNS, 53, CLIENT, 40002, dns(0x8180)))))
    frames.append((502.0, eth(pw.udp(CLIENT, 40003, DNS, 53, dns(0x8180)))))
    frames.append((503.0, eth(pw.udp(CLIENT, 40004, DNS, 53, b"short"))))
    frames.append((503.01, eth(pw.udp(CLIENT, 40004, DNS, 53, dns(0x8180)))))
    frames.sort(key=lambda f: f[0])
    return frames


def flows(tmp_path: Path, **kw) -> list[Flow]:
    path = tmp_path / "ctx.pcap"
    path.write_bytes(pw.pcap(capture()))
    out = [r.flow for r in read_connections(path, **kw)]
    for f in out:
        validate(f)
    return out


def by_start(fs: list[Flow]) -> dict[tuple, tuple[int, ...] | None]:
    return {(f.key.proto, f.key.orig_h, f.key.resp_h, f.key.resp_p, round(f.key.ts, 3)): f.ctx for f in fs}


EXPECTED = {
    # (orig_conns, orig_hosts, orig_ports, orig_same, resp_conns, resp_origs)
    ("tcp", SCANNER, TARGET, 1, 100.0): (0, 0, 0, 0, 0, 0),
    ("tcp", SCANNER, TARGET, 2, 100.1): (1, 1, 1, 0, 0, 0),
    ("tcp", SCANNER, TARGET, 3, 100.2): (2, 1, 2, 0, 0, 0),
    ("tcp", SCANNER, TARGET, 4, 100.3): (3, 1, 3, 0, 0, 0),
    ("udp", SCANNER, TARGET, 4, 100.4): (4, 1, 4, 0, 0, 0),
    ("tcp", SCANNER, "10.0.1.1", 22, 100.5): (5, 1, 5, 0, 0, 0),
    ("tcp", SCANNER, "10.0.1.2", 22, 100.6): (6, 2, 6, 0, 0, 0),
    ("tcp", SCANNER, TARGET, 80, 100.7): (7, 3, 6, 0, 0, 0),
    ("tcp", "172.16.0.1", FLOODED, 80, 200.0): (0, 0, 0, 0, 0, 0),
    ("tcp", "172.16.0.2", FLOODED, 80, 200.01): (0, 0, 0, 0, 1, 1),
    ("tcp", "172.16.0.1", FLOODED, 80, 200.02): (1, 1, 1, 1, 2, 2),
    ("tcp", "172.16.0.3", FLOODED, 80, 200.03): (0, 0, 0, 0, 3, 2),
    ("udp", "172.16.0.4", FLOODED, 80, 200.04): (0, 0, 0, 0, 0, 0),
    ("tcp", BRUTE, SSH, 22, 300.0): (0, 0, 0, 0, 0, 0),
    ("tcp", BRUTE, SSH, 22, 310.0): (1, 1, 1, 1, 1, 1),
    ("tcp", BRUTE, SSH, 22, 320.0): (2, 1, 1, 2, 2, 1),
    ("tcp", BRUTE, SSH, 22, 360.0): (2, 1, 1, 2, 2, 1),     # 300.0 left at exactly 60 s
    ("tcp", BRUTE, SSH, 22, 369.999): (3, 1, 1, 3, 3, 1),   # 310.0 is 59.999 s back: still in
    ("udp", CLIENT, DNS, 53, 500.0): (0, 0, 0, 0, 0, 0),
    ("udp", CLIENT, DNS, 53, 501.0): (1, 1, 1, 1, 1, 1),    # flipped at creation: CLIENT's start
    ("udp", DNS, CLIENT, 40003, 502.0): (0, 0, 0, 0, 0, 0),   # flipped at its first packet: DNS's start
    # Flipped at its second packet: the context is the start's, CLIENT's (CLIENT's
    # starts at 500 and 501 to DNS:53; 502 was DNS's).
    ("udp", DNS, CLIENT, 40004, 503.0): (2, 1, 1, 2, 2, 1),
}


def test_scan_flood_brute_force_exact_context(tmp_path):
    got = by_start(flows(tmp_path))
    assert got == EXPECTED


def test_connections_never_emitted_still_count(tmp_path):
    """With min_packets=2 the single-packet probes are not flows, but they are starts."""
    got = by_start(flows(tmp_path, min_packets=2))
    want = {k: v for k, v in EXPECTED.items() if k[-1] in (100.7, 300.0, 310.0, 320.0, 360.0, 369.999, 500.0, 503.0)}
    assert got == want
    assert got[("tcp", SCANNER, TARGET, 80, 100.7)] == (7, 3, 6, 0, 0, 0)


def test_ctx_in_json_lines(tmp_path):
    """``multa flows`` prints Flow.to_json, which carries ctx; it reads back."""
    for f in flows(tmp_path):
        obj = f.to_json()
        assert obj["ctx"] == list(f.ctx)
        assert Flow.from_json(obj).ctx == f.ctx
