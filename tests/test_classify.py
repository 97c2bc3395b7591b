"""Offline classification: the Classifier API the bridge uses, and `multa classify` on real captures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multa_broker.cli import main
from multa_broker.errors import MultaError
from multa_broker.flow import Flow, FlowKey, encode
from multa_broker.inference import Classifier, Verdict, parse_thresholds
from multa_broker.model.synthetic import SMALL_TASKS, train_tiny
from multa_broker.taxonomy import UNKNOWN

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

CAPTURES = ("zeek-traces/conn-size.pcap", "zeek-traces/dns/dns_notify2.pcap")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("clf"), epochs=2)


def _flows() -> list[Flow]:
    return [
        Flow(FlowKey("tcp", "10.0.0.1", 40000, "10.0.0.2", 443, 1.0), [60, 60, 52, 517, 1500], [True, False, True, True, False],
             [0, 1000, 20, 300, 40000]),
        Flow(FlowKey("udp", "10.0.0.1", 5353, "10.0.0.3", 53, 2.0), [70], [True], [0]),
    ]


def test_classifier_api(model_dir: Path) -> None:
    clf = Classifier.load(model_dir, threads=1)
    assert clf.name == "tiny/1"
    assert clf.tasks == tuple(SMALL_TASKS) and clf.n == 20
    assert clf.classes == {k: tuple(v) for k, v in SMALL_TASKS.items()}
    verdicts = clf.classify(_flows())
    assert len(verdicts) == 2 and all(isinstance(v, Verdict) for v in verdicts)
    for v in verdicts:
        assert v.model == "tiny/1"
        assert set(v.labels) == set(clf.tasks) == set(v.scores)
        for t in clf.tasks:
            assert 0.0 <= v.scores[t] <= 1.0
            assert v.labels[t] in clf.classes[t] + (UNKNOWN,)
    assert clf.classify_batch(encode(_flows(), 20)) == verdicts
    assert clf.classify([]) == []


def test_scores_are_the_calibrated_max_probability(model_dir: Path) -> None:
    clf = Classifier.load(model_dir)
    probs = clf.probabilities(encode(_flows(), 20))
    for t, p in zip(clf.tasks, probs):
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
        got = [v.scores[t] for v in clf.classify(_flows())]
        np.testing.assert_allclose(got, p.max(axis=1), rtol=1e-6)


def test_thresholds_turn_low_scores_into_unknown(model_dir: Path) -> None:
    strict = Classifier.load(model_dir, thresholds="1.0")
    checked = [(v.labels[t], v.scores[t]) for v in strict.classify(_flows()) for t in strict.tasks]
    assert all(label == UNKNOWN for label, score in checked if score < 1.0)
    assert any(score < 1.0 for _, score in checked)
    loose = Classifier.load(model_dir, thresholds={"service": 0.0})
    assert all(v.labels["service"] != UNKNOWN for v in loose.classify(_flows()))
    assert loose.thresholds["service"] == 0.0
    assert loose.thresholds["threat"] == Classifier.load(model_dir).thresholds["threat"]


def test_threshold_specs() -> None:
    tasks = ("service", "threat")
    assert parse_thresholds("service=0.6, threat=0.8", tasks) == {"service": 0.6, "threat": 0.8}
    assert parse_thresholds(0.3, tasks) == {"service": 0.3, "threat": 0.3}
    assert parse_thresholds(None, tasks) == {}
    with pytest.raises(MultaError, match="no task 'tunnel'"):
        parse_thresholds("tunnel=0.5", tasks)
    with pytest.raises(MultaError, match="outside 0..1"):
        parse_thresholds("service=2", tasks)
    with pytest.raises(MultaError, match="not task=number"):
        parse_thresholds("service=high", tasks)


def test_flows_wider_than_the_model_are_truncated(model_dir: Path) -> None:
    clf = Classifier.load(model_dir)
    long = Flow(FlowKey("tcp", "10.0.0.1", 1, "10.0.0.2", 2, 0.0), [100] * 40, [True, False] * 20, [0] + [10] * 39)
    assert clf.classify_batch(encode([long], 40)) == clf.classify([long])


def test_multa_classify_on_real_captures(model_dir: Path, shared_data: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from multa_broker.capture import read_flows

    paths = [shared_data / c for c in CAPTURES]
    if not all(p.exists() for p in paths):
        pytest.skip("the small zeek-traces captures are absent")
    bad = tmp_path / "broken.pcap"
    bad.write_bytes(b"this is not a capture at all")
    rc = main(["classify", str(paths[0]), str(bad), str(paths[1]), "--model", str(model_dir), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and str(bad) in errors[0]
    records = [json.loads(line) for line in out.splitlines()]
    expected = [f for p in paths for f in read_flows(p, n=20)]
    assert len(records) == len(expected) > 0
    for rec, flow in zip(records, expected):
        assert (rec["proto"], rec["orig_h"], rec["orig_p"], rec["resp_h"], rec["resp_p"]) == flow.key.tuple5
        assert rec["ts"] == pytest.approx(flow.key.ts) and rec["packets"] == flow.packets
        assert rec["model"] == "tiny/1"
        assert set(rec["results"]) == set(SMALL_TASKS)
        for task, r in rec["results"].items():
            assert r["label"] in SMALL_TASKS[task] + [UNKNOWN] and 0 <= r["score"] <= 1

    rc = main(["classify", str(paths[0]), "--model", str(model_dir), "--format", "table", "--no-progress"])
    out, _ = capsys.readouterr()
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["ts", "proto", "orig", "resp", "pkts"]
    assert len(lines) == 1 + len(list(read_flows(paths[0], n=20)))


def test_multa_classify_refuses_a_tampered_model(model_dir: Path, tmp_path: Path, shared_data: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    bad = tmp_path / "m"
    shutil.copytree(model_dir, bad)
    (bad / "manifest.json").write_text((bad / "manifest.json").read_text().replace('"tiny"', '"other"'))
    rc = main(["classify", str(shared_data / CAPTURES[0]), "--model", str(bad), "--no-progress"])
    _, err = capsys.readouterr()
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "manifest" in err
