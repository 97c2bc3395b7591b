"""Classification metrics: accuracy, macro-F1, confusion matrices, calibration error."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in ``y``.

    Classes absent from the evaluated split are left out of the average (their
    F1 is undefined); predicting them still costs the true class its recall.
    """
    if len(y) == 0:
        return float("nan")
    return float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0))


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the max-probability score (equal-width bins)."""
    if len(y) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            total += sel.mean() * abs(conf[sel].mean() - correct[sel].mean())
    return float(total)


def task_report(y: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                threshold: float | None = None) -> dict[str, Any]:
    """Metrics of one task on the rows that carry its label."""
    pred = probs.argmax(axis=1) if len(y) else np.zeros(0, np.int64)
    out: dict[str, Any] = {
        "rows": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "macro_f1": macro_f1(y, pred),
        "ece": ece(probs, y),
        "support": {c: int((y == i).sum()) for i, c in enumerate(classes)},
        "confusion": confusion_matrix(y, pred, labels=list(range(len(classes)))).tolist() if len(y) else [],
    }
    if threshold is not None and len(y):
        accepted = probs.max(axis=1) >= threshold
        out["open_set"] = {
            "threshold": float(threshold),
            "coverage": float(accepted.mean()),
            "accuracy_accepted": float((pred[accepted] == y[accepted]).mean()) if accepted.any() else float("nan"),
        }
    return out


def mean_macro_f1(reports: dict[str, dict[str, Any]]) -> float:
    vals = [r["macro_f1"] for r in reports.values() if r["rows"] > 0 and np.isfinite(r["macro_f1"])]
    return float(np.mean(vals)) if vals else float("nan")
