"""The real bridge process against a real Zeek 8 (offline mode over the WebSocket API).

Zeek reads a capture with the package loaded (zeek_scripts/ + offline.zeek),
waits for the bridge, sends every connection's first packets, and writes
``multa.log`` from the bridge's results. This is the wire contract checked
end to end: if one field had the wrong Broker type, Zeek would refuse the
whole ``Multa::results`` event and log nothing. Skipped without a zeek binary
or without the shared captures.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multa_broker.bench.loopback import free_port
from support.bridge import write_tiny_model

pytestmark = [pytest.mark.zeek, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO = Path(__file__).resolve().parent.parent


def _zeek() -> str:
    z = shutil.which("zeek") or ("/opt/zeek/bin/zeek" if os.access("/opt/zeek/bin/zeek", os.X_OK) else None)
    if z is None:
        pytest.skip("no zeek binary (PATH or /opt/zeek/bin/zeek)")
    return z


def _log(path: Path) -> list[dict[str, str]]:
    """Rows of a Zeek TSV log as dicts."""
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"))))
    return rows


@pytest.mark.parametrize("capture", ["zeek-traces/http/get.pcap", "ndpi/pcap/EAQ.pcap", "ndpi/pcap/conncheck.pcap"])
def test_zeek_logs_a_verdict_for_every_flow_it_sent(shared_data, tmp_path, capture):
    zeek = _zeek()
    pcap = shared_data / capture
    if not pcap.is_file():
        pytest.skip(f"{pcap} not in the shared corpus")
    model = write_tiny_model(tmp_path / "store" / "tiny" / "1")
    port = free_port()
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(yaml.safe_dump({
        "websocket": {"url": f"ws://127.0.0.1:{port}/v1/messages/json"},
        "model": {"path": str(model), "poll_s": 0},
        "metrics": {"enabled": False},
        "reconnect": {"initial_s": 0.1, "max_s": 0.5},
    }))
    bridge = subprocess.Popen([sys.executable, "-m", "multa_broker", "bridge", "-c", str(cfg)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        work = tmp_path / "zeek"
        work.mkdir()
        z = subprocess.run([zeek, "-C", "-r", str(pcap), str(REPO / "zeek_scripts"),
                            str(REPO / "zeek_scripts" / "offline.zeek"), f"Multa::websocket_port={port}/tcp"],
                           cwd=work, capture_output=True, text=True, timeout=120)
        assert z.returncode == 0, z.stderr[-2000:]
    finally:
        bridge.send_signal(signal.SIGTERM)
        _, err = bridge.communicate(timeout=30)
    assert bridge.returncode == 0, err[-2000:]

    conns = {r["uid"]: r for r in _log(work / "conn.log")}
    rows = _log(work / "multa.log")
    assert rows, f"no verdicts; reporter.log: {(work / 'reporter.log').read_text()[-1500:]}"
    assert len({r["uid"] for r in rows}) == len(rows)
    for r in rows:
        assert r["model"] == "tiny/1"
        # The tiny model says dns for UDP and tls otherwise (tests/support/bridge.py).
        proto = conns[r["uid"]]["proto"]
        assert r["service"] == ("dns" if proto == "udp" else "tls"), (r, proto)
        assert r["encrypted"] in ("encrypted", "cleartext")
        assert 0.0 < float(r["service_score"]) <= 1.0
    # Zeek refused nothing: no conversion errors, nothing left waiting for a result.
    reporter = (work / "reporter.log").read_text() if (work / "reporter.log").exists() else ""
    assert "failed to create Zeek event" not in reporter and "gave up waiting" not in reporter, reporter
    # The bridge answered everything it received (its exit summary).
    summary = [line for line in err.splitlines() if "stopped:" in line][-1]
    counts = dict(kv.split("=") for kv in summary.split("stopped: ")[1].split(", "))
    assert counts["flows_in"] == counts["flows_out"] == str(len(rows)), summary
