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


# ------------------------------------------------------------ issue 16: damage anywhere, nothing lost before it


def _ng_block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


@pytest.mark.parametrize("option", [
    struct.pack("<HH", 14, 8) + b"\0" * 4,   # if_tsoffset: 8 bytes announced, 4 left in the block
    struct.pack("<HH", 9, 1),                # if_tsresol: 1 byte announced, none left
    struct.pack("<HH", 2, 200) + b"eth0",    # if_name running far past the block
])
def test_pcapng_interface_option_past_its_block_is_a_one_line_error(tmp_path, capsys, option):
    """Issue 16 (3): struct.error/IndexError escaped as a traceback and later captures were not read."""
    from multa_broker.cli import main

    frame = pw.ether(pw.ip(pw.udp(C, 1, S, 2, b"x")))
    bad = (_ng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
           + _ng_block(1, struct.pack("<HHI", 1, 0, 262144) + option)
           + _ng_block(6, struct.pack("<IIIII", 0, 0, 1_000_000, len(frame), len(frame)) + frame))
    (tmp_path / "bad.pcapng").write_bytes(bad)
    (tmp_path / "good.pcap").write_bytes(pw.pcap(frames()))
    with pytest.raises(CaptureError, match=r"bad\.pcapng: corrupt pcapng interface block at offset 28"):
        list(read_connections(tmp_path / "bad.pcapng"))
    rc = main(["flows", str(tmp_path / "bad.pcapng"), str(tmp_path / "good.pcap")])
    out, err = capsys.readouterr()
    assert rc == 1 and len(out.splitlines()) == 4
    assert "Traceback" not in err
    assert [e for e in err.splitlines() if "bad.pcapng" in e] == [
        f"multa flows: error: {tmp_path / 'bad.pcapng'}: corrupt pcapng interface block at offset 28 "
        f"(option {struct.unpack_from('<H', option)[0]} of {struct.unpack_from('<H', option, 2)[0]} bytes "
        f"runs past the block)"]


def _many_frames(n: int = 40):
    import random

    rng = random.Random(7)  # random payloads: gzip cannot shrink them much
    return [(100.0 + i * 0.1, pw.ether(pw.ip(pw.udp(C, 1000 + i, S, 2000, rng.randbytes(300)))))
            for i in range(n)]


def _read_all(path):
    got = []
    try:
        for r in read_connections(path):
            got.append(r.flow)
    except CaptureError as e:
        return got, str(e)
    return got, None


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("keep", [0.3, 0.5, 0.9])
def test_gzip_capture_cut_short_keeps_the_flows_before_the_cut(tmp_path, fmt, keep):
    """Issue 16 (6): a gzip capture cut short gave 0 flows ('damaged compressed data near offset 0');
    now it keeps what the same capture uncompressed and cut at the same place keeps, and both
    errors say at which offset of the capture reading stopped."""
    import re
    import zlib

    fr = _many_frames()
    raw = pw.pcap(fr) if fmt == "pcap" else pw.pcapng([(0, t, f) for t, f in fr])
    gz = gzip.compress(raw)
    cut = gz[:int(len(gz) * keep)]
    avail = len(zlib.decompressobj(wbits=31).decompress(cut))
    (tmp_path / "cut.gz").write_bytes(cut)
    (tmp_path / "cut.raw").write_bytes(raw[:avail])
    got_gz, err_gz = _read_all(tmp_path / "cut.gz")
    got_raw, err_raw = _read_all(tmp_path / "cut.raw")
    assert got_gz == got_raw and 0 < len(got_gz) < len(fr)
    assert err_gz.startswith(str(tmp_path / "cut.gz")) and "cut short" in err_gz
    stop_gz = re.search(r"offset (\d+)", err_gz)
    stop_raw = re.search(r"offset (\d+)", err_raw)
    assert stop_gz and stop_raw and stop_gz.group(1) == stop_raw.group(1), (err_gz, err_raw)


def test_gzip_with_several_members_and_padding_reads_whole(tmp_path):
    raw = pw.pcap(_many_frames())
    (tmp_path / "m.gz").write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]) + b"\0" * 8)
    (tmp_path / "m.pcap").write_bytes(raw)
    assert _read_all(tmp_path / "m.gz") == _read_all(tmp_path / "m.pcap") and len(_read_all(tmp_path / "m.gz")[0]) == 40


def test_damaged_gzip_names_the_file_and_where_reading_stopped(tmp_path):
    raw = pw.pcap(_many_frames())
    bad = bytearray(gzip.compress(raw))
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / "d.gz").write_bytes(bytes(bad))
    got, err = _read_all(tmp_path / "d.gz")
    assert err is not None and err.startswith(str(tmp_path / "d.gz")) and "reading stopped at offset" in err
