"""Per-endpoint TCP sequence bookkeeping, as Zeek's TCP_Endpoint and TCP_Reassembler keep it.

Zeek reassembles every TCP connection from its first packet
(``dpd_reassemble_first_packets``), and its close logic depends on the
reassembler: a FIN or RST does not close a connection while
``TCP_Reassembler::DataPending()`` says data is outstanding (the close is
deferred until the reassembler reaches end-of-file, often never), which
decides when the same 5-tuple starts a new connection. This module keeps the
sequence numbers that decision needs -- start, last, acknowledged, the
reassembler's delivered point and trim point, and the sequence ranges it still
buffers -- without any payload bytes.

Sequence numbers relative to an endpoint's start are computed modulo 2**32
(``seq_delta``), which is exact for connections below 2 GiB per direction.
"""

from __future__ import annotations

# TCP endpoint states, in Zeek's order (analyzer/protocol/tcp/TCP_Endpoint.h).
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

_M = 0xFFFFFFFF
TOO_LARGE_SEQ_DELTA = 1048576
#: tcp_max_initial_window / tcp_max_above_hole_without_any_acks defaults.
MAX_INITIAL_WINDOW = 16384
MAX_ABOVE_HOLE_WITHOUT_ACKS = 16384
EXCESSIVE_DATA_WITHOUT_ACKS = 10 * 1024 * 1024


def seq_delta(a: int, b: int) -> int:
    """Signed 32-bit difference a - b (Zeek's seq_delta)."""
    d = (a - b) & _M
    return d - 0x100000000 if d & 0x80000000 else d


class Endpoint:
    """One side of a TCP connection."""

    __slots__ = ("state", "prev_state", "did_close", "start_seq", "last_seq", "ack_seq", "last_syn",
                 "fin_cnt", "fin_seq", "reass_last", "trim_seq", "blocks", "skip", "did_eof")

    def __init__(self) -> None:
        self.state = INACTIVE
        self.prev_state = INACTIVE
        self.did_close = False
        self.start_seq = 0
        self.last_seq = 0
        self.ack_seq = 0
        self.last_syn = -1
        self.fin_cnt = 0
        self.fin_seq = 0
        # Reassembler: relative sequence numbers, starting at 1 (after the SYN).
        self.reass_last = 1
        self.trim_seq = 1
        #: Buffered (not yet acknowledged) ranges [lo, hi), merged, sorted.
        self.blocks: list[list[int]] = []
        self.skip = False
        self.did_eof = False

    # ------------------------------------------------------------ endpoint

    def init_from_packet(self, syn: bool, seq: int, one_past: int) -> None:
        """init_endpoint() for this endpoint's packet, by state."""
        st = self.state
        if st == INACTIVE:
            if syn:
                self.start_seq = self.ack_seq = seq
                self.last_seq = one_past
            else:
                # A partial connection: pretend a SYN came just before.
                self.start_seq = self.ack_seq = (seq - 1) & _M
                self.last_seq = seq
        elif st == SYN_SENT or st == SYN_ACK_SENT:
            if syn and seq != self.start_seq:
                self.start_seq = self.ack_seq = seq
                self.last_seq = one_past
        elif st == ESTABLISHED or st == PARTIAL:
            if syn:
                self.start_seq = self.ack_seq = seq
        elif st == RESET:
            if syn and self.prev_state == INACTIVE:
                self.start_seq = self.ack_seq = seq
                self.last_seq = one_past

    def init_as_peer(self, ack: int) -> None:
        """init_peer(): the other side acknowledged data we never saw this side send."""
        self.start_seq = self.ack_seq = self.last_seq = (ack - 1) & _M

    def update_ack(self, ack: int) -> None:
        """update_ack_seq(): the peer acknowledges up to ``ack``."""
        d = seq_delta(ack, self.ack_seq)
        if ack == 0 and d > TOO_LARGE_SEQ_DELTA:
            return
        if d > 0:
            self.ack_seq = ack

    def update_last(self, one_past: int, syn: bool, fin: bool, rst: bool) -> None:
        """update_last_seq()."""
        d = seq_delta(one_past, self.last_seq)
        if (syn or rst) and (d > TOO_LARGE_SEQ_DELTA or d < -TOO_LARGE_SEQ_DELTA):
            return
        if fin and self.last_seq == (self.start_seq + 1) & _M:
            self.last_seq = one_past
        elif self.state == RESET:
            return
        elif d > 0:
            self.last_seq = one_past

    def no_data_acked(self) -> bool:
        d = seq_delta(self.ack_seq, self.start_seq)
        return d == 0 or d == 1

    # --------------------------------------------------------- reassembler

    def data_sent(self, seq: int, length: int) -> None:
        """TCP_Reassembler::DataSent for relative range [seq, seq+length)."""
        if self.skip:
            return
        upper = seq + length
        ack = (self.ack_seq - self.start_seq) & _M
        if ack & 0x80000000:
            ack -= 0x100000000
        if seq < ack:
            if upper <= ack:
                return  # delivered and acknowledged already
            seq = ack
        if upper <= self.trim_seq:
            return
        if seq < self.trim_seq:
            seq = self.trim_seq
        blocks = self.blocks
        before = self.reass_last
        if not blocks:
            blocks.append([seq, upper])
            if seq <= before < upper:
                self.reass_last = upper
        else:
            self._insert(seq, upper)
            self._deliver()
        if ack == 0 or ack == 1:  # NoDataAcked()
            if self.reass_last > before and seq_delta(self.last_seq, self.start_seq) > MAX_INITIAL_WINDOW:
                # Much data and no ack seen: stop holding it (BlockInserted).
                self.trim(self.reass_last, partial=False)
            if self._undelivered_bytes() > MAX_ABOVE_HOLE_WITHOUT_ACKS:
                self.blocks = []
                self.skip = True
                return
        blocks = self.blocks
        if blocks and blocks[-1][1] - blocks[0][0] > EXCESSIVE_DATA_WITHOUT_ACKS and \
                sum(hi - lo for lo, hi in blocks) > EXCESSIVE_DATA_WITHOUT_ACKS:
            self.blocks = []
            self.skip = True

    def ack_received(self, seq: int, partial: bool) -> None:
        """TCP_Reassembler::AckReceived: the peer acknowledged relative ``seq``."""
        if self.fin_cnt > 0 and seq >= self.fin_seq:
            seq = self.fin_seq - 1
        if seq <= self.trim_seq:
            return
        self.trim(seq, partial)

    def trim(self, seq: int, partial: bool) -> None:
        """DataBlockList::Trim with TCP_Reassembler::Undelivered."""
        if seq > self.reass_last and not (seq <= 2 and partial):
            # Data never seen is acknowledged: a content gap; skip over it.
            self.reass_last = seq
        blocks = self.blocks
        while blocks and blocks[0][1] <= seq:
            del blocks[0]
        self._deliver()
        self.trim_seq = seq

    def data_pending(self, peer: "Endpoint") -> bool:
        """TCP_Reassembler::DataPending."""
        if self.skip:
            return False
        delivered = self.reass_last
        last = seq_delta(self.last_seq, self.start_seq)
        if last < delivered:
            return False
        if delivered != last - 1 and delivered != last:
            return True
        return self.state != RESET and bool(peer.blocks)

    def _insert(self, lo: int, hi: int) -> None:
        blocks = self.blocks
        if not blocks or blocks[-1][1] < lo:
            blocks.append([lo, hi])
            return
        tail = blocks[-1]
        if tail[0] <= lo:  # in order or overlapping the newest range: extend it
            if hi > tail[1]:
                tail[1] = hi
            return
        out: list[list[int]] = []
        placed = False
        for b in blocks:
            if b[1] < lo:
                out.append(b)
            elif hi < b[0]:
                if not placed:
                    out.append([lo, hi])
                    placed = True
                out.append(b)
            else:
                lo, hi = min(lo, b[0]), max(hi, b[1])
        if not placed:
            out.append([lo, hi])
            out.sort()
        self.blocks = out

    def _deliver(self) -> None:
        last = self.reass_last
        blocks = self.blocks
        if len(blocks) == 1:
            lo, hi = blocks[0]
            if lo <= last < hi:
                self.reass_last = hi
            return
        for lo, hi in blocks:
            if lo > last:
                break
            if hi > last:
                last = hi
        self.reass_last = last

    def _undelivered_bytes(self) -> int:
        last = self.reass_last
        return sum(hi - max(lo, last) for lo, hi in self.blocks if hi > last)
