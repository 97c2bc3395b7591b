"""The extractor on hand-made captures: every expected number follows from the packets below.

Sizes are IP total lengths: an IPv4 TCP segment without options is 40 bytes
plus payload, a UDP datagram 28 plus payload, an ICMP echo without data 28
(8 bytes of ICMP header); IPv6 adds 20 to each.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from multa_broker.capture import FlowExtractor, read_connections
from multa_broker.capture import pcapwriter as pw
from multa_broker.capture.pcapwriter import ACK, FIN, PSH, RST, SYN
from multa_broker.flow import validate
from support.packets import tcp_session

C, S = "10.0.0.1", "10.0.0.2"  # client, server


def run(frames, tmp_path: Path, **kw) -> list:
    path = tmp_path / "t.pcap"
    path.write_bytes(pw.pcap(frames, **{k: kw.pop(k) for k in ("linktype", "nano", "wirelens") if k in kw}))
    recs = list(read_connections(path, **kw))
    for r in recs:
        validate(r.flow)
    return recs


def eth(seg, **kw) -> bytes:
    return pw.ether(pw.ip(seg), **kw)


def handshake(t0: float = 100.0, cport: int = 40000, sport: int = 5555):
    return tcp_session(t0, C, cport, S, sport, offsets=(0.0, 0.010, 0.0105, 0.011, 0.020, 0.021, 0.030, 0.031),
                       request=100, reply=300)


def test_tcp_connection_sizes_dirs_gaps(tmp_path):
    (r,) = run(handshake(), tmp_path)
    f = r.flow
    assert (f.key.proto, f.key.orig_h, f.key.orig_p, f.key.resp_h, f.key.resp_p) == ("tcp", C, 40000, S, 5555)
    assert f.key.ts == pytest.approx(100.0)
    assert f.sizes == [40, 40, 40, 140, 340, 40, 40, 40]
    assert f.dirs == [True, False, True, True, False, True, False, True]
    assert f.iats == [0, 10000, 500, 500, 9000, 1000, 9000, 1000]
    assert (r.orig_pkts, r.resp_pkts, r.orig_ip_bytes, r.resp_ip_bytes) == (5, 3, 300, 420)


def test_n_truncates_flow_but_not_counts(tmp_path):
    (r,) = run(handshake(), tmp_path, n=3)
    assert r.flow.sizes == [40, 40, 40] and r.flow.iats == [0, 10000, 500]
    assert r.total_packets == 8


def test_min_packets_filters(tmp_path):
    frames = handshake() + [(200.0, eth(pw.udp(C, 1234, S, 9999, b"a")))]
    assert len(run(frames, tmp_path)) == 2
    assert [r.flow.key.proto for r in run(frames, tmp_path, min_packets=2)] == ["tcp"]


def test_syn_ack_first_flips_on_productive_packet(tmp_path):
    # No SYN seen: the SYN-ACK's sender (port 5555, not a likely server port)
    # starts as originator; the client's ACK makes Zeek flip the roles.
    frames = [
        (1.0, eth(pw.tcp(S, 5555, C, 40000, SYN | ACK, seq=5000, ack=1001))),
        (1.5, eth(pw.tcp(C, 40000, S, 5555, ACK, seq=1001, ack=5001))),
        (2.0, eth(pw.tcp(C, 40000, S, 5555, ACK | PSH, b"z" * 10, seq=1001, ack=5001))),
    ]
    (r,) = run(frames, tmp_path)
    k = r.flow.key
    assert (k.orig_h, k.orig_p, k.resp_h, k.resp_p) == (C, 40000, S, 5555)
    assert r.flow.dirs == [False, True, True]
    assert (r.orig_pkts, r.resp_pkts) == (2, 1)


def test_syn_ack_first_from_likely_server_port_flips_at_once(tmp_path):
    frames = [(1.0, eth(pw.tcp(S, 443, C, 40000, SYN | ACK, seq=5000, ack=1001)))]
    (r,) = run(frames, tmp_path)
    assert (r.flow.key.orig_h, r.flow.key.resp_p) == (C, 443)
    assert r.flow.dirs == [False]


def test_lone_syn_ack_from_unlikely_port_keeps_sender_as_originator(tmp_path):
    # A stealth-scan reply: nothing productive follows, so no flip.
    frames = [(1.0, eth(pw.tcp(S, 5555, C, 40000, SYN | ACK))), (1.2, eth(pw.tcp(C, 40000, S, 5555, RST)))]
    (r,) = run(frames, tmp_path)
    assert (r.flow.key.orig_h, r.flow.dirs) == (S, [True, False])


def test_udp_originator_and_likely_server_port_flip(tmp_path):
    frames = [
        (1.0, eth(pw.udp(S, 53, C, 33333, b"r" * 20))),   # reply seen first: flipped
        (1.1, eth(pw.udp(C, 33333, S, 53, b"q" * 10))),
        (2.0, eth(pw.udp(C, 53, S, 5353, b"m"))),         # both likely server ports: no flip
    ]
    a, b = run(frames, tmp_path)
    assert (a.flow.key.orig_h, a.flow.key.orig_p, a.flow.key.resp_p) == (C, 33333, 53)
    assert a.flow.sizes == [48, 38] and a.flow.dirs == [False, True] and a.flow.iats == [0, 100000]
    assert (b.flow.key.orig_h, b.flow.key.orig_p, b.flow.key.resp_p) == (C, 53, 5353)


def test_icmp_echo_request_and_reply_share_a_connection(tmp_path):
    frames = [
        (1.0, eth(pw.icmp(C, S, 8))), (1.001, eth(pw.icmp(S, C, 0))),
        (2.0, eth(pw.icmp(C, S, 8))), (2.002, eth(pw.icmp(S, C, 0))),
        # Unreachables are one-way: each direction is its own connection.
        (3.0, eth(pw.icmp(S, C, 3, 1))), (3.5, eth(pw.icmp(C, S, 3, 1))),
    ]
    echo, un1, un2 = run(frames, tmp_path)
    k = echo.flow.key
    assert (k.proto, k.orig_h, k.orig_p, k.resp_h, k.resp_p) == ("icmp", C, 8, S, 0)
    assert echo.flow.sizes == [28, 28, 28, 28]
    assert echo.flow.dirs == [True, False, True, False]
    assert echo.flow.iats == [0, 1000, 999000, 2000]
    assert (un1.flow.key.orig_h, un1.flow.key.orig_p, un1.flow.key.resp_p) == (S, 3, 1)
    assert (un2.flow.key.orig_h, un2.total_packets) == (C, 1)


def test_echo_reply_first_makes_replier_the_originator(tmp_path):
    (r,) = run([(1.0, eth(pw.icmp(S, C, 0))), (1.1, eth(pw.icmp(C, S, 8)))], tmp_path)
    assert (r.flow.key.orig_h, r.flow.key.orig_p, r.flow.key.resp_p, r.flow.dirs) == (S, 0, 8, [True, False])


def test_ipv6_sizes_and_vlan(tmp_path):
    c6, s6 = "2001:db8::1", "2001:db8::2"
    frames = [
        (1.0, eth(pw.tcp(c6, 40000, s6, 80, SYN), vlans=[10])),
        (1.25, eth(pw.tcp(s6, 80, c6, 40000, SYN | ACK, seq=1, ack=1001), vlans=[10])),
        (1.5, eth(pw.udp(c6, 5000, s6, 6000, b"u" * 12), vlans=[20, 30])),  # QinQ, both 0x8100
    ]
    t, u = run(frames, tmp_path)
    assert (t.flow.key.orig_h, t.flow.sizes, t.flow.dirs, t.flow.iats) == (c6, [60, 60], [True, False], [0, 250000])
    assert (u.flow.key.proto, u.flow.sizes) == ("udp", [60])


def test_bad_checksum_counted_unless_verified(tmp_path):
    frames = handshake()
    frames[3] = (frames[3][0], eth(pw.tcp(C, 40000, S, 5555, ACK | PSH, b"x" * 100, seq=1001, ack=5001,
                                          bad_checksum=True)))
    frames.append((100.5, eth(pw.udp(C, 7, S, 7, b"e", bad_checksum=True))))
    plain = run(frames, tmp_path)
    assert [r.total_packets for r in plain] == [8, 1]
    checked = run(frames, tmp_path, verify_checksums=True)
    assert [r.total_packets for r in checked] == [7]  # the UDP connection has no counted packet
    assert checked[0].flow.sizes == [40, 40, 40, 340, 40, 40, 40]
    assert checked[0].flow.iats == [0, 10000, 500, 9500, 1000, 9000, 1000]


def test_bad_ip_header_checksum_dropped_only_when_verifying(tmp_path):
    pkt = bytearray(pw.ip(pw.udp(C, 1000, S, 2000, b"d")))
    pkt[10] ^= 0xFF
    frames = [(1.0, pw.ether(bytes(pkt)))]
    assert len(run(frames, tmp_path)) == 1
    assert run(frames, tmp_path, verify_checksums=True) == []


def test_ipv4_fragments_count_once_at_completion(tmp_path):
    seg = pw.udp(C, 1000, S, 2000, b"F" * 2992)   # 3000-byte UDP datagram
    f1, f2, f3 = pw.ipv4_fragments(seg, 1200)
    frames = [(1.0, pw.ether(f1)), (1.1, pw.ether(f3)), (1.3, pw.ether(f2)),
              (1.4, eth(pw.udp(S, 2000, C, 1000, b"ok")))]
    (r,) = run(frames, tmp_path)
    assert r.flow.sizes == [3020, 30]
    assert r.flow.iats == [0, 100000]  # the datagram counts when its last fragment arrives (1.3)
    assert r.flow.key.ts == pytest.approx(1.3)


def test_incomplete_fragments_make_no_flow(tmp_path):
    f1, _f2, f3 = pw.ipv4_fragments(pw.udp(C, 1000, S, 2000, b"F" * 2992), 1200)
    assert run([(1.0, pw.ether(f1)), (1.1, pw.ether(f3))], tmp_path) == []


def test_ip_in_ip_tunnel_yields_inner_connection_only(tmp_path):
    inner = pw.ip(pw.tcp(C, 40000, S, 5555, SYN))
    frames = [(1.0, pw.ether(pw.ipv4_in("192.0.2.1", "192.0.2.2", inner, proto=4)))]
    (r,) = run(frames, tmp_path)
    assert (r.flow.key.orig_h, r.flow.key.resp_p, r.flow.sizes) == (C, 5555, [40])


def test_gre_tunnel(tmp_path):
    inner = pw.ip(pw.udp(C, 1111, S, 2222, b"g" * 5))
    gre = b"\x00\x00\x08\x00" + inner
    (r,) = run([(1.0, pw.ether(pw.ipv4_in("192.0.2.1", "192.0.2.2", gre, proto=47)))], tmp_path)
    assert (r.flow.key.orig_p, r.flow.key.resp_p, r.flow.sizes) == (1111, 2222, [33])


def test_vxlan_outer_udp_is_its_own_connection(tmp_path):
    inner_frame = eth(pw.icmp(C, S, 8))
    vx = b"\x08\x00\x00\x00\x00\x00\x2a\x00" + inner_frame
    outer = pw.udp("192.0.2.1", 50000, "192.0.2.2", 4789, vx)
    recs = run([(1.0, eth(outer))], tmp_path)
    assert sorted((r.flow.key.proto, r.flow.sizes[0]) for r in recs) == [("icmp", 28), ("udp", 28 + 8 + 14 + 28)]


def test_udp_inactivity_timeout_starts_new_connection(tmp_path):
    frames = [(0.0, eth(pw.udp(C, 1000, S, 2000))), (59.0, eth(pw.udp(C, 1000, S, 2000))),
              (119.5, eth(pw.udp(C, 1000, S, 2000)))]
    a, b = run(frames, tmp_path)
    assert a.total_packets == 2 and b.total_packets == 1 and b.flow.key.ts == pytest.approx(119.5)


def test_unanswered_syn_retransmission_after_attempt_timer_is_new_connection(tmp_path):
    # Zeek removes an unanswered attempt 5 s after the SYN (tcp_attempt_delay).
    frames = [(t, eth(pw.tcp(C, 40000, S, 5555, SYN, seq=1000))) for t in (0.0, 1.0, 3.0, 7.0)]
    a, b = run(frames, tmp_path)
    assert (a.total_packets, b.total_packets) == (3, 1)


def test_new_syn_after_close_reuses_tuple_as_new_connection(tmp_path):
    frames = handshake(cport=40000) + [(100.5, eth(pw.tcp(C, 40000, S, 5555, SYN, seq=90000)))]
    a, b = run(frames, tmp_path)
    assert a.total_packets == 8 and b.total_packets == 1 and b.flow.key.ts == pytest.approx(100.5)


def test_packet_after_close_delay_is_new_connection(tmp_path):
    late = (100.031 + 6.0, eth(pw.tcp(C, 40000, S, 5555, ACK, seq=1102, ack=5302)))
    a, b = run(handshake() + [late], tmp_path)
    assert (a.total_packets, b.total_packets) == (8, 1)
    # ... but within the 5 s close delay it still belongs to the old connection.
    early = (100.031 + 4.0, late[1])
    (c,) = run(handshake() + [early], tmp_path)
    assert c.total_packets == 9


def test_flows_in_first_packet_order(tmp_path):
    frames = [(1.0, eth(pw.udp(C, 1, S, 2))), (2.0, eth(pw.udp(C, 3, S, 4))), (3.0, eth(pw.udp(C, 1, S, 2)))]
    recs = run(frames, tmp_path)
    assert [r.flow.key.orig_p for r in recs] == [1, 3]


def test_gaps_use_network_time_for_out_of_order_timestamps(tmp_path):
    # network_time never goes back, so a late-stamped packet has gap 0.
    frames = [(10.0, eth(pw.udp(C, 1, S, 2))), (9.5, eth(pw.udp(S, 2, C, 1))), (10.25, eth(pw.udp(C, 1, S, 2)))]
    (r,) = run(frames, tmp_path)
    assert r.flow.iats == [0, 0, 250000]


def test_extractor_fed_packet_by_packet():
    ex = FlowExtractor(4)
    for ts, frame in handshake():
        ex.feed(ts, frame, len(frame), 1)
    (r,) = ex.finish()
    assert r.flow.sizes == [40, 40, 40, 140] and r.total_packets == 8


def test_truncated_snaplen_ip_length_beyond_wire_is_dropped(tmp_path):
    frame = eth(pw.udp(C, 1, S, 2, b"p" * 100))
    # The frame claims a wire length shorter than its IP length: Zeek drops it.
    frames = [(1.0, frame[:60])]
    assert run(frames, tmp_path, wirelens={0: 60}) == []
    # Cut by the snap length (wire length intact): still counted with its IP length.
    (r,) = run(frames, tmp_path, wirelens={0: len(frame)})
    assert r.flow.sizes == [128]


def test_syn_after_syn_ack_reversal_flips_roles(tmp_path):
    # The capture saw the SYN-ACK before the SYN (e.g. two interfaces merged):
    # Zeek flips so that the SYN's sender is the originator.
    frames = [
        (1.0, eth(pw.tcp(S, 5555, C, 40000, SYN | ACK, seq=5000, ack=1001))),
        (1.001, eth(pw.tcp(C, 40000, S, 5555, SYN, seq=1000))),
        (1.002, eth(pw.tcp(C, 40000, S, 5555, ACK, seq=1001, ack=5001))),
    ]
    (r,) = run(frames, tmp_path)
    assert (r.flow.key.orig_h, r.flow.key.orig_p) == (C, 40000)
    assert r.flow.dirs == [False, True, True]


def test_ssh_port_keeps_idle_connection_for_an_hour(tmp_path):
    def conn(port):
        return [
            (0.0, eth(pw.tcp(C, 40000, S, port, SYN, seq=1000))),
            (0.1, eth(pw.tcp(S, port, C, 40000, SYN | ACK, seq=5000, ack=1001))),
            (0.2, eth(pw.tcp(C, 40000, S, port, ACK, seq=1001, ack=5001))),
            (600.0, eth(pw.tcp(C, 40000, S, port, ACK | PSH, b"k", seq=1001, ack=5001))),
        ]
    assert [r.total_packets for r in run(conn(22), tmp_path)] == [4]
    # Elsewhere the 5-minute tcp_inactivity_timeout ends the connection first.
    assert [r.total_packets for r in run(conn(5555), tmp_path)] == [3, 1]


def test_teredo_detection_needs_teredo_shape(tmp_path):
    c6, s6 = "2001:0:4136:e378::1", "2001:db8::2"
    inner = pw.ip(pw.udp(c6, 1, s6, 2, b"t" * 8))
    # With an origin indication header in front, an IPv6 packet in UDP on any port is Teredo.
    teredo = b"\x00\x00" + b"\x00" * 6 + inner
    recs = run([(1.0, eth(pw.udp(C, 40000, S, 50000, teredo)))], tmp_path)
    assert sorted(r.flow.key.orig_h for r in recs) == [C, c6]
    # Plain IPv6 bytes in UDP that do not fit Zeek's Teredo pattern stay UDP payload.
    plain = pw.ip(pw.udp("2001:db8::9", 1, s6, 2, b"t" * 8))
    recs = run([(1.0, eth(pw.udp(C, 40000, S, 50000, plain)))], tmp_path)
    assert [r.flow.key.orig_h for r in recs] == [C]


def test_dns_and_ntp_analyzers_flip_on_first_message(tmp_path):
    dns_response = b"\x12\x34\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00" + b"a" * 20
    ntp_server = bytes([0x24]) + b"\x00" * 47  # version 4, mode 4 (server)
    frames = [
        (1.0, eth(pw.udp(S, 53, C, 53, dns_response))),       # both ports likely: no port flip
        (1.1, eth(pw.udp(C, 53, S, 53, dns_response[:2] + b"\x01\x00" + dns_response[4:]))),
        (2.0, eth(pw.udp(S, 123, C, 123, ntp_server))),
    ]
    dns, ntp = run(frames, tmp_path)
    # The response's sender becomes the responder; the flipping packet itself is
    # still counted for the side that was originator when it arrived.
    assert (dns.flow.key.orig_h, dns.flow.dirs, dns.orig_pkts, dns.resp_pkts) == (C, [True, True], 2, 0)
    assert (ntp.flow.key.orig_h, ntp.flow.dirs) == (C, [True])
