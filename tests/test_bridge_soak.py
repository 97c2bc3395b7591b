"""``multa bench soak`` for a few seconds: every fault injected, the bridge balanced and exiting 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.bridge import write_tiny_model

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_short_soak_with_every_fault(tmp_path):
    model = write_tiny_model(tmp_path / "store" / "tiny" / "1")
    out = subprocess.run([sys.executable, "-m", "multa_broker", "-q", "bench", "soak", "--duration", "14",
                          "--fault-every", "2.5", "--rate", "400", "--model", str(model), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert set(doc["faults_injected"]) == {"restart", "garbage", "oversized", "stall"}
    assert all(n >= 1 for n in doc["faults_injected"].values()), doc["faults_injected"]
    assert doc["balanced"] and doc["bridge_exit_code"] == 0
    n = doc["faults_injected"]
    assert doc["malformed"].get("bad_json") == n["garbage"] and doc["malformed"].get("too_deep") == n["garbage"]
    assert doc["malformed"].get("too_big") == n["oversized"]
    assert doc["dropped"].get("invalid") == n["garbage"]
    assert doc["reconnects"] >= 3  # restart, oversized, stall
    assert doc["flows_out"] > 1000


def test_soak_duration_is_bounded():
    out = subprocess.run([sys.executable, "-m", "multa_broker", "bench", "soak", "--duration", "99999"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "--duration must be within" in out.stderr and "Traceback" not in out.stderr
