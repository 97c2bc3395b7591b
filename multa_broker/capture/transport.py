"""UDP and ICMP connections, and the UDP ports and payloads that lead into a tunnel.

A UDP connection gets its roles from ``likely_server_ports`` and may have them
flipped by the DNS or NTP analyzer's first message; the DNS analyzer also ends
a connection idle for ``dns_session_timeout``. An ICMP connection is keyed by
type and counterpart type (or code). A UDP payload goes on to a tunnel
decapsulator (tunnels.py) by the connection's responder port, or by content
as Zeek's protocol detection finds AYIYA and Teredo.

Functions take the :class:`~multa_broker.capture.extractor.FlowExtractor`
whose state they change as ``ex``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

# decode, transport and tunnels call one another: imported as modules, so any can load first.
from multa_broker.capture import checksum, tunnels
from multa_broker.capture.sessions import (BCAST4, DNS_SESSION_TIMEOUT, ICMP_INACTIVITY_TIMEOUT, T_DNS,
                                           UDP_INACTIVITY_TIMEOUT, Conn, count, flip, new_conn, push_timer,
                                           set_inactivity)

if TYPE_CHECKING:
    from multa_broker.capture.extractor import FlowExtractor

_UDP = struct.Struct("!HHHH").unpack_from

_ICMP4_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_COUNTERPART = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135,
                      130: 131, 131: 130, 139: 140, 140: 139, 144: 145, 145: 144}

# Application analyzers that flip roles (attached to UDP by responder port).
_DNS_UDP_PORTS = frozenset({53, 137, 5353, 5355})
_APP_DNS, _APP_NTP, _APP_NTP_ORIG_DONE, _APP_NTP_RESP_DONE = 1, 2, 4, 8


def _multicast(a: bytes) -> bool:
    return a[0] & 0xF0 == 0xE0 if len(a) == 4 else a[0] == 0xFF


def udp(ex: FlowExtractor, src: bytes, dst: bytes, data: bytes, poff: int, plen: int, caprem: int, size: int,
        ts: float, depth: int, wirelen: int) -> None:
    if (plen and plen < 8) or caprem < 8:
        return
    sport, dport, _ulen, csum = _UDP(data, poff)
    c = ex.table.get((17, src, sport, dst, dport))
    if c is None:
        c = new_conn(ex, "udp", 17, src, sport, dst, dport, ts)
        if sport in ex.lsp_udp and dport not in ex.lsp_udp and dst != BCAST4:
            flip(c)
        set_inactivity(ex, c, UDP_INACTIVITY_TIMEOUT)
        # Application analyzers that may flip roles are attached by responder port.
        if c.rp in _DNS_UDP_PORTS:
            c.app = _APP_DNS
            # The DNS analyzer ends UDP "sessions" idle for dns_session_timeout.
            push_timer(ex, ex.nt + DNS_SESSION_TIMEOUT, T_DNS, c, 0)
        elif c.rp == 123:
            c.app = _APP_NTP
    is_orig = src == c.oa and sport == c.op
    ulen = plen or caprem
    if ex.verify and caprem >= ulen and not ex.truncated:
        check = True
        if dport == tunnels.VXLAN_PORT and ulen > 8 + 8 + 14 and data[poff + 8] & 0x08 and csum == 0:
            check = False
        if check and (csum or len(src) == 16) and not checksum.transport_ok(
                src, dst, 17, data[poff:poff + ulen]):
            return
    c.last_time = ts
    if c.app:
        udp_app_flip(ex, c, is_orig, data, poff + 8, poff + min(ulen, caprem))
    # A flip by the DNS or NTP analyzer happens before ConnSize counts the packet,
    # which still counts it for the side that was the originator (stale is_orig).
    count(ex, c, is_orig, size)
    # Tunnels are chosen by the connection's responder port (or detected by content).
    rp = c.rp
    if depth < tunnels.TUNNEL_MAX_DEPTH:
        pay = poff + 8
        end = poff + min(ulen, caprem)
        if rp == tunnels.VXLAN_PORT:
            tunnels.vxlan(ex, c, data, pay, end, wirelen, ts, depth)
        elif rp == tunnels.GENEVE_PORT:
            tunnels.geneve(ex, c, data, pay, end, wirelen, ts, depth)
        elif rp == tunnels.TEREDO_PORT:
            tunnels.teredo(ex, c, data, pay, end, wirelen, ts, depth)
        elif rp == tunnels.AYIYA_PORT:
            tunnels.ayiya(ex, c, data, pay, end, wirelen, ts, depth)
        elif rp in tunnels.GTP_PORTS:
            tunnels.gtp(ex, c, data, pay, end, wirelen, ts, depth)
        elif rp == tunnels.GRE_UDP_PORT:
            tunnels.gre(ex, data[:end], pay, end - pay, ts, depth)
        elif end - pay >= 3:
            # Zeek's protocol detection for UDP payloads on other ports.
            if data[pay + 1] == 0x52 and data[pay + 2] == 0x11:
                tunnels.ayiya(ex, c, data, pay, end, wirelen, ts, depth)
            elif end - pay >= 40 and tunnels.teredo_detect(data, pay, end):
                tunnels.teredo(ex, c, data, pay, end, wirelen, ts, depth)


def udp_app_flip(ex: FlowExtractor, c: Conn, is_orig: bool, data: bytes, p: int, end: int) -> None:
    if c.app == _APP_DNS:
        # DNS_Interpreter::ParseMessage: the first message that is a QUERY-opcode
        # message (or NetBIOS) decides; a response sent by the originator flips.
        if end - p < 12:
            return
        flags = data[p + 2] << 8 | data[p + 3]
        if (flags >> 11) & 0xF != 0 and not (c.op == 137 or c.rp == 137):
            return
        c.app = 0
        if flags & 0x8000 and is_orig and not _multicast(c.ra):
            flip(c)
    else:
        # NTP (ntp-analyzer.pac): a server-mode message from the originator or a
        # client-mode message from the responder flips, once per direction.
        if end - p < 48:
            return
        mode = data[p] & 7
        bit = _APP_NTP_ORIG_DONE if is_orig else _APP_NTP_RESP_DONE
        if c.app & bit:
            return
        if (mode == 4 and is_orig) or (mode == 3 and not is_orig):
            c.app |= bit
            flip(c)


def icmp(ex: FlowExtractor, proto: int, src: bytes, dst: bytes, data: bytes, poff: int, plen: int, caprem: int,
         size: int, ts: float) -> None:
    if (plen and plen < 8) or caprem < 8:
        return
    itype, code = data[poff], data[poff + 1]
    counter = (_ICMP4_COUNTERPART if proto == 1 else _ICMP6_COUNTERPART).get(itype)
    two_way = counter is not None
    if not two_way:
        counter = code
    c = ex.table.get((proto, src, itype, dst, counter))
    if c is None:
        c = new_conn(ex, "icmp", proto, src, itype, dst, counter, ts, two_way)
        set_inactivity(ex, c, ICMP_INACTIVITY_TIMEOUT)
    is_orig = src == c.oa and itype == c.op
    ilen = plen or caprem
    if ex.verify and caprem >= ilen:
        seg = data[poff:poff + ilen]
        if not (checksum.icmp4_ok(seg) if proto == 1 else checksum.transport_ok(src, dst, 58, seg)):
            return
    c.last_time = ts
    if caprem >= ilen:  # ConnSize only sees fully captured ICMP messages
        count(ex, c, is_orig, size)
