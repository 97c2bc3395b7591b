"""``multa bench versus``: stored models scored side by side on one dataset's split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from multa_broker.bench import versus
from multa_broker.dataset.format import FlowDataset
from multa_broker.inference import Classifier
from multa_broker.model.metrics import macro_f1
from multa_broker.model.synthetic import train_tiny

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")


def test_scores_equal_the_models_own_predictions(tmp_path: Path) -> None:
    model = train_tiny(tmp_path, epochs=2)
    ds = FlowDataset.load(tmp_path / "tiny-dataset.npz").split_rows("test")
    res = versus.score(str(model), ds)
    clf = Classifier.load(model)
    probs = dict(zip(clf.tasks, clf.probabilities(ds.encoded(clf.n))))
    for task in clf.tasks:
        y = ds.task_labels(task).astype(np.int64)
        sel = y >= 0
        want = macro_f1(y[sel], probs[task].argmax(axis=1)[sel])
        assert res["tasks"][task]["macro_f1"] == pytest.approx(want)
        assert res["tasks"][task]["rows"] == int(sel.sum())
    text = versus.render([res, res], tmp_path / "d.npz", "test")
    assert text.count("tiny/1") == 4 and "Per source" in text  # two models, two tables


def test_a_missing_dataset_is_named(tmp_path: Path, capsys) -> None:
    from multa_broker.errors import MultaError

    args = type("A", (), {"dataset": tmp_path / "none.npz", "model": ["default"], "split": "test", "json": False,
                          "unseen_in": []})
    with pytest.raises(MultaError, match="none.npz"):
        versus.run(args)


def test_unseen_in_keeps_only_captures_the_other_build_never_fitted(tmp_path: Path) -> None:
    from multa_broker.dataset.format import SPLITS

    train_tiny(tmp_path, epochs=1)
    ds = FlowDataset.load(tmp_path / "tiny-dataset.npz")
    other = FlowDataset.load(tmp_path / "tiny-dataset.npz")
    # In the other build, the first test capture was a training capture; one capture it lacks entirely.
    test_caps = sorted({int(c) for c in ds.capture[ds.split == SPLITS.index("test")]})
    other.split = np.where(other.capture == test_caps[0], SPLITS.index("train"), other.split).astype(np.int8)
    other.captures = [("renamed-" + n if i == test_caps[1] else n) for i, n in enumerate(other.captures)]
    kept = versus.unseen_in(ds.split_rows("test"), other)
    caps = set(np.unique(kept.capture).tolist())
    assert test_caps[0] not in caps and test_caps[1] in caps
    assert caps == set(test_caps) - {test_caps[0]}
