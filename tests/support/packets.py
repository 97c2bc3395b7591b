"""Hand-made packets for extractor tests: Ethernet frames from ``pcapwriter``'s pieces."""

from __future__ import annotations

from multa_broker.capture import pcapwriter as pw
from multa_broker.capture.pcapwriter import ACK, FIN, PSH, SYN

#: Offsets (s) of the eight packets of :func:`tcp_session`, 1 ms apart.
QUICK = (0.0, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007)


def eth(seg: bytes, **kw) -> bytes:
    return pw.ether(pw.ip(seg), **kw)


def tcp_session(t0: float, c: str, cport: int, s: str, sport: int, *, offsets: tuple[float, ...] = QUICK,
                request: int = 30, reply: int = 20) -> list[tuple[float, bytes]]:
    """A complete TCP connection in 8 packets: handshake, one request and reply, FIN both ways."""
    t = [t0 + o for o in offsets]
    cseq, sseq = 1000, 5000
    return [
        (t[0], eth(pw.tcp(c, cport, s, sport, SYN, seq=cseq))),
        (t[1], eth(pw.tcp(s, sport, c, cport, SYN | ACK, seq=sseq, ack=cseq + 1))),
        (t[2], eth(pw.tcp(c, cport, s, sport, ACK, seq=cseq + 1, ack=sseq + 1))),
        (t[3], eth(pw.tcp(c, cport, s, sport, ACK | PSH, b"x" * request, seq=cseq + 1, ack=sseq + 1))),
        (t[4], eth(pw.tcp(s, sport, c, cport, ACK | PSH, b"y" * reply, seq=sseq + 1, ack=cseq + 1 + request))),
        (t[5], eth(pw.tcp(c, cport, s, sport, FIN | ACK, seq=cseq + 1 + request, ack=sseq + 1 + reply))),
        (t[6], eth(pw.tcp(s, sport, c, cport, FIN | ACK, seq=sseq + 1 + reply, ack=cseq + 2 + request))),
        (t[7], eth(pw.tcp(c, cport, s, sport, ACK, seq=cseq + 2 + request, ack=sseq + 2 + reply))),
    ]
