"""The small lab for CI: one benign scenario and one scan in real namespaces, seconds long.

Needs root, working `ip netns` and the CI packages (scripts/lab-setup.sh --ci:
iproute2 ethtool tcpdump curl nmap nginx-light iptables); skips with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from multa_broker.lab import NS_PREFIX
from multa_broker.lab.labels import read
from multa_broker.lab.network import clean, list_lab_namespaces
from multa_broker.taxonomy import TASKS

TOOLS = ("ip", "tc", "ethtool", "tcpdump", "ss", "curl", "nmap", "nginx")
LAB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [t for t in TOOLS if shutil.which(t, path=LAB_PATH) is None]
    if missing:
        return f"lab tools missing: {', '.join(missing)} (scripts/lab-setup.sh --ci)"
    probe = f"{NS_PREFIX}probe-{os.getpid()}"
    p = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if p.returncode != 0:
        return f"`ip netns add` does not work here: {p.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


REASON = _lab_unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _own_namespaces(before: set[str]) -> set[str]:
    """Lab namespaces (and their /etc/netns files) that appeared since ``before``."""
    etc = Path("/etc/netns")
    files = {p.name for p in etc.iterdir() if p.name.startswith(NS_PREFIX)} if etc.is_dir() else set()
    return (set(list_lab_namespaces()) | files) - before


def _lab_state() -> set[str]:
    return _own_namespaces(set())


def test_small_lab_labels_match_the_capture(tmp_path):
    from multa_broker.capture import read_flows
    from multa_broker.lab import runner
    before = _lab_state()
    out = tmp_path / "lab"
    # Two seeds: the lab network is reused across them, and they must give different traffic.
    m = runner.run(out, ["http", "scan-syn"], seed=7, scale=0.25, repeat=2)
    assert not _own_namespaces(before), "lab namespaces left behind"
    assert m["failed"] == [] and sorted(m["scenarios_run"]) == ["http", "scan-syn"]
    records = read(out / "labels.jsonl")
    per_scenario = {s["name"]: s for s in m["scenarios"]}
    for name, s in per_scenario.items():
        assert s["packets"] > 0 and s["packets_dropped"] == 0, s
        assert s["unmatched"] == 0, s["unmatched_examples"]
        flows = list(read_flows(out / s["capture"], verify_checksums=False))
        keys = {(f.key.proto, f.key.orig_h, f.key.orig_p, f.key.resp_h, f.key.resp_p, round(f.key.ts, 6)) for f in flows}
        recs = [r for r in records if r["capture"] == s["capture"]]
        assert len(recs) == len(flows) == s["labelled"]
        for r in recs:
            assert (r["proto"], r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["ts"]) in keys
        # Offloads are off: no frame bigger than the MTU reaches the capture.
        assert max(max(f.sizes) for f in flows) <= 1500
    c = Counter((r["scenario"], r["service"], r["encrypted"], r["threat"]) for r in records)
    assert c[("http", "http", "cleartext", "benign")] >= 2
    assert c[("scan-syn", None, None, "scan")] >= 20  # one flow per probed port
    assert set(c) <= {("http", "http", "cleartext", "benign"), ("http", "dns", "cleartext", "benign"),
                      ("scan-syn", None, None, "scan"), ("scan-syn", "http", "cleartext", "benign")}
    for task, counts in m["counts"].items():
        assert sum(counts.values()) == len(records) and set(counts) <= set(TASKS[task]) | {"null"}
    http = [list(read_flows(out / f"http-s{seed}.pcap", verify_checksums=False)) for seed in (7, 8)]
    assert sorted(sum(f.sizes) for f in http[0]) != sorted(sum(f.sizes) for f in http[1])
    # Every address in the capture is a lab address.
    assert all(r["orig_h"].startswith("10.77.") and r["resp_h"].startswith("10.77.") for r in records)


def test_interrupt_cleans_up_namespaces_and_processes(tmp_path):
    """Ctrl-C in the middle of a scenario: the run stops and leaves nothing behind."""
    before = _lab_state()
    out = tmp_path / "lab"
    proc = subprocess.Popen([sys.executable, "-m", "multa_broker.cli", "lab", "run", "--out", str(out),
                             "--scenario", "http", "--quick", "--repeat", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # long enough to be interrupted
    deadline = time.monotonic() + 30
    while not (out / "logs").is_dir() or not any((out / "logs").glob("*nginx.log")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    mine = _own_namespaces(before)
    assert mine, "no lab namespace while the lab runs"
    pids = {int(p) for ns in mine for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                                        text=True).stdout.split()}
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, output
    assert not _own_namespaces(before), "namespaces left after Ctrl-C"
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert not alive, f"lab processes still running after Ctrl-C: {alive}"


def test_clean_removes_leftovers_and_their_processes():
    ns = f"{NS_PREFIX}t{os.getpid() % 10000}-srv"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "60"])
    try:
        time.sleep(0.2)
        gone = clean(f"{NS_PREFIX}t{os.getpid() % 10000}-")
        assert gone == [ns]
        assert sleeper.wait(timeout=10) != 0  # stopped by its PID, not left running
        assert ns not in list_lab_namespaces()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)

