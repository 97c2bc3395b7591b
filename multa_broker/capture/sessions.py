"""The connection table: Zeek's session manager, reduced to what the counts depend on.

A connection (:class:`Conn`) is in the table under its directed 5-tuple in
both directions (one direction for an ICMP message without a counterpart
type), so each packet costs one dict lookup. This module keeps what decides a
connection's lifetime and roles apart from any one protocol:

* creating and removing connections (a removed one waits in a heap until no
  older connection is still open, so connections come out in start order);
* the role flip (:func:`flip`), whichever analyzer asks for it;
* counting a packet the way Zeek's ConnSize analyzer does (:func:`count`);
* timers: inactivity, the TCP attempt/expire/delete timers, the DNS
  analyzer's session timer and the IP fragment timeout (:func:`run_timers`).

Functions take the :class:`~multa_broker.capture.extractor.FlowExtractor`
whose state they change as ``ex``.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from multa_broker.flow import MAX_SIZE, MIN_SIZE
from multa_broker.capture.tcpstate import INACTIVE, RESET, SYN_ACK_SENT, SYN_SENT, Endpoint

if TYPE_CHECKING:
    from multa_broker.capture.extractor import FlowExtractor

# Zeek 8.0 defaults (scripts/base/init-bare.zeek).
TCP_INACTIVITY_TIMEOUT = 300.0
UDP_INACTIVITY_TIMEOUT = 60.0
ICMP_INACTIVITY_TIMEOUT = 60.0
TCP_SYN_TIMEOUT = 5.0
TCP_SESSION_TIMER = 6.0
TCP_CONNECTION_LINGER = 5.0
TCP_ATTEMPT_DELAY = 5.0
TCP_CLOSE_DELAY = 5.0
DNS_SESSION_TIMEOUT = 10.0

#: The IPv4 broadcast address: no port-based role flip toward it.
BCAST4 = b"\xff\xff\xff\xff"

# Timer kinds.
T_INACT, T_ATTEMPT, T_EXPIRE, T_DELETE, T_FRAG, T_DNS = range(6)


class Conn:
    """A connection in the session table (only what the counts depend on)."""

    __slots__ = ("proto", "ipproto", "oa", "op", "ra", "rp", "keys", "ts", "seq", "last_time",
                 "sizes", "dirs", "iats", "last_nt", "opk", "rpk", "ob", "rb", "alive",
                 "inact", "inact_gen", "an_gen", "active", "eo", "er", "hstate", "established", "viol", "app",
                 "is_partial", "fps", "close_deferred", "deferred_gen", "ctx")

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
        # Host context at the start (multa_broker.context): set after the packet that created
        # the connection (FlowExtractor.feed), kept by later flips.
        self.ctx: tuple[int, ...] | None = None


def count(ex: FlowExtractor, c: Conn, is_orig: bool, size: int) -> None:
    ex.counted = True
    if is_orig:
        c.opk += 1
        c.ob += size
    else:
        c.rpk += 1
        c.rb += size
    k = len(c.sizes)
    if k < ex.n:
        nt = ex.nt
        c.iats.append(int(round((nt - c.last_nt) * 1e6)) if k else 0)
        c.last_nt = nt
        # Clamped: TotalLen() is 0 for TSO packets counted under ignored
        # checksums, and IPv6 lengths can pass 65535. The Zeek package clamps
        # the same way except for a 0 after the first packet, where it ends
        # the flow (zeek_scripts/collect-scripts.zeek, multa_packet_gap).
        c.sizes.append(size if MIN_SIZE <= size <= MAX_SIZE else min(max(size, MIN_SIZE), MAX_SIZE))
        c.dirs.append(is_orig)


def new_conn(ex: FlowExtractor, proto: str, ipproto: int, src: bytes, sport: int, dst: bytes, dport: int,
             ts: float, two_way: bool = True) -> Conn:
    """A new connection in the table (Zeek's ``NewConn``).

    Every connection Zeek creates passes here, in packet order, emitted later or
    not; each is queued in ``ex.started`` for its host context, which the
    extractor takes once the packet that created it has been processed: that is
    when Zeek's ``new_connection`` handlers run, and they see the roles as that
    packet left them (a flip while creating it, or by the DNS or NTP analyzer at
    its first packet, is seen; later flips keep the context).
    """
    fwd = (ipproto, src, sport, dst, dport)
    if two_way:
        rev = (ipproto, dst, dport, src, sport)
        keys: tuple = (fwd, rev)
    else:
        keys = (fwd,)
    ex.cseq += 1
    c = Conn(proto, ipproto, src, sport, dst, dport, keys, ts, ex.cseq)
    for k in keys:
        ex.table[k] = c
    heapq.heappush(ex.active_q, (ts, c.seq, c))
    ex.started.append(c)
    return c


def remove(ex: FlowExtractor, c: Conn) -> None:
    if not c.alive:
        return
    c.alive = False
    c.eo = c.er = None  # a finished connection waits for emission; keep it small
    table = ex.table
    for k in c.keys:
        if table.get(k) is c:
            del table[k]
    if c.opk + c.rpk >= ex.min_packets:
        heapq.heappush(ex.done_q, (c.ts, c.seq, c))


def flip(c: Conn) -> None:
    c.oa, c.ra = c.ra, c.oa
    c.op, c.rp = c.rp, c.op
    c.opk, c.rpk = c.rpk, c.opk
    c.ob, c.rb = c.rb, c.ob
    c.eo, c.er = c.er, c.eo
    c.fps = ((c.fps & 1) << 1) | ((c.fps & 2) >> 1)
    c.is_partial = False
    c.dirs = [not d for d in c.dirs]
    c.hstate = 2  # history gains '^'


def set_inactivity(ex: FlowExtractor, c: Conn, timeout: float) -> None:
    if timeout == c.inact:
        return
    c.inact_gen += 1
    if timeout:
        push_timer(ex, c.last_time + timeout, T_INACT, c, c.inact_gen)
    c.inact = timeout


def push_timer(ex: FlowExtractor, when: float, kind: int, obj: object, gen: int) -> None:
    ex.tseq += 1
    heapq.heappush(ex.timers, (when, ex.tseq, kind, obj, gen))


def run_timers(ex: FlowExtractor, now: float) -> None:
    timers = ex.timers
    while timers and timers[0][0] <= now:
        _when, _s, kind, obj, gen = heapq.heappop(timers)
        if kind == T_FRAG:
            if obj.alive:  # type: ignore[union-attr]
                obj.alive = False  # type: ignore[union-attr]
                ex.frags.pop(obj.key, None)  # type: ignore[union-attr]
            continue
        c: Conn = obj  # type: ignore[assignment]
        if not c.alive:
            continue
        if kind == T_INACT:
            if gen != c.inact_gen:
                continue
            if c.last_time + c.inact <= now:
                remove(ex, c)
            else:
                push_timer(ex, c.last_time + c.inact, T_INACT, c, gen)
            continue
        if kind == T_DNS:
            # DNS_Analyzer::ExpireTimer (the 1 s slack is Zeek's).
            if now - c.last_time >= DNS_SESSION_TIMEOUT - 1.0:
                remove(ex, c)
            else:
                push_timer(ex, now + DNS_SESSION_TIMEOUT, T_DNS, c, 0)
            continue
        if gen != c.an_gen:
            continue
        if kind == T_DELETE:
            remove(ex, c)
        elif kind == T_ATTEMPT:
            if c.active and c.eo.state in (SYN_SENT, SYN_ACK_SENT) and c.er.state == INACTIVE:
                c.active = False
                remove(ex, c)
        elif kind == T_EXPIRE:
            if not c.active:
                continue
            eo, er = c.eo, c.er
            if c.last_time + TCP_CONNECTION_LINGER < now:
                if (eo.did_close or er.did_close) and (
                        (eo.did_close and er.did_close) or eo.state == RESET or er.state == RESET
                        or eo.state == INACTIVE or er.state == INACTIVE):
                    c.active = False
                    remove(ex, c)
                    continue
                if er.state == INACTIVE and eo.state == INACTIVE:
                    remove(ex, c)
                    continue
            push_timer(ex, now + TCP_SESSION_TIMER, T_EXPIRE, c, gen)
