"""Build small captures from scratch: packets with correct checksums, written as pcap bytes.

Meant for tests and examples, where a hand-made capture makes the expected
flow obvious. Addresses are strings ("10.0.0.1", "2001:db8::1").
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Iterable

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
ETH_SRC = b"\x02\x00\x00\x00\x00\x01"
ETH_DST = b"\x02\x00\x00\x00\x00\x02"


def _csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _addr(a: str) -> bytes:
    return ipaddress.ip_address(a).packed


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, payload: bytes = b"", seq: int = 1000,
        ack: int = 0, window: int = 8192, bad_checksum: bool = False) -> tuple[int, bytes, bytes, bytes]:
    """A TCP segment (protocol number, segment bytes, src, dst) for :func:`ip`."""
    s, d = _addr(src), _addr(dst)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0, 0)
    seg = hdr + payload
    c = _csum(_pseudo(s, d, 6, len(seg)) + seg) ^ (0x5555 if bad_checksum else 0)
    return 6, seg[:16] + struct.pack("!H", c) + seg[18:], s, d


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"",
        bad_checksum: bool = False) -> tuple[int, bytes, bytes, bytes]:
    s, d = _addr(src), _addr(dst)
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = _csum(_pseudo(s, d, 17, len(seg)) + seg) or 0xFFFF
    if bad_checksum:
        c ^= 0x5555
    return 17, seg[:6] + struct.pack("!H", c) + seg[8:], s, d


def icmp(src: str, dst: str, itype: int, code: int = 0, payload: bytes = b"\0" * 4,
         bad_checksum: bool = False) -> tuple[int, bytes, bytes, bytes]:
    s, d = _addr(src), _addr(dst)
    msg = struct.pack("!BBH", itype, code, 0) + payload
    if len(s) == 4:
        proto, c = 1, _csum(msg)
    else:
        proto, c = 58, _csum(_pseudo(s, d, 58, len(msg)) + msg)
    if bad_checksum:
        c ^= 0x5555
    return proto, msg[:2] + struct.pack("!H", c) + msg[4:], s, d


def ip(segment: tuple[int, bytes, bytes, bytes], ident: int = 1, ttl: int = 64) -> bytes:
    """Wrap a segment from :func:`tcp`/:func:`udp`/:func:`icmp` in an IPv4 or IPv6 header."""
    proto, body, s, d = segment
    if len(s) == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ident, 0, ttl, proto, 0, s, d)
        return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + body
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), proto, ttl, s, d) + body


def ipv4_fragments(segment: tuple[int, bytes, bytes, bytes], chunk: int, ident: int = 7) -> list[bytes]:
    """Split an IPv4 datagram's payload into fragments of ``chunk`` bytes (a multiple of 8)."""
    proto, body, s, d = segment
    out = []
    for off in range(0, len(body), chunk):
        part = body[off:off + chunk]
        more = 0x2000 if off + chunk < len(body) else 0
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(part), ident, more | (off >> 3), 64, proto, 0, s, d)
        out.append(hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + part)
    return out


def ipv4_in(outer_src: str, outer_dst: str, inner: bytes, proto: int = 4) -> bytes:
    """An IPv4 packet carrying ``inner`` as protocol ``proto`` (4 IP-in-IP, 41 IPv6, 47 GRE)."""
    s, d = _addr(outer_src), _addr(outer_dst)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(inner), 9, 0, 64, proto, 0, s, d)
    return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + inner


def ether(packet: bytes, vlans: Iterable[int] = (), ethertype: int | None = None) -> bytes:
    """An Ethernet frame around an IP packet, with optional 802.1Q tags (outermost first)."""
    et = ethertype if ethertype is not None else (0x86DD if packet[0] >> 4 == 6 else 0x0800)
    tags = b"".join(struct.pack("!HH", 0x8100, v) for v in vlans)
    return ETH_DST + ETH_SRC + tags + struct.pack("!H", et) + packet


def pcap(frames: Iterable[tuple[float, bytes]], linktype: int = 1, nano: bool = False,
         wirelens: dict[int, int] | None = None) -> bytes:
    """Capture bytes (little-endian pcap) of ``(timestamp, frame)`` pairs.

    ``wirelens`` maps a frame's index to a wire length larger than its bytes
    (a frame cut short by the snap length).
    """
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for i, (ts, frame) in enumerate(frames):
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        wire = (wirelens or {}).get(i, len(frame))
        out.append(struct.pack("<IIII", sec, frac, len(frame), wire) + frame)
    return b"".join(out)


def pcapng(frames: Iterable[tuple[int, float, bytes]], interfaces: Iterable[tuple[int, int]] = ((1, 6),)) -> bytes:
    """Capture bytes (little-endian pcapng) of ``(interface, timestamp, frame)`` triples.

    ``interfaces`` lists ``(linktype, tsresol)`` per interface, tsresol being
    the power of ten of the timestamp unit (6: microseconds, 9: nanoseconds).
    """
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    ifaces = list(interfaces)
    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for lt, res in ifaces:
        opts = struct.pack("<HHB3x", 9, 1, res) + struct.pack("<HH", 0, 0)
        out.append(block(1, struct.pack("<HHI", lt, 0, 262144) + opts))
    for ifid, ts, frame in frames:
        units = 10 ** ifaces[ifid][1]
        t = round(ts * units)
        out.append(block(6, struct.pack("<IIIII", ifid, t >> 32, t & 0xFFFFFFFF, len(frame), len(frame)) + frame))
    return b"".join(out)
