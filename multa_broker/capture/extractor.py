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

The per-packet path is plain functions over this class's state, in modules cut
along Zeek's own lines:

* ``decode.py``: link layers and IP (packet analysis);
* ``tcp.py``: the TCP session adapter's state machine, over the endpoint
  bookkeeping of ``tcpstate.py``;
* ``transport.py``: UDP and ICMP connections, DNS/NTP role flips;
* ``tunnels.py``: the decapsulators;
* ``sessions.py``: the connection table, its timers, role flips and counting.

It avoids objects: headers are read with ``struct`` from the packet bytes and
each packet costs one dict lookup on its directed 5-tuple (both directions of
every connection are in the table).
"""

from __future__ import annotations

import heapq
import socket
import struct
from typing import Iterator

from multa_broker.context import ContextTracker
from multa_broker.errors import CaptureError
from multa_broker.flow import DEFAULT_N, Flow, FlowKey
from multa_broker.capture.decode import ether, ethertype, ieee80211, ip, nflog, ppp
from multa_broker.capture.fragments import Reassembler
from multa_broker.capture.ports import LIKELY_SERVER_PORTS_TCP, LIKELY_SERVER_PORTS_UDP
from multa_broker.capture.records import ConnectionRecord
from multa_broker.capture.sessions import Conn, remove, run_timers

#: Link types we decode (DLT numbers); anything else is a CaptureError.
LINK_TYPES: dict[int, str] = {
    0: "NULL", 1: "EN10MB", 9: "PPP", 10: "FDDI", 12: "RAW", 14: "RAW", 50: "PPP_SERIAL", 101: "RAW",
    105: "IEEE802_11", 108: "LOOP", 113: "LINUX_SLL", 127: "IEEE802_11_RADIO", 228: "IPV4", 229: "IPV6",
    239: "NFLOG", 276: "LINUX_SLL2",
}


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
        self.lsp_tcp, self.lsp_udp = likely_server_ports or (LIKELY_SERVER_PORTS_TCP, LIKELY_SERVER_PORTS_UDP)
        self.n = n
        self.verify = verify_checksums
        self.min_packets = max(1, min_packets)
        self.source = source
        self.packets = 0          # frames fed
        self.skipped = 0          # frames that made no connection count (not IP, bad, ...)
        self.malformed = 0        # frames whose headers could not be parsed
        self.nt = 0.0            # Zeek's network_time
        self.table: dict[tuple, Conn] = {}
        self.timers: list[tuple] = []
        self.tseq = 0
        self.cseq = 0
        self.frags: dict[tuple, Reassembler] = {}
        self.active_q: list[tuple[float, int, Conn]] = []
        self.done_q: list[tuple[float, int, Conn]] = []
        self.counted = False
        self.truncated = False
        self.in_gtp = False
        #: Host context of every connection start (sessions.new_conn), emitted or not.
        self.context = ContextTracker()
        #: Connections the current packet created, waiting for their host context.
        self.started: list[Conn] = []

    # ------------------------------------------------------------------ input

    def feed(self, ts: float, data: bytes, wirelen: int, linktype: int) -> None:
        """Process one captured frame."""
        self.packets += 1
        if not data or not wirelen:
            self.skipped += 1  # Zeek's pcap source discards these before they reach time or analysis
            return
        if ts > self.nt:
            self.nt = ts
        if self.timers and self.timers[0][0] <= self.nt:
            run_timers(self, self.nt)
        self.counted = False
        # Zeek validates UDP checksums only for packets captured whole (pkt->len <= pkt->cap_len).
        self.truncated = wirelen > len(data)
        try:
            if linktype == 1:
                # Fast path: untagged Ethernet carrying IP.
                if len(data) > 16 and (data[12] == 0x08 and data[13] == 0x00 or data[12] == 0x86 and data[13] == 0xDD):
                    ip(self, data, 14, wirelen, ts, 0)
                else:
                    ether(self, data, 0, wirelen, ts, 0)
            elif linktype in (101, 12, 14, 228, 229):
                ip(self, data, 0, wirelen, ts, 0)
            elif linktype == 113:
                if len(data) > 16:
                    ethertype(self, data, 16, wirelen, ts, data[14] << 8 | data[15], 0, False)
            elif linktype == 276:
                if len(data) > 20:
                    ethertype(self, data, 20, wirelen, ts, data[0] << 8 | data[1], 0, False)
            elif linktype == 0 or linktype == 108:
                if len(data) > 4:
                    fam = int.from_bytes(data[:4], "little" if linktype == 0 else "big")
                    if fam in (2, 24, 28, 30):
                        ip(self, data, 4, wirelen, ts, 0)
            elif linktype == 9 or linktype == 50:
                ppp(self, data, wirelen, ts, linktype)
            elif linktype == 239:
                nflog(self, data, wirelen, ts)
            elif linktype == 10:
                if len(data) > 21:  # FDDI + LLC headers, then (hopefully) IP
                    ip(self, data, 21, wirelen, ts, 0)
            elif linktype == 105:
                ieee80211(self, data, 0, wirelen, ts)
            elif linktype == 127:
                if len(data) > 3:
                    rt = data[3] << 8 | data[2]
                    if rt < len(data):
                        ieee80211(self, data, rt, wirelen, ts)
            else:
                raise CaptureError(f"{self.source or 'capture'}: unsupported link type {linktype} "
                                   f"(decoded: {', '.join(f'{k} {v}' for k, v in sorted(LINK_TYPES.items()))})")
        except (IndexError, struct.error, ValueError):
            # A header field pointing past the captured bytes that a length check
            # above did not catch: Zeek drops such a packet, and so do we.
            self.malformed += 1
        if self.started:
            self._take_context()
        if not self.counted:
            self.skipped += 1

    def _take_context(self) -> None:
        """Host context of the connections this packet created, in creation order, in the
        roles the packet left them in (what Zeek's ``new_connection`` handlers see)."""
        start = self.context.start
        for c in self.started:
            c.ctx = start(c.ts, c.proto, c.oa, c.ra, c.rp)
        self.started.clear()

    def feed_capture(self, packets: Iterator[tuple[float, bytes, int, int]]) -> Iterator[ConnectionRecord]:
        """Feed a capture's packets, yielding connections as soon as their order is settled."""
        feed = self.feed
        done = self.done_q
        for i, (ts, data, wirelen, linktype) in enumerate(packets, 1):
            feed(ts, data, wirelen, linktype)
            if not i & 1023 and done:
                yield from self.pop_ready()
        yield from self.pop_ready()

    # ----------------------------------------------------------------- output

    def pop_ready(self) -> list[ConnectionRecord]:
        """Finished connections that no active connection can precede, oldest first."""
        out: list[ConnectionRecord] = []
        active, done = self.active_q, self.done_q
        while active and not active[0][2].alive:
            heapq.heappop(active)
        while done and (not active or done[0][:2] < active[0][:2]):
            rec = self._record(heapq.heappop(done)[2])
            if rec is not None:
                out.append(rec)
        return out

    def finish(self) -> list[ConnectionRecord]:
        """End of input: every remaining connection, oldest first."""
        for c in list(self.table.values()):
            if c.alive:
                remove(self, c)
        self.active_q.clear()
        out = self.pop_ready()
        self.timers.clear()
        self.frags.clear()
        return out

    def _record(self, c: Conn) -> ConnectionRecord | None:
        if c.opk + c.rpk < self.min_packets:
            return None
        key = FlowKey(c.proto, _addr_str(c.oa), c.op, _addr_str(c.ra), c.rp, c.ts)
        flow = Flow(key, c.sizes, c.dirs, c.iats, ctx=c.ctx)
        return ConnectionRecord(flow, c.opk, c.rpk, c.ob, c.rb, self.source)

    # ------------------------------------------------------------ link layers
