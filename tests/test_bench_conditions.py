"""``multa bench conditions``: stored models scored by the path conditions of each lab capture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from multa_broker.bench import conditions
from multa_broker.dataset.format import SPLITS, FlowDataset
from multa_broker.errors import MultaError
from multa_broker.inference import Classifier
from multa_broker.model.metrics import macro_f1
from multa_broker.model.synthetic import train_tiny

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

#: One-way delay and loss per drawn scenario: no delay, 5 ms, 40 ms, 120 ms round trips; loss on the first.
DRAWS = [(0.0, 0.01), (2.5, 0.0), (20.0, 0.0), (60.0, 0.0)]


def _as_lab_run(tmp_path: Path) -> tuple[Path, FlowDataset, FlowDataset, dict]:
    """The tiny dataset's captures renamed as one lab run's (scenario k of 4 each), with a manifest."""
    model = train_tiny(tmp_path, epochs=1)
    ds = FlowDataset.load(tmp_path / "tiny-dataset.npz")
    ds.captures = [f"lab:run/scen{i % 4}-s{i}.pcap" for i in range(len(ds.captures))]
    run = tmp_path / "run"
    run.mkdir()
    scenarios = [{"name": f"scen{i % 4}", "capture": f"scen{i % 4}-s{i}.pcap", "delay_ms": DRAWS[i % 4][0],
                  "loss": DRAWS[i % 4][1]} for i in range(len(ds.captures))]
    (run / "manifest.json").write_text(json.dumps({"scenarios": scenarios}))
    # The reference: the same flows as earlier captures "lab:old/..." (all in its test split).
    ref = FlowDataset.load(tmp_path / "tiny-dataset.npz")
    ref.captures = [f"lab:old/scen{i % 4}-s{i}.pcap" for i in range(len(ref.captures))]
    ref.split = np.full(len(ref), SPLITS.index("test"), np.int8)
    return model, ds, ref, conditions.conditions_of(run)


def test_bins_split_the_flows_by_round_trip_and_score_like_the_model(tmp_path: Path) -> None:
    model, ds, _, cond = _as_lab_run(tmp_path)
    clf = Classifier.load(model)
    res = conditions.by_bin(clf, ds, cond)
    k = ds.capture % 4
    assert res["no delay"]["flows"] == int((k == 0).sum())
    assert res["under 20 ms"]["flows"] == int((k == 1).sum())
    assert res["20-100 ms"]["flows"] == int((k == 2).sum())
    assert res["100 ms or more"]["flows"] == int((k == 3).sum())
    assert res["with loss"]["flows"] == int((k == 0).sum()) and res["all"]["flows"] == len(ds)
    probs = dict(zip(clf.tasks, clf.probabilities(ds.encoded(clf.n))))
    task = clf.tasks[0]
    y = ds.task_labels(task).astype(np.int64)
    sel = (k == 2) & (y >= 0)
    want = macro_f1(y[sel], probs[task].argmax(axis=1)[sel])
    assert res["20-100 ms"][task]["macro_f1"] == pytest.approx(want)


def test_paired_compares_each_scenario_with_its_reference_captures(tmp_path: Path) -> None:
    model, ds, ref, cond = _as_lab_run(tmp_path)
    clf = Classifier.load(model)
    res = conditions.paired(clf, ds, ref, cond)
    assert res["delayed"]["scenarios"] == 3 and res["round trip 50 ms or more"]["scenarios"] == 1
    assert res["loss only"]["scenarios"] == 1 and res["neither (control)"]["scenarios"] == 0
    # The same flows before and under: the model scores them alike.
    for group in ("delayed", "loss only"):
        for task in clf.tasks:
            if task in res[group]:
                assert res[group][task]["before"] == pytest.approx(res[group][task]["under"])
    text = conditions.render([{"model": "m", "bins": conditions.by_bin(clf, ds, cond), "paired": res}])
    assert "| 20-100 ms (" in text and "| delayed (3) | m |" in text


def test_a_folder_without_a_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(MultaError, match="no lab manifest"):
        conditions.conditions_of(tmp_path)


def test_run_scores_only_the_runs_captures_of_a_bigger_dataset(tmp_path: Path, capsys) -> None:
    model, ds, _, _ = _as_lab_run(tmp_path)
    ds.captures[0] = "arkime/other.pcap"   # a capture of another source in the same dataset
    path = tmp_path / "mixed.npz"
    ds.save(path)
    args = type("A", (), {"model": [str(model)], "lab": tmp_path / "run", "dataset": path, "split": None,
                          "reference": None, "json": True})
    assert conditions.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["bins"]["all"]["flows"] == int((ds.capture != 0).sum())
