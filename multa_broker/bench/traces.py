"""The traces ``multa bench zeek`` times: captures one after another, captures
played at once, and a synthetic worst case.

One after another (:func:`concatenate`) keeps each capture's pace. Public and
lab captures are sparse: the 39 benign lab captures hold 1,054 connections in
about 20 minutes, a connection a second, where a sensor sees thousands. Costs
that come per unit of time (a batch published every
``Multa::batch_interval``) then weigh as much as costs per packet. Played at
once (:func:`overlay`), the captures run side by side as the hosts behind a
sensor do, each connection with its own packets and timing; only the load
grows.
"""

from __future__ import annotations

import heapq
import struct
from pathlib import Path

from multa_broker.errors import MultaError

# Gaps within a capture longer than this are shortened to it: public captures
# are often spliced from sessions years apart, and such jumps would only
# measure Zeek's timer expiry.
MAX_GAP_S = 10.0
_VLAN_TAGS = (0x8100, 0x88A8)


def _read_ethernet(path: Path, skip_unusable: bool) -> list[tuple[float, bytes]] | None:
    """The capture's frames, gaps over MAX_GAP_S shortened and starting at 0.

    A capture with another link type or that cannot be read is an error, or
    None with *skip_unusable*.
    """
    from multa_broker.capture.reader import open_capture

    frames: list[tuple[float, bytes]] = []
    prev = None
    t = 0.0
    try:
        for ts, data, _wirelen, linktype in open_capture(path):
            if linktype != 1:
                raise MultaError(f"{path}: link type {linktype}; only Ethernet captures can be "
                                 "joined (--skip-unusable skips the others)")
            if prev is not None:
                t += min(max(ts - prev, 0.0), MAX_GAP_S)
            prev = ts
            frames.append((t, data))
    except MultaError:  # CaptureError too
        if not skip_unusable:
            raise
        return None
    return frames


def _usable(captures: list[Path], skip_unusable: bool) -> tuple[list[list[tuple[float, bytes]]], int]:
    """Each usable capture's frames (see :func:`_read_ethernet`), and how many were skipped."""
    streams = []
    for path in captures:
        mine = _read_ethernet(path, skip_unusable)
        if mine is not None:
            streams.append(mine)
    return streams, len(captures) - len(streams)


def concatenate(captures: list[Path], out: Path, skip_unusable: bool = False) -> tuple[int, int, int]:
    """Write one Ethernet pcap holding every capture back to back, 1 s apart.

    Time only moves forward, and gaps over MAX_GAP_S are shortened to it.
    Returns the captures joined, the packets and the captures skipped.
    """
    from multa_broker.capture.pcapwriter import pcap

    streams, skipped = _usable(captures, skip_unusable)
    frames: list[tuple[float, bytes]] = []
    now = 1_000_000_000.0
    for mine in streams:
        start = now + 1.0
        frames.extend((start + t, data) for t, data in mine)
        now = frames[-1][0] if mine else now
    out.write_bytes(pcap(frames))
    return len(streams), len(frames), skipped


def overlay(captures: list[Path], out: Path, skip_unusable: bool = False) -> tuple[int, int, int]:
    """Write one Ethernet pcap that plays every capture at once, from the same start.

    Capture k's IPv4 addresses get k's low byte XORed into their second
    byte and its high byte into their third (IPv6: k into their second
    16-bit group), checksums updated, so that captures recorded with the
    same hosts and ports do not merge into one connection. Gaps over
    MAX_GAP_S are shortened as in :func:`concatenate`. Returns the captures
    joined, the packets and the captures skipped.
    """
    from multa_broker.capture.pcapwriter import pcap

    if len(captures) > 0xFFFF:
        raise MultaError(f"--overlay: {len(captures)} captures; at most 65535 can be played at once")
    streams, skipped = _usable(captures, skip_unusable)
    start = 1_000_000_000.0
    moved = [[(start + t, data if k == 0 else move_addresses(data, k)) for t, data in mine]
             for k, mine in enumerate(streams)]
    frames = list(heapq.merge(*moved, key=lambda f: f[0]))
    out.write_bytes(pcap(frames))
    return len(streams), len(frames), skipped


def _csum_update(csum: int, old: int, new: int) -> int:
    """A one's-complement checksum after a 16-bit word went from *old* to *new* (RFC 1624, eq. 3)."""
    s = (~csum & 0xFFFF) + (~old & 0xFFFF) + new
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _patch_word(pkt: bytearray, at: int, new: int, csums: list[int]) -> None:
    """Set the 16-bit word at *at*, keeping the checksums at offsets *csums* right."""
    old = struct.unpack_from("!H", pkt, at)[0]
    struct.pack_into("!H", pkt, at, new)
    for c in csums:
        struct.pack_into("!H", pkt, c, _csum_update(struct.unpack_from("!H", pkt, c)[0], old, new))


def move_addresses(frame: bytes, k: int) -> bytes:
    """*frame* with its IP addresses moved to capture *k*'s own range (see :func:`overlay`).

    Frames that are not IP, or too short to hold the headers, come back as
    they are; a transport checksum is updated only where the segment's
    header is in the frame (the first fragment) and, for UDP over IPv4, the
    checksum is in use.
    """
    pkt = bytearray(frame)
    off = 12
    while len(pkt) >= off + 2 and struct.unpack_from("!H", pkt, off)[0] in _VLAN_TAGS:
        off += 4
    if len(pkt) < off + 2:
        return frame
    ethertype = struct.unpack_from("!H", pkt, off)[0]
    ip = off + 2
    if ethertype == 0x0800 and len(pkt) >= ip + 20:
        ihl = (pkt[ip] & 0x0F) * 4
        proto = pkt[ip + 9]
        first = struct.unpack_from("!H", pkt, ip + 6)[0] & 0x1FFF == 0
        l4 = ip + ihl
        csums = [ip + 10]
        if first and proto == 6 and len(pkt) >= l4 + 18:
            csums.append(l4 + 16)
        elif first and proto == 17 and len(pkt) >= l4 + 8 and struct.unpack_from("!H", pkt, l4 + 6)[0]:
            csums.append(l4 + 6)
        # The second byte, and the third for k > 255: addresses keep their
        # first byte, so none becomes multicast or loopback.
        for addr in (ip + 12, ip + 16):
            _patch_word(pkt, addr, struct.unpack_from("!H", pkt, addr)[0] ^ (k & 0xFF), csums)
            _patch_word(pkt, addr + 2, struct.unpack_from("!H", pkt, addr + 2)[0] ^ ((k >> 8) << 8), csums)
    elif ethertype == 0x86DD and len(pkt) >= ip + 40:
        nxt = pkt[ip + 6]
        l4 = ip + 40
        csums = []
        if nxt == 6 and len(pkt) >= l4 + 18:
            csums.append(l4 + 16)
        elif nxt == 17 and len(pkt) >= l4 + 8:
            csums.append(l4 + 6)
        elif nxt == 58 and len(pkt) >= l4 + 4:
            csums.append(l4 + 2)
        for addr in (ip + 8, ip + 24):
            _patch_word(pkt, addr + 2, struct.unpack_from("!H", pkt, addr + 2)[0] ^ k, csums)
    return bytes(pkt)


def empty_pcap() -> bytes:
    from multa_broker.capture.pcapwriter import pcap

    return pcap([])


def tiny_trace(n: int, out: Path) -> int:
    """N connections of a SYN and a RST each: the most connections per packet Zeek can see."""
    from multa_broker.capture import pcapwriter as w

    frames = []
    t = 1_700_000_000.0
    for i in range(n):
        src = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        sport = 1024 + i % 60000
        frames.append((t, w.ether(w.ip(w.tcp(src, sport, "192.0.2.1", 80, w.SYN)))))
        frames.append((t + 0.0001, w.ether(w.ip(w.tcp("192.0.2.1", 80, src, sport, w.RST | w.ACK, ack=1001)))))
        t += 0.0005
    out.write_bytes(w.pcap(frames))
    return 2 * n
