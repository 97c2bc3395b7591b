"""``multa bench context``: threat figures of two loso runs, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from multa_broker.bench import context as bench
from multa_broker.errors import MultaError

CLASSES = ["benign", "scan", "dos"]


def _run(folder: Path, preds: dict[str, list[int]], labels: dict[str, list[int]]) -> Path:
    folder.mkdir()
    arrays = {}
    for fold, y in labels.items():
        arrays[f"{fold}|labels|threat"] = np.array(y)
        p = np.zeros((len(y), len(CLASSES)), np.float32)
        p[np.arange(len(y)), preds[fold]] = 1.0
        for model in ("lmmoe", "classical"):
            arrays[f"{fold}|{model}|threat|probs"] = p
    np.savez(folder / "oos.npz", **arrays)
    (folder / "loso.json").write_text(json.dumps({"classes": {"threat": CLASSES}}))
    return folder


def test_side_by_side_figures_and_confusion(tmp_path: Path) -> None:
    labels = {"stopddos": [2, 2, 2, 2], "lab/scan": [1, 1, 0, -1]}
    without = _run(tmp_path / "off", {"stopddos": [1, 1, 1, 2], "lab/scan": [2, 1, 0, 0]}, labels)
    with_ = _run(tmp_path / "on", {"stopddos": [2, 2, 2, 2], "lab/scan": [1, 1, 0, 0]}, labels)
    res = bench.compare(with_, without, "threat")
    assert res["folds"] == ["lab/scan", "stopddos"]
    assert res["per_fold"]["lab/scan"]["lmmoe"]["with"] == pytest.approx(1.0)
    assert res["per_fold"]["stopddos"]["lmmoe"]["with"] == pytest.approx(1.0)
    # Without: the flood fold has 1 of 4 right (macro-F1 over the classes present: dos only).
    assert res["per_fold"]["stopddos"]["lmmoe"]["without"] < 0.5
    cm = np.array(res["confusion"]["lmmoe"]["without"])
    assert cm[2, 1] == 3 and cm[1, 2] == 1      # floods called scans, a scan called a flood
    assert np.array(res["confusion"]["lmmoe"]["with"])[2, 2] == 4
    text = bench.render(res)
    assert "| stopddos |" in text and "pooled confusion" in text


def test_a_folder_without_a_finished_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(MultaError, match="no oos.npz"):
        bench.compare(tmp_path, tmp_path, "threat")
