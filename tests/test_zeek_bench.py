"""``multa bench zeek`` on a small synthetic trace with a real Zeek.

Timings are not checked (they are for benchmark runs, not tests); what is
checked is that every set-up runs for real and does the same work: the
package sends one flow per connection whether no one listens (``collect``),
a WebSocket client only reads (``publish``) or the real bridge answers
(``multa``), and the reference ``new_packet`` collector sends as many.
The Zeek runs are skipped, saying why, without a ``zeek`` binary on PATH;
joining captures into one trace is tested everywhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from multa_broker.capture import checksum
from multa_broker.capture import pcapwriter as w
from multa_broker.capture.extractor import FlowExtractor
from multa_broker.capture.reader import open_capture
from multa_broker.errors import MultaError
from multa_broker.bench.zeek import PLUGIN_BUILD, concatenate
from multa_broker.bench.traces import move_addresses, overlay

ZEEK = shutil.which("zeek")


def _captures(tmp_path):
    syn = w.ip(w.tcp("10.0.0.1", 1234, "10.0.0.2", 80, w.SYN))
    good = tmp_path / "a.pcap"
    good.write_bytes(w.pcap([(100.0, w.ether(syn)), (100.5, w.ether(syn)), (900.0, w.ether(syn))]))
    raw = tmp_path / "raw.pcap"
    raw.write_bytes(w.pcap([(1.0, syn)], linktype=101))
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    return good, raw, junk


def test_concatenate_joins_ethernet_and_skips_the_rest_on_request(tmp_path):
    good, raw, junk = _captures(tmp_path)
    out = tmp_path / "out.pcap"
    with pytest.raises(MultaError, match="raw.pcap: link type 101"):
        concatenate([good, raw], out)
    with pytest.raises(MultaError, match="junk.pcap"):
        concatenate([good, junk], out)
    assert concatenate([good, raw, junk, good], out, skip_unusable=True) == (2, 6, 2)
    times = [ts for ts, *_ in open_capture(out)]
    # 1 s before each capture, gaps kept up to 10 s, time never goes back.
    assert [round(b - a, 3) for a, b in zip(times, times[1:])] == [0.5, 10.0, 1.0, 0.5, 10.0]


def _capture_of_three(path, t0):
    path.write_bytes(w.pcap([
        (t0, w.ether(w.ip(w.tcp("10.0.0.1", 1234, "10.0.0.2", 80, w.SYN)))),
        (t0 + 0.25, w.ether(w.ip(w.tcp("10.0.0.2", 80, "10.0.0.1", 1234, w.RST | w.ACK, ack=1001)))),
        (t0 + 20.0, w.ether(w.ip(w.udp("10.0.0.1", 5353, "10.0.0.2", 53, b"query")))),
    ]))
    return path


def test_overlay_plays_captures_at_once_and_keeps_their_connections_apart(tmp_path):
    # Two captures of the same hosts and ports, recorded at different times.
    a = _capture_of_three(tmp_path / "a.pcap", 100.0)
    b = _capture_of_three(tmp_path / "b.pcap", 5000.0)
    raw = tmp_path / "raw.pcap"
    raw.write_bytes(w.pcap([(1.0, b"\0" * 40)], linktype=101))
    out = tmp_path / "out.pcap"
    with pytest.raises(MultaError, match="raw.pcap: link type 101"):
        overlay([a, raw], out)
    assert overlay([a, raw, b], out, skip_unusable=True) == (2, 6, 1)
    times = [ts for ts, *_ in open_capture(out)]
    # Both start together; the 19.75 s gap is shortened to 10 s in each.
    assert [round(t - times[0], 2) for t in times] == [0, 0, 0.25, 0.25, 10.25, 10.25]
    ex = FlowExtractor()
    records = [*ex.feed_capture(open_capture(out)), *ex.finish()]
    keys = {(r.flow.key.orig_h, r.flow.key.resp_h, r.flow.key.proto, r.total_packets) for r in records}
    assert keys == {("10.0.0.1", "10.0.0.2", "tcp", 2), ("10.0.0.1", "10.0.0.2", "udp", 1),
                    ("10.1.0.1", "10.1.0.2", "tcp", 2), ("10.1.0.1", "10.1.0.2", "udp", 1)}


@pytest.mark.parametrize("k", [1, 77, 300])
def test_move_addresses_keeps_every_checksum_right(k):
    v4 = [w.ip(w.tcp("10.77.0.20", 4000, "10.77.0.53", 53, w.SYN | w.ACK, b"x" * 7)),
          w.ip(w.udp("192.168.1.2", 5000, "10.0.0.255", 53, b"abc")),
          w.ip(w.icmp("10.0.0.1", "10.0.0.2", 8))]
    for packet in v4:
        moved = move_addresses(w.ether(packet, vlans=[5]), k)[18:]
        assert moved[12:20] != packet[12:20]
        assert checksum.ipv4_header_ok(moved[:20])
        if packet[9] in (6, 17):
            assert checksum.transport_ok(moved[12:16], moved[16:20], packet[9], moved[20:])
        assert moved[12] == packet[12] and moved[13] == packet[13] ^ (k & 0xFF)
        assert moved[14] == packet[14] ^ (k >> 8)
    v6 = w.ip(w.udp("2001:db8::1", 5000, "2001:db8::2", 53, b"abc"))
    moved = move_addresses(w.ether(v6), k)[14:]
    assert moved[10:12] == (0x0DB8 ^ k).to_bytes(2, "big")
    assert checksum.transport_ok(moved[8:24], moved[24:40], 17, moved[40:])
    assert move_addresses(b"short", k) == b"short"


@pytest.mark.zeek
@pytest.mark.skipif(ZEEK is None, reason="no zeek binary on PATH: multa bench zeek needs Zeek 8.0+")
def test_bench_zeek_setups_do_the_same_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "multa_broker", "bench", "zeek", "--tiny", "300", "--repeat", "1",
         "--setups", "plain,multa,publish,collect,new_packet", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    rows = report["setups"]
    assert list(rows) == ["plain", "multa", "publish", "collect", "new_packet"]
    assert report["packets"] == 600
    assert rows["plain"]["flows"] is None
    for name in ("multa", "publish", "collect", "new_packet"):
        assert rows[name]["flows"] == 300, (name, rows[name])
        assert rows[name]["cpu_s"] > 0 and rows[name]["cpu_ratio"] > 0
        # Start-up is measured on an empty capture and taken out: what is left is below the total.
        assert rows[name]["trace_cpu_s"] < rows[name]["cpu_s"]
    for name in ("multa", "publish", "collect"):
        # zeek_multa_batches_total: 300 flows leave in at least two events of batch_size 256 or less.
        assert 2 <= rows[name]["batches"] < 300, (name, rows[name])
    assert rows["new_packet"]["batches"] is None


@pytest.mark.zeek
@pytest.mark.skipif(ZEEK is None, reason="no zeek binary on PATH: multa bench zeek needs Zeek 8.0+")
def test_bench_zeek_overlay_keeps_every_connection(tmp_path):
    # Three recordings of the same two connections: played at once, Zeek
    # must still see six.
    caps = [str(_capture_of_three(tmp_path / f"{i}.pcap", 100.0 * i)) for i in range(3)]
    proc = subprocess.run(
        [sys.executable, "-m", "multa_broker", "bench", "zeek", "--overlay", *caps, "--repeat", "1",
         "--setups", "plain,collect", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["trace"] == "3 capture(s) played at once" and report["packets"] == 9
    assert report["setups"]["collect"]["flows"] == 6


@pytest.mark.zeek
@pytest.mark.skipif(ZEEK is None, reason="no zeek binary on PATH: multa bench zeek needs Zeek 8.0+")
def test_bench_zeek_context_both_runs_the_package_with_and_without_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "multa_broker", "bench", "zeek", "--tiny", "200", "--repeat", "1",
         "--setups", "plain,collect", "--context", "both", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    rows = report["setups"]
    assert report["host_context"] == "both" and list(rows) == ["plain", "collect", "collect-noctx"]
    assert rows["collect"]["flows"] == rows["collect-noctx"]["flows"] == 200
    assert rows["collect"]["ctx_flows"] == 200 and rows["collect-noctx"]["ctx_flows"] == 0


@pytest.mark.zeek
@pytest.mark.skipif(ZEEK is None, reason="no zeek binary on PATH: multa bench zeek needs Zeek 8.0+")
def test_bench_zeek_rejects_unknown_setup(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "multa_broker", "bench", "zeek", "--tiny", "10", "--setups", "plain,bogus"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "bogus" in proc.stderr and "Traceback" not in proc.stderr


PLUGIN_DIR = PLUGIN_BUILD


@pytest.mark.zeek
@pytest.mark.skipif(ZEEK is None or not (PLUGIN_DIR / "__zeek_plugin__").is_file(),
                    reason="needs zeek and the Multa::Collector plugin (zeek_plugin/build.sh)")
def test_bench_zeek_plugin_setups_send_the_same_flows(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "multa_broker", "bench", "zeek", "--tiny", "200", "--repeat", "1",
         "--setups", "plain,publish,collect", "--plugin", "--plugin-dir", str(PLUGIN_DIR), "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)["setups"]
    assert list(rows) == ["plain", "publish", "collect", "publish+plugin", "collect+plugin"]
    for name in ("publish", "collect", "publish+plugin", "collect+plugin"):
        assert rows[name]["flows"] == 200, (name, rows[name])


def test_bench_zeek_plugin_option_names_a_missing_build(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "multa_broker", "bench", "zeek", "--tiny", "10", "--zeek", sys.executable,
         "--plugin", "--plugin-dir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert str(tmp_path) in proc.stderr and "zeek_plugin/build.sh" in proc.stderr
    assert "Traceback" not in proc.stderr
