"""The TCP reassembler bookkeeping against brute force, and the deferred-close rule."""

from __future__ import annotations

import random

from multa_broker.capture.tcpstate import ESTABLISHED, RESET, Endpoint, seq_delta


def test_seq_delta_wraps():
    assert seq_delta(5, 0xFFFFFFFE) == 7
    assert seq_delta(0xFFFFFFFE, 5) == -7


def test_buffered_ranges_and_delivery_match_brute_force():
    rng = random.Random(3)
    for _ in range(500):
        e = Endpoint()
        covered: set[int] = set()
        for _ in range(rng.randint(1, 12)):
            lo, n = rng.randint(1, 60), rng.randint(1, 15)
            e._insert(lo, lo + n)
            e._deliver()
            covered |= set(range(lo, lo + n))
        expect = 1
        while expect in covered:
            expect += 1
        assert e.reass_last == expect
        assert set().union(*(set(range(lo, hi)) for lo, hi in e.blocks)) == covered
        assert all(a[1] < b[0] for a, b in zip(e.blocks, e.blocks[1:]))


def _established(start: int) -> Endpoint:
    e = Endpoint()
    e.state = ESTABLISHED
    e.start_seq = e.ack_seq = start
    e.last_seq = (start + 1) & 0xFFFFFFFF
    return e


def test_data_pending_until_acked_and_delivered():
    a, b = _established(1000), _established(5000)
    a.data_sent(1, 100)                 # delivered in order, not yet acknowledged
    a.update_last((1000 + 101) & 0xFFFFFFFF, False, False, False)
    assert a.reass_last == 101 and a.blocks
    assert b.data_pending(a)            # b's FIN would wait: a still holds unacknowledged data
    a.ack_received(101, partial=False)  # b acknowledges everything
    assert not a.blocks and not b.data_pending(a)
    b.state = RESET
    a.data_sent(101, 10)
    assert not b.data_pending(a)        # a RST does not wait for the peer's data


def test_hole_is_pending_until_acknowledged_past_it():
    a = _established(0)
    a.data_sent(50, 10)                 # bytes 1..49 never seen
    a.update_last(60, False, False, False)
    assert a.reass_last == 1 and a.data_pending(_established(0))
    a.ack_received(60, partial=False)   # the peer acknowledged past the hole: a content gap
    assert a.reass_last == 60 and not a.blocks
