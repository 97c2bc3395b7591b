"""``multa bench seeds``: out-of-source figures of several loso runs, with their spread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from multa_broker.bench import seeds as bench
from multa_broker.errors import MultaError

CLASSES = ["benign", "scan", "dos"]


def _run(folder: Path, preds: dict[str, dict[str, list[int]]], labels: dict[str, list[int]]) -> Path:
    folder.mkdir()
    arrays = {}
    for fold, y in labels.items():
        arrays[f"{fold}|labels|threat"] = np.array(y)
        for model, by_fold in preds.items():
            p = np.zeros((len(y), len(CLASSES)), np.float32)
            p[np.arange(len(y)), by_fold[fold]] = 1.0
            arrays[f"{fold}|{model}|threat|probs"] = p
    np.savez(folder / "oos.npz", **arrays)
    (folder / "loso.json").write_text(json.dumps({"classes": {"threat": CLASSES}, "tasks": ["threat"]}))
    return folder


LABELS = {"stopddos": [2, 2, 2, 2], "lab/scan": [1, 1, 1, 1, 1, 1, 0, 0, -1]}


def test_fold_mean_pooled_figure_and_wins_over_runs(tmp_path: Path) -> None:
    right = {"stopddos": [2, 2, 2, 2], "lab/scan": [1, 1, 1, 1, 1, 1, 0, 0, 0]}
    half = {"stopddos": [2, 2, 0, 0], "lab/scan": [1, 1, 1, 1, 1, 1, 0, 0, 0]}
    a = _run(tmp_path / "s1", {"lmmoe": right, "classical": half}, LABELS)
    b = _run(tmp_path / "s2", {"lmmoe": half, "classical": right}, LABELS)
    res = bench.compare([a, b])
    lm, cl = res["tasks"]["threat"]["lmmoe"], res["tasks"]["threat"]["classical"]
    assert lm["mean"][0] == pytest.approx(1.0) and lm["pooled"][0] == pytest.approx(1.0)
    # half the floods called benign: dos F1 2/3 in its fold (mean (2/3 + 1) / 2); pooled over all
    # three classes: benign P 2/4 R 1, scan 1, dos P 1 R 1/2.
    assert lm["mean"][1] == pytest.approx((2 / 3 + 1) / 2)
    assert lm["pooled"][1] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert cl["mean"] == pytest.approx(lm["mean"][::-1])
    assert lm["runs_at_least_classical"] == 1
    text = bench.render(res)
    assert "| threat | lmmoe |" in text and "LMMoE >= classical in 1/2" in text


def test_runs_of_different_datasets_are_refused(tmp_path: Path) -> None:
    right = {"stopddos": [2, 2, 2, 2], "lab/scan": [1, 1, 1, 1, 1, 1, 0, 0, 0]}
    a = _run(tmp_path / "s1", {"lmmoe": right}, LABELS)
    b = _run(tmp_path / "s2", {"lmmoe": {"stopddos": right["stopddos"]}}, {"stopddos": LABELS["stopddos"]})
    with pytest.raises(MultaError, match="different sources"):
        bench.compare([a, b])
    with pytest.raises(MultaError, match="cannot read the tasks"):
        bench.compare([tmp_path])
    (a / "oos.npz").unlink()
    with pytest.raises(MultaError, match="no oos.npz"):
        bench.compare([a])
