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

from conftest import REPO

from multa_broker.capture import pcapwriter as w
from multa_broker.errors import MultaError
from multa_broker.zeekbench import concatenate

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
    from multa_broker.capture.reader import open_capture
    times = [ts for ts, *_ in open_capture(out)]
    # 1 s before each capture, gaps kept up to 10 s, time never goes back.
    assert [round(b - a, 3) for a, b in zip(times, times[1:])] == [0.5, 10.0, 1.0, 0.5, 10.0]


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


@pytest.mark.zeek
@pytest.mark.skipif(ZEEK is None, reason="no zeek binary on PATH: multa bench zeek needs Zeek 8.0+")
def test_bench_zeek_rejects_unknown_setup(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "multa_broker", "bench", "zeek", "--tiny", "10", "--setups", "plain,bogus"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "bogus" in proc.stderr and "Traceback" not in proc.stderr


PLUGIN_DIR = REPO / "build"


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
