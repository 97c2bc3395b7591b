"""``multa bench zeek`` on a small synthetic trace with a real Zeek.

Timings are not checked (they are for benchmark runs, not tests); what is
checked is that every set-up runs for real and does the same work: the
package sends one flow per connection whether no one listens (``collect``),
a WebSocket client only reads (``publish``) or the real bridge answers
(``multa``), and the reference ``new_packet`` collector sends as many.
Skipped, saying why, without a ``zeek`` binary on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

ZEEK = shutil.which("zeek")
pytestmark = [
    pytest.mark.zeek,
    pytest.mark.skipif(ZEEK is None, reason="no zeek binary on PATH: multa bench zeek needs Zeek 8.0+"),
]


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


def test_bench_zeek_rejects_unknown_setup(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "multa_broker", "bench", "zeek", "--tiny", "10", "--setups", "plain,bogus"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "bogus" in proc.stderr and "Traceback" not in proc.stderr
