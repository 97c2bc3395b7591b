"""likely_server_ports: the static Zeek 8.0 set and overriding it."""

from __future__ import annotations

from multa_broker.capture import FlowExtractor
from multa_broker.capture import pcapwriter as pw
from multa_broker.capture.pcapwriter import ACK
from multa_broker.capture.ports import LIKELY_SERVER_PORTS_TCP, LIKELY_SERVER_PORTS_UDP, parse_zeek_print


def test_static_set_has_zeek_default_ports():
    assert {22, 25, 53, 80, 443, 445, 3389, 8080} <= LIKELY_SERVER_PORTS_TCP
    assert {53, 67, 123, 443, 3544, 4789, 5353, 6081} <= LIKELY_SERVER_PORTS_UDP
    assert 68 not in LIKELY_SERVER_PORTS_UDP and 12345 not in LIKELY_SERVER_PORTS_TCP


def test_parse_zeek_print():
    assert parse_zeek_print("{\n\t22/tcp,\n\t53/udp,\n\t53/tcp\n}\n") == (frozenset({22, 53}), frozenset({53}))


def test_override_changes_who_is_originator():
    # A mid-connection segment from server port 6379 (Redis) to a client port.
    frame = pw.ether(pw.ip(pw.tcp("10.0.0.2", 6379, "10.0.0.1", 40000, ACK, b"+OK\r\n")))
    for ports, orig in ((None, "10.0.0.1"), ((frozenset({80}), frozenset()), "10.0.0.2")):
        ex = FlowExtractor(likely_server_ports=ports)
        ex.feed(1.0, frame, len(frame), 1)
        (rec,) = ex.finish()
        assert rec.flow.key.orig_h == orig
