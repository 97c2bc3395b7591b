"""`multa lab run --resume`: the scenario runs a stopped run finished are kept, the rest run.

The traffic is faked (no namespaces, no root): what is tested is the bookkeeping of
outcomes.jsonl and labels.jsonl across a stop.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from multa_broker.lab import labels as lab_labels
from multa_broker.lab import runner


class _Stop(Exception):
    pass


@pytest.fixture
def fake_lab(monkeypatch):
    ran: list[tuple[str, int]] = []
    stop_at: list[tuple[str, int]] = []

    def run_one(name, net, out, work, seed, scale):
        if (name, seed) in stop_at:
            # Stopped while writing this capture's labels: one line of three, then nothing.
            (out / f"{name}-s{seed}.pcap").write_bytes(b"partial")
            lab_labels.write(out / "labels.jsonl", [{"capture": f"{name}-s{seed}.pcap", "n": 0}])
            raise _Stop()
        ran.append((name, seed))
        capture = f"{name}-s{seed}.pcap"
        (out / capture).write_bytes(b"pcap")
        lab_labels.write(out / "labels.jsonl", [{"capture": capture, "n": i} for i in range(3)])
        return runner.Outcome(name, "benign", "ran", seed, capture=capture, labelled=3)

    monkeypatch.setattr(runner, "_run_one", run_one)
    monkeypatch.setattr(runner, "preflight", lambda: None)
    monkeypatch.setattr(runner, "Network", lambda run_id: contextlib.nullcontext())
    monkeypatch.setattr(runner, "_manifest", lambda out, seeds, scale, run_id, started, outcomes:
                        {"scenarios": [o.name + str(o.seed) for o in outcomes]})
    return ran, stop_at


def _labels(out):
    return [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]


def test_resume_keeps_finished_runs_and_redoes_the_cut_one(tmp_path, fake_lab):
    ran, stop_at = fake_lab
    out = tmp_path / "lab"
    stop_at.append(("ftp", 2))
    with pytest.raises(_Stop):
        runner.run(out, ["http", "ftp"], seed=1, repeat=2)
    assert ran == [("http", 1), ("ftp", 1), ("http", 2)]
    ran.clear()
    stop_at.clear()
    m = runner.run(out, ["http", "ftp"], seed=1, repeat=3, resume=True)
    assert ran == [("ftp", 2), ("http", 3), ("ftp", 3)]
    assert m["scenarios"] == ["http1", "ftp1", "http2", "ftp2", "http3", "ftp3"]
    per_capture = {}
    for r in _labels(out):
        per_capture[r["capture"]] = per_capture.get(r["capture"], 0) + 1
    assert per_capture == {f"{n}-s{s}.pcap": 3 for n in ("http", "ftp") for s in (1, 2, 3)}
    kept = [json.loads(line) for line in (out / runner.OUTCOMES_FILE).read_text().splitlines()]
    assert len(kept) == 6 and all(o["status"] == "ran" for o in kept)


def test_resume_redoes_a_run_whose_capture_is_gone_or_of_another_scale(tmp_path, fake_lab):
    ran, _ = fake_lab
    out = tmp_path / "lab"
    runner.run(out, ["http", "ftp"], seed=1)
    (out / "ftp-s1.pcap").unlink()
    ran.clear()
    runner.run(out, ["http", "ftp"], seed=1, resume=True)
    assert ran == [("ftp", 1)]
    ran.clear()
    runner.run(out, ["http", "ftp"], seed=1, scale=0.25, resume=True)  # --quick: nothing of the full run fits
    assert ran == [("http", 1), ("ftp", 1)]
    assert {r["capture"] for r in _labels(out)} == {"http-s1.pcap", "ftp-s1.pcap"} and len(_labels(out)) == 6


def test_without_resume_a_run_starts_afresh(tmp_path, fake_lab):
    ran, _ = fake_lab
    out = tmp_path / "lab"
    runner.run(out, ["http"], seed=1)
    ran.clear()
    runner.run(out, ["http"], seed=1)
    assert ran == [("http", 1)] and len(_labels(out)) == 3


def test_resume_refuses_labels_it_has_no_outcomes_for(tmp_path, fake_lab):
    """A folder from before --resume (labels, no outcomes.jsonl) is left exactly as it was."""
    from multa_broker.errors import MultaError

    ran, _ = fake_lab
    out = tmp_path / "lab"
    out.mkdir()
    old = '{"capture": "http-s1.pcap", "n": 0}\n'
    (out / "labels.jsonl").write_text(old)
    (out / "http-s1.pcap").write_bytes(b"pcap")
    with pytest.raises(MultaError, match="no outcomes.jsonl"):
        runner.run(out, ["http"], seed=1, resume=True)
    assert ran == []
    assert (out / "labels.jsonl").read_text() == old
    assert not (out / "outcomes.jsonl").exists()


def test_a_restarted_daemon_reads_only_its_own_output(tmp_path, monkeypatch):
    # A resumed run starts daemons under the names an earlier attempt used, and their logs are
    # appended to: a wait for "Connection setup complete" must not be met by the earlier attempt's.
    import subprocess

    from multa_broker.lab import procs

    real = subprocess.Popen

    def popen(argv, stdout, **kw):
        stdout.write(b"Connection setup complete\n" if "first" in argv else b"Retrying upstream codec test...\n")
        return real(["true"])

    monkeypatch.setattr(procs.subprocess, "Popen", popen)
    p = procs.Procs(tmp_path, {})
    first = p.start("ns", ["iodine", "first"], "iodine-client0")
    assert "Connection setup complete" in first.log_text()
    again = p.start("ns", ["iodine", "again"], "iodine-client0")
    assert again.log_path == first.log_path
    assert again.log_text() == "Retrying upstream codec test...\n"
    assert "Connection setup complete" in first.log_text()  # the whole file from its own start
