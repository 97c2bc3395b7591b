"""Packets -> Zeek 8.0 connections -> Flows.

:class:`FlowExtractor` replays what Zeek's packet analysis and session
management do with each packet, so that a flow extracted offline is the flow
the live Zeek package records:

* link layers, VLAN/QinQ, MPLS, PPPoE, IPv4/IPv6 (extension headers, fragment
  reassembly), IP-in-IP, GRE, VXLAN, Geneve, Teredo, AYIYA and GTPv1 decapsulation
  (the outer UDP connection of a UDP tunnel stays a connection of its own);
* connection identity (the 5-tuple; for ICMP type and counterpart type), the
  originator (first packet's sender, flipped by ``likely_server_ports``, by a
  SYN-ACK-first connection that turns productive, by a late SYN, or by the DNS
  and NTP analyzers' first message);
* the end of a connection: TCP reuse by a new SYN, the attempt, close and
  expire timers of Zeek's TCP session adapter (a close waits while Zeek's
  reassembler has data pending, see tcpstate.py), inactivity timeouts, the
  DNS analyzer's session timer;
* what is counted: a packet counts when Zeek's ConnSize analyzer sees it,
  with ``IP_Hdr::TotalLen()`` as its size; with ``verify_checksums`` a packet
  with a bad IP, TCP, UDP or ICMP checksum is left out as ``zeek`` (without
  ``-C``) leaves it out.

Gaps are differences of Zeek's ``network_time`` (the largest packet time seen
so far), in microseconds.

The per-packet path avoids objects: headers are read with ``struct`` from the
packet bytes and each packet costs one dict lookup on its directed 5-tuple
(both directions of every connection are in the table).
"""

from __future__ import annotations

import heapq
import socket
import struct
from typing import Iterator

from multa_broker.errors import CaptureError
from multa_broker.flow import DEFAULT_N, MAX_SIZE, MIN_SIZE, Flow, FlowKey
from multa_broker.capture import checksum
from multa_broker.capture.fragments import FRAG_TIMEOUT, Reassembler
from multa_broker.capture.ports import (LIKELY_SERVER_PORTS_TCP, LIKELY_SERVER_PORTS_UDP,
                                        LONG_INACTIVITY_TCP_PORTS, LONG_INACTIVITY_TIMEOUT)
from multa_broker.capture.records import ConnectionRecord
from multa_broker.capture.tcpstate import (CLOSED, ESTABLISHED, INACTIVE, PARTIAL, RESET, SYN_ACK_SENT, SYN_SENT,
                                           Endpoint, seq_delta)


# Zeek 8.0 defaults (scripts/base/init-bare.zeek).
TCP_INACTIVITY_TIMEOUT = 300.0
UDP_INACTIVITY_TIMEOUT = 60.0
ICMP_INACTIVITY_TIMEOUT = 60.0
TCP_SYN_TIMEOUT = 5.0
TCP_SESSION_TIMER = 6.0
TCP_CONNECTION_LINGER = 5.0
TCP_ATTEMPT_DELAY = 5.0
TCP_CLOSE_DELAY = 5.0
TUNNEL_MAX_DEPTH = 4
DNS_SESSION_TIMEOUT = 10.0

#: Link types we decode (DLT numbers); anything else is a CaptureError.
LINK_TYPES: dict[int, str] = {
    0: "NULL", 1: "EN10MB", 9: "PPP", 10: "FDDI", 12: "RAW", 14: "RAW", 50: "PPP_SERIAL", 101: "RAW",
    105: "IEEE802_11", 108: "LOOP", 113: "LINUX_SLL", 127: "IEEE802_11_RADIO", 228: "IPV4", 229: "IPV6",
    239: "NFLOG", 276: "LINUX_SLL2",
}

_HANDSHAKE = (INACTIVE, SYN_SENT, SYN_ACK_SENT)

# Timer kinds.
_T_INACT, _T_ATTEMPT, _T_EXPIRE, _T_DELETE, _T_FRAG, _T_DNS = range(6)

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10

_TCP = struct.Struct("!HHIIBBH").unpack_from
_UDP = struct.Struct("!HHHH").unpack_from
_PORTS = struct.Struct("!HH").unpack_from

_ICMP4_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_COUNTERPART = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135,
                      130: 131, 131: 130, 139: 140, 140: 139, 144: 145, 145: 144}
_IPV6_EXT = frozenset({0, 43, 60, 44, 51, 50, 135})
_BCAST4 = b"\xff\xff\xff\xff"

# UDP ports whose connections Zeek hands to a tunnel decapsulator.
_VXLAN, _GENEVE, _TEREDO, _AYIYA, _GRE_UDP = 4789, 6081, 3544, 5072, 4754
# Application analyzers that flip roles (attached to UDP by responder port).
_DNS_UDP_PORTS = frozenset({53, 137, 5353, 5355})
_APP_DNS, _APP_NTP, _APP_NTP_ORIG_DONE, _APP_NTP_RESP_DONE = 1, 2, 4, 8
# Per-connection "analyzer violated" bits of those decapsulators.
_V_VXLAN, _V_GENEVE, _V_TEREDO, _V_AYIYA = 1, 2, 4, 8


class _Conn:
    """A connection in the session table (only what the counts depend on)."""

    __slots__ = ("proto", "ipproto", "oa", "op", "ra", "rp", "keys", "ts", "seq", "last_time",
                 "sizes", "dirs", "iats", "last_nt", "opk", "rpk", "ob", "rb", "alive",
                 "inact", "inact_gen", "an_gen", "active", "eo", "er", "hstate", "established", "viol", "app",
                 "is_partial", "fps", "close_deferred", "deferred_gen")

    def __init__(self, proto: str, ipproto: int, oa: bytes, op: int, ra: bytes, rp: int,
                 keys: tuple, ts: float, seq: int) -> None:
        self.proto = proto
        self.ipproto = ipproto
        self.oa, self.op, self.ra, self.rp = oa, op, ra, rp
        self.keys = keys
        self.ts = ts
        self.seq = seq
        self.last_time = ts
        self.sizes: list[int] = []
        self.dirs: list[bool] = []
        self.iats: list[int] = []
        self.last_nt = 0.0
        self.opk = self.rpk = self.ob = self.rb = 0
        self.alive = True
        self.inact = 0.0
        self.inact_gen = 0
        self.an_gen = 0
        self.active = True
        self.eo: Endpoint | None = None
        self.er: Endpoint | None = None
        self.hstate = 0  # history: 0 empty, 1 exactly "H", 2 anything else
        self.established = False
        self.viol = 0
        self.app = 0
        # TCP session adapter flags.
        self.is_partial = False
        self.fps = 0  # first_packet_seen: 1 originator, 2 responder
        self.close_deferred = False
        self.deferred_gen = False


def _teredo_inner(data: bytes, p: int, end: int) -> int:
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


def _teredo_detect(data: bytes, p: int, end: int) -> bool:
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


def _multicast(a: bytes) -> bool:
    return a[0] & 0xF0 == 0xE0 if len(a) == 4 else a[0] == 0xFF


def _addr_str(a: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(a) == 4 else socket.AF_INET6, a)


class FlowExtractor:
    """Turn packets into Zeek connections; collect finished ones in start-time order.

    Feed packets with :meth:`feed` (or a whole capture with :meth:`feed_capture`),
    take finished connections with :meth:`pop_ready`, and the rest with
    :meth:`finish` once the input ends.
    """

    def __init__(self, n: int = DEFAULT_N, *, verify_checksums: bool = False, min_packets: int = 1,
                 source: str = "",
                 likely_server_ports: tuple[frozenset[int], frozenset[int]] | None = None) -> None:
        """``likely_server_ports`` is (tcp ports, udp ports); default: Zeek 8.0's (ports.py)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._lsp_tcp, self._lsp_udp = likely_server_ports or (LIKELY_SERVER_PORTS_TCP, LIKELY_SERVER_PORTS_UDP)
        self.n = n
        self.verify = verify_checksums
        self.min_packets = max(1, min_packets)
        self.source = source
        self.packets = 0          # frames fed
        self.skipped = 0          # frames that made no connection count (not IP, bad, ...)
        self.malformed = 0        # frames whose headers could not be parsed
        self._nt = 0.0            # Zeek's network_time
        self._table: dict[tuple, _Conn] = {}
        self._timers: list[tuple] = []
        self._tseq = 0
        self._cseq = 0
        self._frags: dict[tuple, Reassembler] = {}
        self._active: list[tuple[float, int, _Conn]] = []
        self._done: list[tuple[float, int, _Conn]] = []
        self._counted = False
        self._truncated = False
        self._in_gtp = False

    # ------------------------------------------------------------------ input

    def feed(self, ts: float, data: bytes, wirelen: int, linktype: int) -> None:
        """Process one captured frame."""
        self.packets += 1
        if not data or not wirelen:
            self.skipped += 1  # Zeek's pcap source discards these before they reach time or analysis
            return
        if ts > self._nt:
            self._nt = ts
        if self._timers and self._timers[0][0] <= self._nt:
            self._run_timers(self._nt)
        self._counted = False
        # Zeek validates UDP checksums only for packets captured whole (pkt->len <= pkt->cap_len).
        self._truncated = wirelen > len(data)
        try:
            if linktype == 1:
                # Fast path: untagged Ethernet carrying IP.
                if len(data) > 16 and (data[12] == 0x08 and data[13] == 0x00 or data[12] == 0x86 and data[13] == 0xDD):
                    self._ip(data, 14, wirelen, ts, 0)
                else:
                    self._ether(data, 0, wirelen, ts, 0)
            elif linktype in (101, 12, 14, 228, 229):
                self._ip(data, 0, wirelen, ts, 0)
            elif linktype == 113:
                if len(data) > 16:
                    self._ethertype(data, 16, wirelen, ts, data[14] << 8 | data[15], 0, False)
            elif linktype == 276:
                if len(data) > 20:
                    self._ethertype(data, 20, wirelen, ts, data[0] << 8 | data[1], 0, False)
            elif linktype == 0 or linktype == 108:
                if len(data) > 4:
                    fam = int.from_bytes(data[:4], "little" if linktype == 0 else "big")
                    if fam in (2, 24, 28, 30):
                        self._ip(data, 4, wirelen, ts, 0)
            elif linktype == 9 or linktype == 50:
                self._ppp(data, wirelen, ts, linktype)
            elif linktype == 239:
                self._nflog(data, wirelen, ts)
            elif linktype == 10:
                if len(data) > 21:  # FDDI + LLC headers, then (hopefully) IP
                    self._ip(data, 21, wirelen, ts, 0)
            elif linktype == 105:
                self._ieee80211(data, 0, wirelen, ts)
            elif linktype == 127:
                if len(data) > 3:
                    rt = data[3] << 8 | data[2]
                    if rt < len(data):
                        self._ieee80211(data, rt, wirelen, ts)
            else:
                raise CaptureError(f"{self.source or 'capture'}: unsupported link type {linktype} "
                                   f"(decoded: {', '.join(f'{k} {v}' for k, v in sorted(LINK_TYPES.items()))})")
        except (IndexError, struct.error, ValueError):
            # A header field pointing past the captured bytes that a length check
            # above did not catch: Zeek drops such a packet, and so do we.
            self.malformed += 1
        if not self._counted:
            self.skipped += 1

    def feed_capture(self, packets: Iterator[tuple[float, bytes, int, int]]) -> Iterator[ConnectionRecord]:
        """Feed a capture's packets, yielding connections as soon as their order is settled."""
        feed = self.feed
        done = self._done
        for i, (ts, data, wirelen, linktype) in enumerate(packets, 1):
            feed(ts, data, wirelen, linktype)
            if not i & 1023 and done:
                yield from self.pop_ready()
        yield from self.pop_ready()

    # ----------------------------------------------------------------- output

    def pop_ready(self) -> list[ConnectionRecord]:
        """Finished connections that no active connection can precede, oldest first."""
        out: list[ConnectionRecord] = []
        active, done = self._active, self._done
        while active and not active[0][2].alive:
            heapq.heappop(active)
        while done and (not active or done[0][:2] < active[0][:2]):
            rec = self._record(heapq.heappop(done)[2])
            if rec is not None:
                out.append(rec)
        return out

    def finish(self) -> list[ConnectionRecord]:
        """End of input: every remaining connection, oldest first."""
        for c in list(self._table.values()):
            if c.alive:
                self._remove(c)
        self._active.clear()
        out = self.pop_ready()
        self._timers.clear()
        self._frags.clear()
        return out

    def _record(self, c: _Conn) -> ConnectionRecord | None:
        if c.opk + c.rpk < self.min_packets:
            return None
        key = FlowKey(c.proto, _addr_str(c.oa), c.op, _addr_str(c.ra), c.rp, c.ts)
        flow = Flow(key, c.sizes, c.dirs, c.iats)
        return ConnectionRecord(flow, c.opk, c.rpk, c.ob, c.rb, self.source)

    # ------------------------------------------------------------ link layers

    def _ether(self, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
        if len(data) - off <= 16:
            return
        if data[off + 12] == 0x89 and data[off + 13] == 0x03:  # Cisco FabricPath
            if 16 + 14 >= len(data) - off:
                return
            off += 16
        et = data[off + 12] << 8 | data[off + 13]
        if et >= 1536:
            self._ethertype(data, off + 14, wirelen, ts, et, depth, False)
        elif et <= 1500:
            off += 14
            if len(data) - off >= et:
                self._llc(data, off, wirelen, ts, depth)

    def _ethertype(self, data: bytes, off: int, wirelen: int, ts: float, et: int, depth: int,
                   in_vlan: bool) -> None:
        while True:
            if et == 0x0800 or et == 0x86DD:
                self._ip(data, off, wirelen, ts, depth)
                return
            if et == 0x8100 or ((et == 0x88A8 or et == 0x9100) and not in_vlan):
                if len(data) - off <= 4:
                    return
                et = data[off + 2] << 8 | data[off + 3]
                off += 4
                in_vlan = True
                if et < 1536:
                    if et <= 1500 and len(data) - off >= 2:
                        self._llc(data, off, wirelen, ts, depth)
                    return
                continue
            if et == 0x8847:
                self._mpls(data, off, wirelen, ts, depth)
                return
            if et == 0x8864:
                self._pppoe(data, off, wirelen, ts, depth)
                return
            if et == 0x88E7:  # PBB: skip the I-TAG, then a customer Ethernet frame
                if len(data) - off > 18:
                    self._ether(data, off + 4, wirelen, ts, depth)
                return
            if et == 0x8926:  # VN-Tag
                if len(data) - off <= 6:
                    return
                et = data[off + 4] << 8 | data[off + 5]
                off += 6
                if et in (0x8100, 0x88A8, 0x9100):
                    in_vlan = False
                    continue
                return
            return

    def _ieee80211(self, data: bytes, off: int, wirelen: int, ts: float, depth: int = 0) -> None:
        """802.11 data frames with LLC/SNAP (IEEE802_11Analyzer), including A-MSDUs."""
        n = len(data) - off
        hl = 24
        if hl >= n:
            return
        fc, flags = data[off], data[off + 1]
        if not (fc >> 2) & 0x02 or (fc >> 4) & 0x04:
            return  # management/control frame, or a data subtype without data
        if flags & 0x03 == 0x03:
            hl += 6
        if hl >= n:
            return
        amsdu = False
        if (fc >> 4) & 0x08:  # QoS
            amsdu = bool(data[off + hl] & 0x80)
            if flags & 0x40:
                return  # protected
            hl += 2
        if hl >= n:
            return
        p, end = off + hl, len(data)
        if not amsdu:
            self._ieee80211_llc(data, p, end, wirelen, ts, depth)
            return
        while p < end:
            if end - p < 14:
                return
            alen = data[p + 12] << 8 | data[p + 13]
            if end - p < alen + 14:
                return
            p += 14
            if not self._ieee80211_llc(data[:p + alen], p, p + alen, wirelen - (len(data) - p - alen), ts, depth):
                return
            p += alen
            pad = alen % 4
            if end - p >= pad:
                p += pad

    def _ieee80211_llc(self, data: bytes, p: int, end: int, wirelen: int, ts: float, depth: int) -> bool:
        if end - p < 8 or data[p:p + 6] != b"\xaa\xaa\x03\x00\x00\x00":
            return False
        et = data[p + 6] << 8 | data[p + 7]
        if et == 0x0800 or et == 0x86DD:
            self._ip(data, p + 8, wirelen, ts, depth)
            return True
        return et == 0x0806 or et == 0x8035

    def _llc(self, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
        # Only 802.2 SNAP with OUI 0 carries IP.
        if data[off] != 0xAA or data[off + 1] != 0xAA or len(data) - off < 3:
            return
        hl = 3 if data[off + 2] & 3 == 3 else 4
        if len(data) - off < hl + 5:
            return
        off += hl
        if data[off] or data[off + 1] or data[off + 2]:
            return
        et = data[off + 3] << 8 | data[off + 4]
        if et == 0x0800 or et == 0x86DD:
            self._ip(data, off + 5, wirelen, ts, depth)

    def _mpls(self, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
        while True:
            if len(data) - off <= 4:
                return
            bottom = data[off + 2] & 1
            off += 4
            if bottom:
                break
        self._ip(data, off, wirelen, ts, depth)

    def _pppoe(self, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
        n = len(data) - off
        if n <= 8:
            return
        plen = data[off + 4] << 8 | data[off + 5]
        proto = data[off + 6] << 8 | data[off + 7]
        plen = plen - 2 if plen >= 2 else 0
        if proto == 0x0021 or proto == 0x0057:
            self._ip(data[:off + 8 + min(plen, n - 8)], off + 8, wirelen, ts, depth)

    def _ppp(self, data: bytes, wirelen: int, ts: float, linktype: int) -> None:
        n = len(data)
        if linktype == 9 and not (data[0] == 0xFF and data[1] == 0x03):
            if n <= 2:
                return
            proto, off = data[0] << 8 | data[1], 2
        else:
            if n <= 4:
                return
            proto, off = data[2] << 8 | data[3], 4
        if proto == 0x0021 or proto == 0x0057:
            self._ip(data, off, wirelen, ts, 0)
        elif proto == 0x0281:
            self._mpls(data, off, wirelen, ts, 0)

    def _nflog(self, data: bytes, wirelen: int, ts: float) -> None:
        n = len(data)
        if n <= 4 or data[1] != 0:
            return
        fam = data[0]
        off = 4
        while True:
            if n - off <= 4:
                return
            tlv_len, tlv_type = struct.unpack_from("<HH", data, off)
            if tlv_type == 9:
                off += 4
                break
            if tlv_len < 4:
                return
            skip = (tlv_len + 3) & ~3
            if skip > n - off:
                return
            off += skip
        if fam in (2, 10):
            self._ip(data, off, wirelen, ts, 0)

    # -------------------------------------------------------------------- IP

    def _ip(self, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
        n = len(data) - off
        if n < 20:
            return
        v = data[off] >> 4
        if v == 4:
            ihl = (data[off] & 15) << 2
            total = size = data[off + 2] << 8 | data[off + 3]
            if total == 0:
                # TSO leaves ip_len zero: Zeek drops the packet unless checksums are
                # ignored, then parses with the captured length but counts 0 bytes.
                if self.verify:
                    return
                total = n
            if wirelen - off < total or ihl > total or ihl > n or ihl < 20:
                return
            if self.verify and int.from_bytes(data[off:off + ihl], "big") % 0xFFFF:
                return  # bad IPv4 header checksum (see checksum.py for the arithmetic)
            proto = data[off + 9]
            src = data[off + 12:off + 16]
            dst = data[off + 16:off + 20]
            frag = data[off + 6] << 8 | data[off + 7]
            if frag & 0x3FFF:
                if n < total:
                    if frag & 0x1FFF:
                        return  # incompletely captured non-first fragment
                else:
                    whole = self._fragment((src, dst, data[off + 4] << 8 | data[off + 5]), data[off:off + ihl],
                                           proto, (frag & 0x1FFF) << 3, bool(frag & 0x2000),
                                           data[off + ihl:off + total], proto, ts)
                    if whole is None:
                        return
                    hdr, proto, payload = whole
                    ihl = len(hdr)
                    total = size = (ihl + len(payload)) & 0xFFFF
                    if ihl > total:
                        return
                    data, off, n, wirelen = hdr + payload, 0, ihl + len(payload), ihl + len(payload)
            plen = size - ihl if size else 0
            if proto == 6:
                self._tcp(src, dst, data, off + ihl, plen, n - ihl, size, ts)
            elif proto == 17:
                self._udp(src, dst, data, off + ihl, plen, n - ihl, size, ts, depth, wirelen)
            else:
                self._l4(proto, src, dst, data, off + ihl, plen, n - ihl, size, ts, depth, wirelen)
        elif v == 6:
            if n < 40:
                return
            total = size = (data[off + 4] << 8 | data[off + 5]) + 40
            if wirelen - off < total:
                return
            nh = data[off + 6]
            hl = 40
            src = data[off + 8:off + 24]
            dst = data[off + 24:off + 40]
            last = 41
            frag_at = -1
            if nh in _IPV6_EXT:
                nh, hl, last, frag_at, src, dst = self._ipv6_chain(data, off, n, nh, src, dst)
            if hl > total or hl > n:
                return
            if last == 50 or last == 135 or (last != 44 and nh == 59):
                return  # ESP, Mobility, No Next Header: no connection
            if last == 44:
                fo = data[frag_at + 2] << 8 | data[frag_at + 3]
                fid = int.from_bytes(data[frag_at + 4:frag_at + 8], "big")
                if n < total:
                    if fo & 0xFFF8:
                        return
                else:
                    whole = self._fragment((src, dst, fid), data[off:off + hl - 8], nh, fo & 0xFFF8,
                                           bool(fo & 1), data[off + hl:off + total], nh, ts)
                    if whole is None:
                        return
                    hdr, nh, payload = whole
                    hl = len(hdr)
                    size = ((hl + len(payload) - 40) & 0xFFFF) + 40
                    total = size
                    if hl > total:
                        return
                    data, off, n, wirelen = hdr + payload, 0, hl + len(payload), hl + len(payload)
                    if nh == 59:
                        return
            self._l4(nh, src, dst, data, off + hl, total - hl, n - hl, size, ts, depth, wirelen)

    def _ipv6_chain(self, data: bytes, off: int, n: int, nh: int, src: bytes, dst: bytes):
        """Walk IPv6 extension headers as IPv6_Hdr_Chain::Init does."""
        hl = 40
        last = 41
        frag_at = -1
        final_dst = None
        home = None
        while True:
            rem = n - hl
            if rem < 2:
                break
            p = off + hl
            cur = nh
            if cur == 44 or cur == 50:
                clen = 8
            elif cur == 51:
                clen = 8 + 4 * data[p + 1]
            else:
                clen = 8 + 8 * data[p + 1]
            if clen > rem:
                break
            nxt = data[p]
            if cur == 43 and final_dst is None:
                rtype, segleft, rlen = data[p + 2], data[p + 3], data[p + 1]
                if segleft > 0 and ((rtype == 0 and rlen >= 2 and rlen % 2 == 0) or (rtype == 2 and rlen == 2)):
                    final_dst = data[p + clen - 16:p + clen]
            elif cur == 60 and home is None:
                home = self._home_address(data, p, clen)
            if cur == 44:
                frag_at = p
            hl += clen
            last = cur
            nh = nxt
            if cur in (44, 50, 135) or nh not in _IPV6_EXT:
                break
        return nh, hl, last, frag_at, home or src, final_dst or dst

    @staticmethod
    def _home_address(data: bytes, p: int, clen: int) -> bytes | None:
        i, end = p + 2, p + clen
        while i < end:
            t = data[i]
            if t == 0:
                i += 1
                continue
            if end - i < 2 or end - i < 2 + data[i + 1]:
                return None
            if t == 201 and data[i + 1] == 16:
                return data[i + 2:i + 18]
            i += 2 + data[i + 1]
        return None

    def _fragment(self, key: tuple, hdr: bytes, proto: int, offset: int, more: bool, payload: bytes,
                  next_proto: int, ts: float) -> tuple[bytes, int, bytes] | None:
        r = self._frags.get(key)
        if r is None:
            r = Reassembler(key, hdr, next_proto)
            self._frags[key] = r
            self._push_timer(self._nt + FRAG_TIMEOUT, _T_FRAG, r, 0)
        whole = r.add(offset, more, payload, proto)
        if whole is None:
            return None
        r.alive = False
        del self._frags[key]
        return r.hdr, r.next_proto, whole

    # ------------------------------------------------------------- transport

    def _l4(self, proto: int, src: bytes, dst: bytes, data: bytes, poff: int, plen: int, caprem: int,
            size: int, ts: float, depth: int, wirelen: int) -> None:
        if proto == 6:
            self._tcp(src, dst, data, poff, plen, caprem, size, ts)
        elif proto == 17:
            self._udp(src, dst, data, poff, plen, caprem, size, ts, depth, wirelen)
        elif proto == 1 or proto == 58:
            self._icmp(proto, src, dst, data, poff, plen, caprem, size, ts)
        elif proto == 4 or proto == 41:
            self._ip_in_ip(data, poff, caprem, ts, depth, proto)
        elif proto == 47:
            self._gre(data, poff, caprem, ts, depth)
        # Other IP protocols make "unknown_transport" connections in Zeek; not flows here.

    def _count(self, c: _Conn, is_orig: bool, size: int) -> None:
        self._counted = True
        if is_orig:
            c.opk += 1
            c.ob += size
        else:
            c.rpk += 1
            c.rb += size
        k = len(c.sizes)
        if k < self.n:
            nt = self._nt
            c.iats.append(int(round((nt - c.last_nt) * 1e6)) if k else 0)
            c.last_nt = nt
            # Clamped: TotalLen() is 0 for TSO packets counted under ignored
            # checksums, and IPv6 lengths can pass 65535. The Zeek package clamps
            # the same way except for a 0 after the first packet, where it ends
            # the flow (zeek_scripts/collect.zeek, multa_packet_gap).
            c.sizes.append(size if MIN_SIZE <= size <= MAX_SIZE else min(max(size, MIN_SIZE), MAX_SIZE))
            c.dirs.append(is_orig)

    def _new_conn(self, proto: str, ipproto: int, src: bytes, sport: int, dst: bytes, dport: int,
                  ts: float, two_way: bool = True) -> _Conn:
        fwd = (ipproto, src, sport, dst, dport)
        if two_way:
            rev = (ipproto, dst, dport, src, sport)
            keys: tuple = (fwd, rev)
        else:
            keys = (fwd,)
        self._cseq += 1
        c = _Conn(proto, ipproto, src, sport, dst, dport, keys, ts, self._cseq)
        for k in keys:
            self._table[k] = c
        heapq.heappush(self._active, (ts, c.seq, c))
        return c

    def _remove(self, c: _Conn) -> None:
        if not c.alive:
            return
        c.alive = False
        c.eo = c.er = None  # a finished connection waits for emission; keep it small
        table = self._table
        for k in c.keys:
            if table.get(k) is c:
                del table[k]
        if c.opk + c.rpk >= self.min_packets:
            heapq.heappush(self._done, (c.ts, c.seq, c))

    def _flip(self, c: _Conn) -> None:
        c.oa, c.ra = c.ra, c.oa
        c.op, c.rp = c.rp, c.op
        c.opk, c.rpk = c.rpk, c.opk
        c.ob, c.rb = c.rb, c.ob
        c.eo, c.er = c.er, c.eo
        c.fps = ((c.fps & 1) << 1) | ((c.fps & 2) >> 1)
        c.is_partial = False
        c.dirs = [not d for d in c.dirs]
        c.hstate = 2  # history gains '^'

    def _set_inactivity(self, c: _Conn, timeout: float) -> None:
        if timeout == c.inact:
            return
        c.inact_gen += 1
        if timeout:
            self._push_timer(c.last_time + timeout, _T_INACT, c, c.inact_gen)
        c.inact = timeout

    # ----------------------------------------------------------------- TCP

    def _tcp(self, src: bytes, dst: bytes, data: bytes, poff: int, plen: int, caprem: int,
             size: int, ts: float) -> None:
        if (plen and plen < 20) or caprem < 20:
            return
        sport, dport, seq, ack, offres, flags, win = _TCP(data, poff)
        c = self._table.get((6, src, sport, dst, dport))
        if c is not None and flags & _SYN and self._tcp_is_reuse(c, flags, seq, offres):
            self._remove(c)
            c = None
        if c is None:
            c = self._new_tcp(src, sport, dst, dport, flags, ts)
        is_orig = src == c.oa and sport == c.op
        hl = (offres >> 4) << 2
        dlen = plen if size else caprem
        if hl < 20 or hl > dlen or hl > caprem:
            return
        dlen -= hl
        if self.verify and caprem - hl >= dlen and not checksum.transport_ok(
                src, dst, 6, data[poff:poff + hl + dlen]):
            if c.hstate != 2:
                c.hstate = 2  # 'C' enters the history
            return
        ep = c.eo if is_orig else c.er
        peer = c.er if is_orig else c.eo
        if (not flags & 0x07 and c.hstate == 2 and c.fps == 3 and ep.state == ESTABLISHED
                and peer.state == ESTABLISHED):
            # Mid-connection segment: only sequence bookkeeping changes (same steps as below).
            c.last_time = ts
            rel_seq = (seq - ep.start_seq) & 0xFFFFFFFF
            if rel_seq & 0x80000000:
                rel_seq -= 0x100000000
            if flags & _ACK:
                rel_ack = (ack - peer.start_seq) & 0xFFFFFFFF
                if rel_ack & 0x80000000:
                    rel_ack = 0
                else:
                    d = (ack - peer.ack_seq) & 0xFFFFFFFF  # update_ack_seq, inline
                    if d and not d & 0x80000000 and not (ack == 0 and d > 1048576):
                        peer.ack_seq = ack
            one_past = (seq + dlen) & 0xFFFFFFFF
            d = (one_past - ep.last_seq) & 0xFFFFFFFF
            if d and not d & 0x80000000:
                ep.last_seq = one_past
            if flags & _ACK and rel_ack > peer.trim_seq:
                peer.ack_received(rel_ack, c.is_partial)
            if dlen > 0 and rel_seq >= 0 and caprem - hl >= dlen:
                ep.data_sent(rel_seq, dlen)
            self._counted = True
            if len(c.sizes) >= self.n:
                if is_orig:
                    c.opk += 1
                    c.ob += size
                else:
                    c.rpk += 1
                    c.rb += size
            else:
                self._count(c, is_orig, size)
            return
        orig_before = c.eo
        self._tcp_process(c, is_orig, flags, seq, ack, dlen, caprem - hl, win, ts)
        if c.eo is not orig_before:
            is_orig = not is_orig
        self._count(c, is_orig, size)
        if c.established:
            c.established = False
            self._tcp_established(c)

    def _new_tcp(self, src: bytes, sport: int, dst: bytes, dport: int, flags: int, ts: float) -> _Conn:
        c = self._new_conn("tcp", 6, src, sport, dst, dport, ts)
        c.eo, c.er = Endpoint(), Endpoint()
        flip = False
        if not flags & _SYN or flags & _ACK:
            # Partial connection: guess the responder from the ports (TCPAnalyzer::WantConnection).
            if sport in self._lsp_tcp:
                if dport in self._lsp_tcp:
                    flip = not flags & _SYN and sport < dport
                else:
                    flip = True
        if flip and dst != _BCAST4:
            self._flip(c)
        self._push_timer(self._nt + TCP_SYN_TIMEOUT, _T_EXPIRE, c, c.an_gen)
        self._set_inactivity(c, UDP_INACTIVITY_TIMEOUT)  # sic: Zeek starts TCP with the UDP timeout
        return c

    @staticmethod
    def _tcp_is_reuse(c: _Conn, flags: int, seq: int, offres: int) -> bool:
        # TCPSessionAdapter::IsReuse: only a SYN can start a new connection on the same 5-tuple.
        if offres >> 4 < 5:
            return False
        eo, er = c.eo, c.er
        if flags & _ACK:
            if eo.state != INACTIVE:
                return False
            conn_orig = er
        else:
            conn_orig = eo
        if not (eo.did_close or er.did_close):
            if seq == conn_orig.start_seq:
                return False
            if not flags & _ACK and conn_orig.state == SYN_ACK_SENT and er.state == INACTIVE \
                    and seq == er.start_seq:
                return False
        return True

    def _tcp_process(self, c: _Conn, is_orig: bool, flags: int, seq: int, ack: int, dlen: int, caplen: int,
                     win: int, ts: float) -> None:
        """TCPSessionAdapter::Process, reduced to what decides roles and lifetime."""
        ep = c.eo if is_orig else c.er
        peer = c.er if is_orig else c.eo
        syn, fin, rst, ackf = flags & _SYN, flags & _FIN, flags & _RST, flags & _ACK
        # SetPartialStatus
        if ep is c.eo:
            if not c.fps & 1:
                c.is_partial = not syn or bool(ackf)
        elif not c.fps & 2 and not c.is_partial:
            c.is_partial = not syn
        seg_len = (0 if rst else dlen) + (1 if syn else 0) + (1 if fin else 0)
        one_past = (seq + seg_len) & 0xFFFFFFFF
        st = ep.state
        first_of_ep = st == INACTIVE
        ep.init_from_packet(bool(syn), seq, one_past)
        rel_seq = seq_delta(seq, ep.start_seq)
        if c.hstate != 2:
            self._tcp_history(c, ep, peer, flags, seq, dlen, win, first_of_ep)
        if not (c.eo.did_close and c.er.did_close):
            c.last_time = ts
        if fin:
            ep.fin_cnt += 1
            ep.fin_seq = rel_seq + seg_len
        rel_ack = 0
        if ackf:
            if peer.state == INACTIVE:
                rel_ack = 1
                peer.init_as_peer(ack)
            else:
                rel_ack = seq_delta(ack, peer.start_seq)
                if rel_ack < 0:
                    rel_ack = 0
                elif not rst:
                    peer.update_ack(ack)
        ep.update_last(one_past, bool(syn), bool(fin), bool(rst))
        # UpdateStateMachine (is_orig is the value from before any flip above, as in Zeek).
        do_close = gen_event = False
        if st == INACTIVE:
            if syn:
                if is_orig:
                    self._set_state(c, ep, SYN_ACK_SENT if ackf else SYN_SENT)
                    self._push_timer(ts + TCP_ATTEMPT_DELAY, _T_ATTEMPT, c, c.an_gen)
                else:
                    if not ackf and peer.state == SYN_ACK_SENT:
                        # SYN/SYN-ACK reversal: the SYN's sender is the originator.
                        self._flip(c)
                        self._set_state(c, peer, ESTABLISHED)
                        c.fps |= 1
                    if peer.state == SYN_SENT:
                        self._set_state(c, peer, ESTABLISHED)
                    self._set_state(c, ep, ESTABLISHED)
                    if peer.state != PARTIAL:
                        c.established = True
            if fin:
                self._set_state(c, ep, CLOSED)
                do_close = gen_event = True
            if rst:
                self._set_state(c, ep, RESET)
                if is_orig:
                    is_reject = peer.state == ESTABLISHED
                else:
                    is_reject = peer.state == SYN_SENT or peer.state == SYN_ACK_SENT
                do_close = True
                gen_event = not is_reject
            if ep.state == INACTIVE:
                if not is_orig and dlen == 0 and c.eo.state == SYN_SENT:
                    pass
                elif ackf and peer.state == ESTABLISHED:
                    self._set_state(c, ep, ESTABLISHED)
                    c.is_partial = False
                    c.fps |= 1 if is_orig else 2
                else:
                    self._set_state(c, ep, PARTIAL)
        elif st == SYN_SENT or st == SYN_ACK_SENT:
            if fin:
                self._set_state(c, ep, CLOSED)
                do_close = gen_event = True
            if rst:
                self._set_state(c, ep, RESET)
                c.active = False  # ConnectionReset
                do_close = True
        elif st == ESTABLISHED or st == PARTIAL:
            if syn and st == PARTIAL and peer.state == INACTIVE and not ackf:
                self._set_state(c, ep, SYN_SENT)
            if fin and not rst:
                self._set_state(c, ep, CLOSED)
                if peer.state == RESET and peer.prev_state == CLOSED:
                    self._set_state(c, peer, CLOSED)
                do_close = gen_event = True
            if rst:
                self._set_state(c, ep, RESET)
                do_close = True
                if peer.state != RESET or peer.prev_state != ESTABLISHED:
                    c.active = False
        elif st == CLOSED:
            if rst and peer.state != CLOSED:
                self._set_state(c, ep, RESET)
                if not ep.did_close:
                    do_close = True
                # The reset timer is only armed when a connection_reset handler
                # exists; Zeek's base scripts have none.
        if ackf:
            peer.ack_received(rel_ack, c.is_partial)
            self._check_eof(c, peer)
        # CheckPIA_FirstPacket, with the is_orig from before any flip.
        c.fps |= 1 if is_orig else 2
        if dlen > 0 and not rst and rel_seq >= 0 and caplen >= dlen:
            ep.data_sent(rel_seq + 1 if syn else rel_seq, dlen)
        self._check_eof(c, ep)
        if do_close:
            self._tcp_closed(c, ep, peer, gen_event)

    def _check_eof(self, c: _Conn, ep: Endpoint) -> None:
        """TCP_Reassembler::CheckEOF and TCPSessionAdapter::EndpointEOF: a deferred close resumes."""
        if ep.did_eof or not (ep.fin_cnt > 0 or ep.state == CLOSED or ep.state == RESET):
            return
        peer = c.er if ep is c.eo else c.eo
        if ep.data_pending(peer):
            return
        ep.did_eof = True
        if c.close_deferred:
            self._tcp_closed(c, ep, peer, c.deferred_gen)
            c.close_deferred = False

    def _tcp_history(self, c: _Conn, ep: Endpoint, peer: Endpoint, flags: int, seq: int, dlen: int,
                     win: int, first_of_ep: bool) -> None:
        """Track whether Zeek's history is exactly "H" and do its SYN-ACK-first flip."""
        syn, fin, rst = flags & _SYN, flags & _FIN, flags & _RST
        bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
        if bits == 1 and syn:
            code_h = bool(flags & _ACK)
            if c.hstate == 1 and ep is c.eo:
                # HIST_SYN_PKT already seen for the originator: only a new sequence number adds.
                if seq != ep.last_syn:
                    c.hstate = 2
            elif c.hstate == 0:
                c.hstate = 1 if (code_h and ep is c.eo) else 2
            else:
                c.hstate = 2
            ep.last_syn = seq
        elif bits >= 1:
            c.hstate = 2
        elif dlen or flags & _ACK:
            if c.hstate == 1:
                # A pure ACK or data after a lone SYN-ACK: flip (TCP_Endpoint::CheckHistory).
                self._flip(c)
                c.fps |= 1
            c.hstate = 2
        if c.hstate != 2 and ((win == 0 and not rst and peer.state != CLOSED and ep.state != RESET)
                              or (first_of_ep and syn and dlen > 0)):
            c.hstate = 2  # zero window 'W', or 'T': a SYN with data counts as its own retransmission

    def _set_state(self, c: _Conn, ep: Endpoint, new: int) -> None:
        if new == ep.state:
            return
        if new not in _HANDSHAKE and ep.state in _HANDSHAKE:
            peer = c.er if ep is c.eo else c.eo
            if peer.state in _HANDSHAKE:
                self._set_inactivity(c, TCP_INACTIVITY_TIMEOUT)
        ep.prev_state = ep.state
        ep.state = new

    def _tcp_closed(self, c: _Conn, ep: Endpoint, peer: Endpoint, gen_event: bool) -> None:
        """TCPSessionAdapter::ConnectionClosed."""
        if ep.data_pending(peer):
            # Data still outstanding in the reassembler: close when it reaches EOF.
            c.close_deferred = True
            if not c.deferred_gen:
                c.deferred_gen = gen_event
            return
        c.close_deferred = False
        if ep.did_close:
            return
        ep.did_close = True
        if ep.state == RESET or peer.did_close or peer.state == INACTIVE:
            if ep.prev_state != INACTIVE or peer.state != INACTIVE:
                if c.deferred_gen:
                    gen_event = True
                    c.deferred_gen = False
                if gen_event:
                    c.active = False  # ConnectionFinished
            c.an_gen += 1  # CancelTimers() on the TCP analyzer
            self._push_timer(c.last_time + TCP_CLOSE_DELAY, _T_DELETE, c, c.an_gen)
        elif ep.prev_state != INACTIVE:
            self._push_timer(c.last_time + TCP_SESSION_TIMER, _T_EXPIRE, c, c.an_gen)

    def _tcp_established(self, c: _Conn) -> None:
        # scripts/base/protocols/conn/inactivity.zeek, on connection_established.
        service = c.rp
        if c.eo.state == INACTIVE and service not in self._lsp_tcp and c.op in self._lsp_tcp:
            service = c.op
        if service in LONG_INACTIVITY_TCP_PORTS:
            self._set_inactivity(c, LONG_INACTIVITY_TIMEOUT)

    # ----------------------------------------------------------------- UDP

    def _udp(self, src: bytes, dst: bytes, data: bytes, poff: int, plen: int, caprem: int, size: int,
             ts: float, depth: int, wirelen: int) -> None:
        if (plen and plen < 8) or caprem < 8:
            return
        sport, dport, _ulen, csum = _UDP(data, poff)
        c = self._table.get((17, src, sport, dst, dport))
        if c is None:
            c = self._new_conn("udp", 17, src, sport, dst, dport, ts)
            if sport in self._lsp_udp and dport not in self._lsp_udp and dst != _BCAST4:
                self._flip(c)
            self._set_inactivity(c, UDP_INACTIVITY_TIMEOUT)
            # Application analyzers that may flip roles are attached by responder port.
            if c.rp in _DNS_UDP_PORTS:
                c.app = _APP_DNS
                # The DNS analyzer ends UDP "sessions" idle for dns_session_timeout.
                self._push_timer(self._nt + DNS_SESSION_TIMEOUT, _T_DNS, c, 0)
            elif c.rp == 123:
                c.app = _APP_NTP
        is_orig = src == c.oa and sport == c.op
        ulen = plen or caprem
        if self.verify and caprem >= ulen and not self._truncated:
            check = True
            if dport == _VXLAN and ulen > 8 + 8 + 14 and data[poff + 8] & 0x08 and csum == 0:
                check = False
            if check and (csum or len(src) == 16) and not checksum.transport_ok(
                    src, dst, 17, data[poff:poff + ulen]):
                return
        c.last_time = ts
        if c.app:
            self._udp_app_flip(c, is_orig, data, poff + 8, poff + min(ulen, caprem))
        # A flip by the DNS or NTP analyzer happens before ConnSize counts the packet,
        # which still counts it for the side that was the originator (stale is_orig).
        self._count(c, is_orig, size)
        # Tunnels are chosen by the connection's responder port (or detected by content).
        rp = c.rp
        if depth < TUNNEL_MAX_DEPTH:
            pay = poff + 8
            end = poff + min(ulen, caprem)
            if rp == _VXLAN:
                self._vxlan(c, data, pay, end, wirelen, ts, depth)
            elif rp == _GENEVE:
                self._geneve(c, data, pay, end, wirelen, ts, depth)
            elif rp == _TEREDO:
                self._teredo(c, data, pay, end, wirelen, ts, depth)
            elif rp == _AYIYA:
                self._ayiya(c, data, pay, end, wirelen, ts, depth)
            elif rp == 2152 or rp == 2123:
                self._gtp(c, data, pay, end, wirelen, ts, depth)
            elif rp == _GRE_UDP:
                self._gre(data[:end], pay, end - pay, ts, depth)
            elif end - pay >= 3:
                # Zeek's protocol detection for UDP payloads on other ports.
                if data[pay + 1] == 0x52 and data[pay + 2] == 0x11:
                    self._ayiya(c, data, pay, end, wirelen, ts, depth)
                elif end - pay >= 40 and _teredo_detect(data, pay, end):
                    self._teredo(c, data, pay, end, wirelen, ts, depth)

    def _udp_app_flip(self, c: _Conn, is_orig: bool, data: bytes, p: int, end: int) -> None:
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
                self._flip(c)
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
                self._flip(c)

    # ---------------------------------------------------------------- ICMP

    def _icmp(self, proto: int, src: bytes, dst: bytes, data: bytes, poff: int, plen: int, caprem: int,
              size: int, ts: float) -> None:
        if (plen and plen < 8) or caprem < 8:
            return
        itype, code = data[poff], data[poff + 1]
        counter = (_ICMP4_COUNTERPART if proto == 1 else _ICMP6_COUNTERPART).get(itype)
        two_way = counter is not None
        if not two_way:
            counter = code
        c = self._table.get((proto, src, itype, dst, counter))
        if c is None:
            c = self._new_conn("icmp", proto, src, itype, dst, counter, ts, two_way)
            self._set_inactivity(c, ICMP_INACTIVITY_TIMEOUT)
        is_orig = src == c.oa and itype == c.op
        ilen = plen or caprem
        if self.verify and caprem >= ilen:
            seg = data[poff:poff + ilen]
            if not (checksum.icmp4_ok(seg) if proto == 1 else checksum.transport_ok(src, dst, 58, seg)):
                return
        c.last_time = ts
        if caprem >= ilen:  # ConnSize only sees fully captured ICMP messages
            self._count(c, is_orig, size)

    # -------------------------------------------------------------- tunnels

    def _ip_in_ip(self, data: bytes, poff: int, caprem: int, ts: float, depth: int, proto: int) -> None:
        # IP-in-IP: the inner packet must fill the outer payload exactly (IP::ParsePacket).
        if depth + 1 > TUNNEL_MAX_DEPTH or caprem < 20:
            return
        inner = data[poff:poff + caprem]
        if not self._inner_ip_exact(inner, 6 if proto == 41 else 4):
            return
        self._inner(inner, ts, depth, ip=True)

    def _inner(self, inner: bytes, ts: float, depth: int, ip: bool, linktype: int = 1) -> None:
        # An IP-in-IP or GRE payload becomes a packet of its own, captured whole.
        saved = self._truncated
        self._truncated = False
        try:
            if ip:
                self._ip(inner, 0, len(inner), ts, depth + 1)
            elif linktype == 105:
                self._ieee80211(inner, 0, len(inner), ts, depth + 1)
            else:
                self._ether(inner, 0, len(inner), ts, depth + 1)
        finally:
            self._truncated = saved

    @staticmethod
    def _inner_ip_exact(inner: bytes, version: int) -> bool:
        if len(inner) < (40 if version == 6 else 20) or inner[0] >> 4 != version:
            return False
        if version == 4:
            return (inner[2] << 8 | inner[3]) == len(inner)
        return (inner[4] << 8 | inner[5]) + 40 == len(inner)

    def _gre(self, data: bytes, poff: int, caprem: int, ts: float, depth: int) -> None:
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
            if self._inner_ip_exact(inner, 4 if pproto == 0x0021 else 6):
                self._inner(inner, ts, depth, ip=True)
            return
        if ver != 0:
            return
        if ptype == 0x6558:  # transparent Ethernet bridging
            if caprem > glen + 14:
                self._inner(data[poff + glen:end], ts, depth, ip=False)
        elif ptype == 0x88BE:  # ERSPAN type I/II
            if caprem <= glen + 14:
                return
            elen = 8 if flags & 0x1000 else 0
            if caprem < glen + 14 + elen:
                return
            self._inner(data[poff + glen + elen:end], ts, depth, ip=False)
        elif ptype == 0x22EB:  # ERSPAN type III
            if caprem <= glen + 14 + 12:
                return
            elen = 12
            if data[poff + glen + 11] & 1:
                if caprem <= glen + 12 + 8 + 14:
                    return
                elen += 8
            self._inner(data[poff + glen + elen:end], ts, depth, ip=False)
        elif ptype in (0x0800, 0x86DD):
            if caprem < glen:
                return
            self._inner(data[poff + glen:end], ts, depth, ip=True)
        elif ((ptype & 0x8200) == 0x8200 and not ptype & 0x0F) or \
                ((ptype & 0x8300) == 0x8300 and not ptype & 0x0F and ptype <= 0x8370) or ptype == 0x9000:
            # Aruba: 802.11 frames inside GRE.
            if caprem > glen:
                self._inner(data[poff + glen:end], ts, depth, ip=False, linktype=105)

    # UDP tunnels. Each runs on the outer connection ``c``; a protocol violation
    # disables that decapsulator for the rest of the connection, as
    # packet_analysis::Analyzer::AnalyzerViolated does in Zeek.

    def _vxlan(self, c: _Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
        if c.viol & _V_VXLAN:
            return
        if end - pay < 8 or not data[pay] & 0x08:
            c.viol |= _V_VXLAN
            return
        if end - pay > 8:
            self._ether(data[:end], pay + 8, wirelen - (len(data) - end), ts, depth + 1)

    def _geneve(self, c: _Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
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
            self._ether(data[:end], pay + hl, wirelen - (len(data) - end), ts, depth + 1)
        elif nxt == 0x0800 or nxt == 0x86DD:
            self._ip(data[:end], pay + hl, wirelen - (len(data) - end), ts, depth + 1)

    def _teredo(self, c: _Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
        if c.viol & _V_TEREDO:
            return
        p = _teredo_inner(data, pay, end)
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
        self._ip(data[:end], p, wirelen - (len(data) - end), ts, depth + 1)

    def _gtp(self, c: _Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
        """GTPv1-U G-PDU (message type 255) carrying an IP packet that fills it exactly.

        Unlike the other UDP tunnels, Zeek's GTPv1 analyzer keeps trying after a
        protocol violation, packet by packet.
        """
        if self._in_gtp or end - pay < 8:
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
        if len(inner) < 20 or inner[0] >> 4 not in (4, 6) or not self._inner_ip_exact(inner, inner[0] >> 4):
            return
        self._in_gtp = True
        try:
            self._ip(data[:end], p, wirelen - (len(data) - end), ts, depth + 1)
        finally:
            self._in_gtp = False

    def _ayiya(self, c: _Conn, data: bytes, pay: int, end: int, wirelen: int, ts: float, depth: int) -> None:
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
            self._ip(data[:end], pay + hl, wirelen - (len(data) - end), ts, depth + 1)

    # --------------------------------------------------------------- timers

    def _push_timer(self, when: float, kind: int, obj: object, gen: int) -> None:
        self._tseq += 1
        heapq.heappush(self._timers, (when, self._tseq, kind, obj, gen))

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _when, _s, kind, obj, gen = heapq.heappop(timers)
            if kind == _T_FRAG:
                if obj.alive:  # type: ignore[union-attr]
                    obj.alive = False  # type: ignore[union-attr]
                    self._frags.pop(obj.key, None)  # type: ignore[union-attr]
                continue
            c: _Conn = obj  # type: ignore[assignment]
            if not c.alive:
                continue
            if kind == _T_INACT:
                if gen != c.inact_gen:
                    continue
                if c.last_time + c.inact <= now:
                    self._remove(c)
                else:
                    self._push_timer(c.last_time + c.inact, _T_INACT, c, gen)
                continue
            if kind == _T_DNS:
                # DNS_Analyzer::ExpireTimer (the 1 s slack is Zeek's).
                if now - c.last_time >= DNS_SESSION_TIMEOUT - 1.0:
                    self._remove(c)
                else:
                    self._push_timer(now + DNS_SESSION_TIMEOUT, _T_DNS, c, 0)
                continue
            if gen != c.an_gen:
                continue
            if kind == _T_DELETE:
                self._remove(c)
            elif kind == _T_ATTEMPT:
                if c.active and c.eo.state in (SYN_SENT, SYN_ACK_SENT) and c.er.state == INACTIVE:
                    c.active = False
                    self._remove(c)
            elif kind == _T_EXPIRE:
                if not c.active:
                    continue
                eo, er = c.eo, c.er
                if c.last_time + TCP_CONNECTION_LINGER < now:
                    if (eo.did_close or er.did_close) and (
                            (eo.did_close and er.did_close) or eo.state == RESET or er.state == RESET
                            or eo.state == INACTIVE or er.state == INACTIVE):
                        c.active = False
                        self._remove(c)
                        continue
                    if er.state == INACTIVE and eo.state == INACTIVE:
                        self._remove(c)
                        continue
                self._push_timer(now + TCP_SESSION_TIMER, _T_EXPIRE, c, gen)
