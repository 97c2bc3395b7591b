"""TCP connections: Zeek's TCPSessionAdapter, reduced to what decides roles and lifetime.

The per-endpoint sequence bookkeeping (TCP_Endpoint, TCP_Reassembler) is in
tcpstate.py; this module runs the session adapter's state machine on top of
it: connection reuse by a new SYN, the originator guess for partial
connections, the SYN/SYN-ACK and SYN-ACK-first role flips, the history bits
that decide them, and the attempt, close and expire timers (a close waits
while the reassembler has data pending).

Functions take the :class:`~multa_broker.capture.extractor.FlowExtractor`
whose state they change as ``ex``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from multa_broker.capture import checksum
from multa_broker.capture.ports import LONG_INACTIVITY_TCP_PORTS, LONG_INACTIVITY_TIMEOUT
from multa_broker.capture.sessions import (BCAST4, T_ATTEMPT, T_DELETE, T_EXPIRE, TCP_ATTEMPT_DELAY, TCP_CLOSE_DELAY,
                                           TCP_INACTIVITY_TIMEOUT, TCP_SESSION_TIMER, TCP_SYN_TIMEOUT,
                                           UDP_INACTIVITY_TIMEOUT, Conn, count, flip, new_conn, push_timer, remove,
                                           set_inactivity)
from multa_broker.capture.tcpstate import (CLOSED, ESTABLISHED, INACTIVE, PARTIAL, RESET, SYN_ACK_SENT, SYN_SENT,
                                           Endpoint, seq_delta)

if TYPE_CHECKING:
    from multa_broker.capture.extractor import FlowExtractor

_HANDSHAKE = (INACTIVE, SYN_SENT, SYN_ACK_SENT)

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10

_TCP = struct.Struct("!HHIIBBH").unpack_from


def tcp(ex: FlowExtractor, src: bytes, dst: bytes, data: bytes, poff: int, plen: int, caprem: int,
        size: int, ts: float) -> None:
    if (plen and plen < 20) or caprem < 20:
        return
    sport, dport, seq, ack, offres, flags, win = _TCP(data, poff)
    c = ex.table.get((6, src, sport, dst, dport))
    if c is not None and flags & _SYN and tcp_is_reuse(c, flags, seq, offres):
        remove(ex, c)
        c = None
    if c is None:
        c = new_tcp(ex, src, sport, dst, dport, flags, ts)
    is_orig = src == c.oa and sport == c.op
    hl = (offres >> 4) << 2
    dlen = plen if size else caprem
    if hl < 20 or hl > dlen or hl > caprem:
        return
    dlen -= hl
    if ex.verify and caprem - hl >= dlen and not checksum.transport_ok(
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
        count(ex, c, is_orig, size)
        return
    orig_before = c.eo
    tcp_process(ex, c, is_orig, flags, seq, ack, dlen, caprem - hl, win, ts)
    if c.eo is not orig_before:
        is_orig = not is_orig
    count(ex, c, is_orig, size)
    if c.established:
        c.established = False
        tcp_established(ex, c)


def new_tcp(ex: FlowExtractor, src: bytes, sport: int, dst: bytes, dport: int, flags: int, ts: float) -> Conn:
    c = new_conn(ex, "tcp", 6, src, sport, dst, dport, ts)
    c.eo, c.er = Endpoint(), Endpoint()
    do_flip = False
    if not flags & _SYN or flags & _ACK:
        # Partial connection: guess the responder from the ports (TCPAnalyzer::WantConnection).
        if sport in ex.lsp_tcp:
            if dport in ex.lsp_tcp:
                do_flip = not flags & _SYN and sport < dport
            else:
                do_flip = True
    if do_flip and dst != BCAST4:
        flip(c)
    push_timer(ex, ex.nt + TCP_SYN_TIMEOUT, T_EXPIRE, c, c.an_gen)
    set_inactivity(ex, c, UDP_INACTIVITY_TIMEOUT)  # sic: Zeek starts TCP with the UDP timeout
    return c


def tcp_is_reuse(c: Conn, flags: int, seq: int, offres: int) -> bool:
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


def tcp_process(ex: FlowExtractor, c: Conn, is_orig: bool, flags: int, seq: int, ack: int, dlen: int, caplen: int,
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
        tcp_history(ex, c, ep, peer, flags, seq, dlen, win, first_of_ep)
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
                set_state(ex, c, ep, SYN_ACK_SENT if ackf else SYN_SENT)
                push_timer(ex, ts + TCP_ATTEMPT_DELAY, T_ATTEMPT, c, c.an_gen)
            else:
                if not ackf and peer.state == SYN_ACK_SENT:
                    # SYN/SYN-ACK reversal: the SYN's sender is the originator.
                    flip(c)
                    set_state(ex, c, peer, ESTABLISHED)
                    c.fps |= 1
                if peer.state == SYN_SENT:
                    set_state(ex, c, peer, ESTABLISHED)
                set_state(ex, c, ep, ESTABLISHED)
                if peer.state != PARTIAL:
                    c.established = True
        if fin:
            set_state(ex, c, ep, CLOSED)
            do_close = gen_event = True
        if rst:
            set_state(ex, c, ep, RESET)
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
                set_state(ex, c, ep, ESTABLISHED)
                c.is_partial = False
                c.fps |= 1 if is_orig else 2
            else:
                set_state(ex, c, ep, PARTIAL)
    elif st == SYN_SENT or st == SYN_ACK_SENT:
        if fin:
            set_state(ex, c, ep, CLOSED)
            do_close = gen_event = True
        if rst:
            set_state(ex, c, ep, RESET)
            c.active = False  # ConnectionReset
            do_close = True
    elif st == ESTABLISHED or st == PARTIAL:
        if syn and st == PARTIAL and peer.state == INACTIVE and not ackf:
            set_state(ex, c, ep, SYN_SENT)
        if fin and not rst:
            set_state(ex, c, ep, CLOSED)
            if peer.state == RESET and peer.prev_state == CLOSED:
                set_state(ex, c, peer, CLOSED)
            do_close = gen_event = True
        if rst:
            set_state(ex, c, ep, RESET)
            do_close = True
            if peer.state != RESET or peer.prev_state != ESTABLISHED:
                c.active = False
    elif st == CLOSED:
        if rst and peer.state != CLOSED:
            set_state(ex, c, ep, RESET)
            if not ep.did_close:
                do_close = True
            # The reset timer is only armed when a connection_reset handler
            # exists; Zeek's base scripts have none.
    if ackf:
        peer.ack_received(rel_ack, c.is_partial)
        check_eof(ex, c, peer)
    # CheckPIA_FirstPacket, with the is_orig from before any flip.
    c.fps |= 1 if is_orig else 2
    if dlen > 0 and not rst and rel_seq >= 0 and caplen >= dlen:
        ep.data_sent(rel_seq + 1 if syn else rel_seq, dlen)
    check_eof(ex, c, ep)
    if do_close:
        tcp_closed(ex, c, ep, peer, gen_event)


def check_eof(ex: FlowExtractor, c: Conn, ep: Endpoint) -> None:
    """TCP_Reassembler::CheckEOF and TCPSessionAdapter::EndpointEOF: a deferred close resumes."""
    if ep.did_eof or not (ep.fin_cnt > 0 or ep.state == CLOSED or ep.state == RESET):
        return
    peer = c.er if ep is c.eo else c.eo
    if ep.data_pending(peer):
        return
    ep.did_eof = True
    if c.close_deferred:
        tcp_closed(ex, c, ep, peer, c.deferred_gen)
        c.close_deferred = False


def tcp_history(ex: FlowExtractor, c: Conn, ep: Endpoint, peer: Endpoint, flags: int, seq: int, dlen: int,
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
            flip(c)
            c.fps |= 1
        c.hstate = 2
    if c.hstate != 2 and ((win == 0 and not rst and peer.state != CLOSED and ep.state != RESET)
                          or (first_of_ep and syn and dlen > 0)):
        c.hstate = 2  # zero window 'W', or 'T': a SYN with data counts as its own retransmission


def set_state(ex: FlowExtractor, c: Conn, ep: Endpoint, new: int) -> None:
    if new == ep.state:
        return
    if new not in _HANDSHAKE and ep.state in _HANDSHAKE:
        peer = c.er if ep is c.eo else c.eo
        if peer.state in _HANDSHAKE:
            set_inactivity(ex, c, TCP_INACTIVITY_TIMEOUT)
    ep.prev_state = ep.state
    ep.state = new


def tcp_closed(ex: FlowExtractor, c: Conn, ep: Endpoint, peer: Endpoint, gen_event: bool) -> None:
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
        push_timer(ex, c.last_time + TCP_CLOSE_DELAY, T_DELETE, c, c.an_gen)
    elif ep.prev_state != INACTIVE:
        push_timer(ex, c.last_time + TCP_SESSION_TIMER, T_EXPIRE, c, c.an_gen)


def tcp_established(ex: FlowExtractor, c: Conn) -> None:
    # scripts/base/protocols/conn/inactivity.zeek, on connection_established.
    service = c.rp
    if c.eo.state == INACTIVE and service not in ex.lsp_tcp and c.op in ex.lsp_tcp:
        service = c.op
    if service in LONG_INACTIVITY_TCP_PORTS:
        set_inactivity(ex, c, LONG_INACTIVITY_TIMEOUT)
