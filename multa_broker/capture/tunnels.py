"""Tunnels: IP-in-IP, GRE (with ERSPAN, PPTP and Aruba), VXLAN, Geneve, Teredo, AYIYA, GTPv1.

An inner packet is analyzed as a packet of its own (decode.py) one tunnel
level deeper, up to Zeek's ``Tunnel::max_depth``; the outer UDP connection of
a UDP tunnel stays a connection of its own (transport.py). The UDP tunnels run
on that outer connection ``c``: a protocol violation disables that
decapsulator for the rest of the connection, as
packet_analysis::Analyzer::AnalyzerViolated does in Zeek.

Functions take the :class:`~multa_broker.capture.extractor.FlowExtractor`
whose state they change as ``ex``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

# decode, transport and tunnels call one another: imported as modules, so any can load first.
from multa_broker.capture import decode
from multa_broker.capture.sessions import Conn

if TYPE_CHECKING:
    from multa_broker.capture.extractor import FlowExtractor

TUNNEL_MAX_DEPTH = 4

# UDP ports whose connections Zeek hands to a tunnel decapsulator.
VXLAN_PORT, GENEVE_PORT, TEREDO_PORT, AYIYA_PORT, GRE_UDP_PORT = 4789, 6081, 3544, 5072, 4754
GTP_PORTS = (2152, 2123)
# Per-connection "analyzer violated" bits of those decapsulators.
_V_VXLAN, _V_GENEVE, _V_TEREDO, _V_AYIYA = 1, 2, 4, 8

_PORTS = struct.Struct("!HH").unpack_from


def teredo_inner(data: bytes, p: int, end: int) -> int:
    """Offset of the IPv6 packet after Teredo's optional headers, or -1 (TeredoEncapsulation::DoParse)."""
    seen_origin = seen_auth = False
    while True:
        if end - p < 2:
            return -1
        tag = data[p] << 8 | data[p + 1]
        if tag == 0:
            if seen_origin or end - p < 8:
                return -1
            seen_origin = True
            p += 8
        elif tag == 1:
            if seen_origin or seen_auth or end - p < 4:
                return -1
            tot = 4 + data[p + 2] + data[p + 3] + 9
            if end - p < tot:
                return -1
            seen_auth = True
            p += tot
        elif tag >> 12 == 6:
            return p if end - p >= 40 else -1
        else:
            return -1


def teredo_detect(data: bytes, p: int, end: int) -> bool:
    """TeredoAnalyzer::DetectProtocol, including its DPD pattern."""
    n = end - p
    b0, b1 = data[p], data[p + 1]
    if n < 40 or (b0 >> 4 != 6 and (b0 != 0 or b1 not in (0, 1))):
        return False
    if 0x60 <= b0 <= 0x6F and (data[p + 8:p + 12] == b"\x20\x01\x00\x00"
                               or data[p + 24:p + 28] == b"\x20\x01\x00\x00"):
        # The DPD pattern /^[\x60-\x6f].{7}\x20\x01\x00\x00.{28}|[\x60-\x6f].{23}\x20\x01\x00\x00.{12}/
        # (a Teredo 2001:0::/32 source or destination), matched as a prefix.
        return True
    val = b1
    if val == 1:
        skip = 13 + data[p + 2] + data[p + 3]
        if n < skip:
            return False
        p += skip
        n -= skip
        if n < 40:
            return False
        val = data[p] << 8 | data[p + 1]
    if val == 0:
        if n < 8:
            return False
        p += 8
        n -= 8
        return n >= 40 and data[p] >> 4 == 6
    return False


def ip_in_ip(ex: FlowExtractor, data: bytes, poff: int, caprem: int, ts: float, depth: int, proto: int) -> None:
    # IP-in-IP: the inner packet must fill the outer payload exactly (IP::ParsePacket).
    if depth + 1 > TUNNEL_MAX_DEPTH or caprem < 20:
        return
    inner = data[poff:poff + caprem]
    if not inner_ip_exact(inner, 6 if proto == 41 else 4):
        return
    inner_packet(ex, inner, ts, depth, ip=True)


def inner_packet(ex: FlowExtractor, inner: bytes, ts: float, depth: int, ip: bool, linktype: int = 1) -> None:
    # An IP-in-IP or GRE payload becomes a packet of its own, captured whole.
    saved = ex.truncated
    ex.truncated = False
    try:
        if ip:
            decode.ip(ex, inner, 0, len(inner), ts, depth + 1)
        elif linktype == 105:
            decode.ieee80211(ex, inner, 0, len(inner), ts, depth + 1)
        else:
            decode.ether(ex, inner, 0, len(inner), ts, depth + 1)
    finally:
        ex.truncated = saved


def inner_ip_exact(inner: bytes, version: int) -> bool:
    if len(inner) < (40 if version == 6 else 20) or inner[0] >> 4 != version:
        return False
    if version == 4:
        return (inner[2] << 8 | inner[3]) == len(inner)
    return (inner[4] << 8 | inner[5]) + 40 == len(inner)


def gre(ex: FlowExtractor, data: bytes, poff: int, caprem: int, ts: float, depth: int) -> None:
    if depth + 1 > TUNNEL_MAX_DEPTH or caprem < 4:
        return
    flags, ptype = _PORTS(data, poff)
    ver = flags & 7
    glen = 4 + (4 if flags & 0x8000 else 0) + (4 if flags & 0x2000 else 0) \
        + (4 if flags & 0x1000 else 0) + (4 if flags & 0x0080 else 0)
    if flags & 0x4000 or flags & 0x0078:
        return
    end = poff + caprem
    if ver == 1:
        if ptype != 0x880B or caprem < glen + 4:
            return
        pproto = data[poff + glen + 2] << 8 | data[poff + glen + 3]
        if pproto not in (0x0021, 0x0057):
            return
        inner = data[poff + glen + 4:end]
        if inner_ip_exact(inner, 4 if pproto == 0x0021 else 6):
            inner_packet(ex, inner, ts, depth, ip=True)
        return
    if ver != 0:
        return
    if ptype == 0x6558:  # transparent Ethernet bridging
        if caprem > glen + 14:
            inner_packet(ex, data[poff + glen:end], ts, depth, ip=False)
    elif ptype == 0x88BE:  # ERSPAN type I/II
        if caprem <= glen + 14:
            return
        elen = 8 if flags & 0x1000 else 0
        if caprem < glen + 14 + elen:
            return
        inner_packet(ex, data[poff + glen + elen:end], ts, depth, ip=False)
    elif ptype == 0x22EB:  # ERSPAN type III
        if caprem <= glen + 14 + 12:
            return
        elen = 12
        if data[poff + glen + 11] & 1:
            if caprem <= glen + 12 + 8 + 14:
                return
            elen += 8
        inner_packet(ex, data[poff + glen + elen:end], ts, depth, ip=False)
    elif ptype in (0x0800, 0x86DD):
        if caprem < glen:
            return
        inner_packet(ex, data[poff + glen:end], ts, depth, ip=True)
    elif ((ptype & 0x8200) == 0x8200 and not ptype & 0x0F) or \
            ((ptype & 0x8300) == 0x8300 and not ptype & 0x0F and ptype <= 0x8370) or ptype == 0x9000:
        # Aruba: 802.11 frames inside GRE.
        if caprem > glen:
            inner_packet(ex, data[poff + glen:end], ts, depth, ip=False, linktype=105)

def vxlan(ex: FlowExtractor, c: Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
    if c.viol & _V_VXLAN:
        return
    if end - pay < 8 or not data[pay] & 0x08:
        c.viol |= _V_VXLAN
        return
    if end - pay > 8:
        decode.ether(ex, data[:end], pay + 8, wirelen - (len(data) - end), ts, depth + 1)


def geneve(ex: FlowExtractor, c: Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
    if c.viol & _V_GENEVE:
        return
    if end - pay < 8:
        c.viol |= _V_GENEVE
        return
    if data[pay] >> 6 != 0:
        return
    hl = 8 + (data[pay] & 0x3F) * 4
    if hl > end - pay:
        c.viol |= _V_GENEVE
        return
    if hl == end - pay:
        return
    nxt = data[pay + 2] << 8 | data[pay + 3]
    if nxt == 0x6558:
        decode.ether(ex, data[:end], pay + hl, wirelen - (len(data) - end), ts, depth + 1)
    elif nxt == 0x0800 or nxt == 0x86DD:
        decode.ip(ex, data[:end], pay + hl, wirelen - (len(data) - end), ts, depth + 1)


def teredo(ex: FlowExtractor, c: Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
    if c.viol & _V_TEREDO:
        return
    p = teredo_inner(data, pay, end)
    if p < 0:
        c.viol |= _V_TEREDO  # "Bad Teredo encapsulation"
        return
    if data[p] >> 4 != 6:
        c.viol |= _V_TEREDO
        return
    inner_len = (data[p + 4] << 8 | data[p + 5]) + 40
    if inner_len > end - p:
        c.viol |= _V_TEREDO  # truncated
        return
    if inner_len < end - p and not (data[p + 6] == 59 and inner_len == 40):
        c.viol |= _V_TEREDO  # payload length mismatch; bubbles may carry trailing bytes
        return
    decode.ip(ex, data[:end], p, wirelen - (len(data) - end), ts, depth + 1)


def gtp(ex: FlowExtractor, c: Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
    """GTPv1-U G-PDU (message type 255) carrying an IP packet that fills it exactly.

    Unlike the other UDP tunnels, Zeek's GTPv1 analyzer keeps trying after a
    protocol violation, packet by packet.
    """
    if ex.in_gtp or end - pay < 8:
        return  # GTP inside GTP, or a truncated header
    flags, mtype = data[pay], data[pay + 1]
    if flags >> 5 != 1:
        return
    if not flags & 0x10 or mtype != 255:
        return  # GTP' or a control message: nothing to decapsulate
    p = pay + 8
    if flags & 0x07:
        p += 4
        if flags & 0x04:
            while True:  # extension headers: length in 4-byte units, last byte is next type
                if p >= end or data[p] == 0 or p + data[p] * 4 > end:
                    return
                p += data[p] * 4
                if data[p - 1] == 0:
                    break
        if p > end:
            return
    inner = data[p:end]
    if len(inner) < 20 or inner[0] >> 4 not in (4, 6) or not inner_ip_exact(inner, inner[0] >> 4):
        return
    ex.in_gtp = True
    try:
        decode.ip(ex, data[:end], p, wirelen - (len(data) - end), ts, depth + 1)
    finally:
        ex.in_gtp = False


def ayiya(ex: FlowExtractor, c: Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
    if c.viol & _V_AYIYA:
        return
    if end - pay < 8:
        c.viol |= _V_AYIYA
        return
    hl = 8 + (1 << (data[pay] >> 4)) + (data[pay + 1] >> 4) * 4
    if hl > end - pay:
        c.viol |= _V_AYIYA
        return
    if data[pay + 2] & 0x0F != 1 or hl == end - pay:
        return
    if data[pay + 3] in (4, 41):
        decode.ip(ex, data[:end], pay + hl, wirelen - (len(data) - end), ts, depth + 1)
