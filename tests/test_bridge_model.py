"""The bridge's model path: fast Results == Classifier.classify, and change detection."""

from __future__ import annotations

import statistics

import pytest

from multa_broker.bridge import model as modelmod
from multa_broker.protocol import Result

from support.bridge import make_flow, write_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def lmmoe(tmp_path_factory):
    """A small untrained LMMoE in the store layout: varied, non-trivial probabilities."""
    import torch

    from multa_broker import store
    from multa_broker.model.lmmoe import LMMoE, LMMoEConfig
    from multa_broker.taxonomy import TASKS

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = LMMoEConfig(tasks={t: list(c) for t, c in TASKS.items()}, experts=2, hidden=8, tower=8)
    manifest = {"name": "small", "version": "1", "n": cfg.n,
                "tasks": [{"name": t, "classes": list(c), "threshold": 0.0} for t, c in TASKS.items()]}
    return store.export(LMMoE(cfg), manifest, tmp_path_factory.mktemp("store") / "small" / "1")


def test_fast_results_equal_classify_including_unknown(lmmoe):
    from multa_broker.inference import Classifier

    clf = Classifier.load(lmmoe)
    flows = [make_flow(i, n=1 + i % 20, proto=("tcp", "udp", "icmp")[i % 3]) for i in range(300)]
    # Thresholds at each task's median score: about half the labels become "unknown".
    for task in clf.tasks:
        clf.thresholds[task] = statistics.median(v.scores[task] for v in clf.classify(flows))
    want = modelmod.to_results(flows, clf.classify(flows), clf.tasks)
    got = modelmod.classify(clf, flows)
    assert got == want
    labels = [lb for r in got for lb in r.labels]
    assert 0.2 < labels.count("unknown") / len(labels) < 0.8
    assert all(type(s) is float for r in got for s in r.scores)
    assert modelmod.classify(clf, []) == []


def test_other_classifiers_go_through_classify():
    class Plain:
        name, tasks, n = "plain/1", ("a",), 20

        def classify(self, flows):
            from dataclasses import dataclass

            @dataclass
            class V:
                model: str
                labels: dict
                scores: dict
            return [V("plain/1", {"a": "x"}, {"a": 1}) for _ in flows]

    got = modelmod.classify(Plain(), [make_flow(1)])
    assert got == [Result("Cf000001", "plain/1", ("a",), ("x",), (1.0,))]
    assert type(got[0].scores[0]) is float  # an int score still leaves as a Broker real


def test_verdict_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 verdicts for 1 flows"):
        modelmod.to_results([make_flow(1)], [object(), object()], ("a",))


def test_fingerprint_sees_archive_manifest_and_default_pointer(tmp_path, monkeypatch):
    store_dir = tmp_path / "store"
    d = write_tiny_model(store_dir / "tiny" / "1")
    (store_dir / "DEFAULT").write_text("tiny/1\n")
    monkeypatch.setenv("MULTA_MODEL_STORE", str(store_dir))
    files = {p.name for p in modelmod.watched_files("default")}
    assert files == {"DEFAULT", "model.pt", "manifest.json"}
    fp = modelmod.fingerprint("default")
    assert modelmod.fingerprint(str(d)) != fp  # no DEFAULT in it
    write_tiny_model(store_dir / "tiny" / "2", version="2")
    assert modelmod.fingerprint("default") == fp  # another model appeared, the default did not change
    (store_dir / "DEFAULT").write_text("tiny/2\n")
    assert modelmod.fingerprint("default") != fp
    assert modelmod.fingerprint(str(tmp_path / "missing")) == ((str(tmp_path / "missing"), None, None),)
