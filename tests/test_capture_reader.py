"""Capture formats and damaged input: what is read, what is reported."""

from __future__ import annotations

import gzip
import struct

import pytest

from multa_broker.capture import CaptureError, read_connections, read_many
from multa_broker.capture import pcapwriter as pw
from multa_broker.capture.pcapwriter import SYN, ACK
from multa_broker.capture.reader import open_capture

C, S = "10.0.0.1", "10.0.0.2"


def frames():
    return [(100.0 + i * 0.5, pw.ether(pw.ip(pw.udp(C, 1000 + i, S, 2000, b"p" * i)))) for i in range(4)]


def test_pcap_and_gzip_give_the_same_flows(tmp_path):
    raw = pw.pcap(frames())
    (tmp_path / "a.pcap").write_bytes(raw)
    (tmp_path / "a.pcap.gz").write_bytes(gzip.compress(raw))
    a = [r.flow for r in read_connections(tmp_path / "a.pcap")]
    b = [r.flow for r in read_connections(tmp_path / "a.pcap.gz")]
    assert a == b and len(a) == 4


def test_nanosecond_pcap_truncates_to_microseconds_like_libpcap(tmp_path):
    f = [(1.0000019, pw.ether(pw.ip(pw.udp(C, 1, S, 2)))), (1.0010029, pw.ether(pw.ip(pw.udp(S, 2, C, 1))))]
    (tmp_path / "n.pcap").write_bytes(pw.pcap(f, nano=True))
    ts = [t for t, *_ in open_capture(tmp_path / "n.pcap")]
    assert ts == [1.000001, 1.001002]
    (r,) = read_connections(tmp_path / "n.pcap")
    assert r.flow.iats == [0, 1001]


def test_pcapng_with_two_interfaces_and_link_types(tmp_path):
    ip_pkt = pw.ip(pw.tcp(C, 40000, S, 5555, SYN))
    reply = pw.ip(pw.tcp(S, 5555, C, 40000, SYN | ACK, ack=1001))
    data = pw.pcapng([(0, 5.0, pw.ether(ip_pkt)), (1, 5.25, reply)], interfaces=[(1, 6), (101, 9)])
    (tmp_path / "m.pcapng").write_bytes(data)
    (r,) = read_connections(tmp_path / "m.pcapng")
    assert (r.flow.sizes, r.flow.dirs, r.flow.iats) == ([40, 40], [True, False], [0, 250000])


@pytest.mark.parametrize("linktype,prefix", [
    (101, b""), (228, b""), (0, struct.pack("<I", 2)), (108, struct.pack(">I", 2)),
    (113, b"\0" * 14 + b"\x08\x00"), (276, b"\x08\x00" + b"\0" * 18),
])
def test_link_types(tmp_path, linktype, prefix):
    pkt = prefix + pw.ip(pw.udp(C, 1, S, 2, b"abc"))
    (tmp_path / "l.pcap").write_bytes(pw.pcap([(1.0, pkt)], linktype=linktype))
    (r,) = read_connections(tmp_path / "l.pcap")
    assert r.flow.sizes == [31]


def test_unknown_link_type_is_an_error_naming_the_file(tmp_path):
    p = tmp_path / "odd.pcap"
    p.write_bytes(pw.pcap([(1.0, b"\x01" * 40)], linktype=147))
    with pytest.raises(CaptureError, match=r"odd\.pcap: unsupported link type 147"):
        list(read_connections(p))


def test_truncated_capture_yields_flows_read_before_the_damage(tmp_path):
    raw = pw.pcap(frames())
    p = tmp_path / "cut.pcap"
    p.write_bytes(raw[:-10])
    got = []
    with pytest.raises(CaptureError, match=r"cut\.pcap: truncated pcap record"):
        for r in read_connections(p):
            got.append(r)
    assert len(got) == 3


def test_corrupt_record_length(tmp_path):
    raw = bytearray(pw.pcap(frames()))
    struct.pack_into("<I", raw, 24 + 8, 10_000_000)  # first record's captured length
    p = tmp_path / "bad.pcap"
    p.write_bytes(bytes(raw))
    with pytest.raises(CaptureError, match="corrupt pcap record"):
        list(read_connections(p))


@pytest.mark.parametrize("content,msg", [
    (b"", "empty file"), (b"hello, not a capture at all", "not a pcap or pcapng"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
    (pw.pcap([]), "holds no packets"),
    (gzip.compress(b"garbage" * 10), "not a pcap or pcapng"),
    (gzip.compress(pw.pcap(frames()))[:-30], "damaged compressed data"),
])
def test_bad_files(tmp_path, content, msg):
    p = tmp_path / "x.bin"
    p.write_bytes(content)
    with pytest.raises(CaptureError, match=msg) as e:
        list(read_connections(p))
    assert str(e.value).startswith(str(p))


def test_read_many_goes_on_after_a_bad_file(tmp_path):
    (tmp_path / "good.pcap").write_bytes(pw.pcap(frames()))
    (tmp_path / "bad.pcap").write_bytes(b"nope")
    errors = []
    recs = list(read_many([tmp_path / "bad.pcap", tmp_path / "missing.pcap", tmp_path / "good.pcap"],
                          on_error=errors.append))
    assert len(recs) == 4 and len(errors) == 2
    assert "bad.pcap" in str(errors[0]) and "missing.pcap" in str(errors[1])
