"""Thresholds calibrated out of source: when to say ``unknown``, when to raise a notice.

Validation rows come from the same captures as training, so a threshold
picked there trusts scores that collapse on traffic from elsewhere. These
thresholds are picked on the leave-one-source-out predictions instead
(``oos.npz`` of ``multa train --eval loso``): every score there is one the
model gave to a source it never trained on.

* **Open set** (per task): the score below which a label becomes
  ``unknown``. The chosen threshold maximises *correct accepted minus wrong
  accepted* over the out-of-source predictions: a score band is kept when
  its predictions are right more often than wrong.
* **Notices** (per threat class): the smallest score at which at most
  ``max_fp`` (0.5%) of out-of-source *benign* flows would raise that
  class's ``Multa::Threat`` notice.

Reported figures are cross-validated over the folds: fold k is scored with
thresholds picked on the other folds only, so no figure is measured on the
data that set its threshold. The thresholds shipped are picked on all folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Largest share of out-of-source benign flows a notice threshold may flag.
MAX_FP = 0.005
#: Candidate thresholds (scores are max softmax probabilities).
GRID = np.round(np.concatenate([np.arange(0.30, 0.90, 0.01), np.arange(0.90, 0.999, 0.002), [0.999]]), 4)
#: A notice threshold needs this many out-of-source benign flows to be measured at all.
MIN_BENIGN = 200


@dataclass
class FoldPreds:
    fold: str
    y: np.ndarray       # int labels, -1 missing
    probs: np.ndarray   # [F, C]


def load_oos(path: str | Path, model: str = "lmmoe") -> dict[str, list[FoldPreds]]:
    """{task: [per-fold predictions]} of one model from ``oos.npz``."""
    out: dict[str, list[FoldPreds]] = {}
    with np.load(path) as z:
        for key in z.files:
            fold, kind, *rest = key.split("|")
            if kind != model:
                continue
            task = rest[0]
            y = z[f"{fold}|labels|{task}"]
            out.setdefault(task, []).append(FoldPreds(fold, y, z[key]))
    return out


def _labelled(preds: list[FoldPreds]) -> tuple[np.ndarray, np.ndarray]:
    ys = [p.y[p.y >= 0] for p in preds]
    ps = [p.probs[p.y >= 0] for p in preds]
    if not ys:
        return np.zeros(0, np.int64), np.zeros((0, 1))
    return np.concatenate(ys), np.concatenate(ps)


def open_set_threshold(y: np.ndarray, probs: np.ndarray) -> float:
    """The threshold maximising correct-accepted minus wrong-accepted (0 when nothing is labelled)."""
    if len(y) == 0:
        return 0.0
    score = probs.max(axis=1)
    right = probs.argmax(axis=1) == y
    gains = [int((right & (score >= t)).sum()) - int((~right & (score >= t)).sum()) for t in GRID]
    best = float(GRID[int(np.argmax(gains))])
    # Accepting everything is better than any cut: no threshold.
    everything = int(right.sum()) - int((~right).sum())
    return 0.0 if everything >= max(gains) else best


def open_set_counts(y: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, int]:
    score = probs.max(axis=1) if len(y) else np.zeros(0)
    right = probs.argmax(axis=1) == y if len(y) else np.zeros(0, bool)
    acc = score >= threshold
    return {"rows": int(len(y)), "accepted": int(acc.sum()), "correct_accepted": int((right & acc).sum()),
            "correct": int(right.sum())}


def notice_threshold(y: np.ndarray, probs: np.ndarray, cls: int, benign: int, max_fp: float = MAX_FP) -> float | None:
    """Smallest grid score at which at most ``max_fp`` of benign flows are called ``cls``; None if unmeasurable."""
    ben = y == benign
    if ben.sum() < MIN_BENIGN:
        return None
    flagged = (probs[ben].argmax(axis=1) == cls)
    score = probs[ben, cls]
    for t in GRID:
        if (flagged & (score >= t)).mean() <= max_fp:
            return float(t)
    return 1.0


def notice_counts(y: np.ndarray, probs: np.ndarray, cls: int, benign: int, threshold: float) -> dict[str, int]:
    hit = (probs.argmax(axis=1) == cls) & (probs[:, cls] >= threshold)
    ben, pos = y == benign, y == cls
    return {"benign_flows": int(ben.sum()), "false_positives": int((hit & ben).sum()),
            "flows": int(pos.sum()), "detected": int((hit & pos).sum())}


def rates(counts: dict[str, int]) -> dict[str, float]:
    """Rates from summed counts (open-set or notice counts)."""
    def div(a: str, b: str) -> float:
        return counts[a] / counts[b] if counts.get(b) else float("nan")
    if "accepted" in counts:
        return {"coverage": div("accepted", "rows"), "accuracy_accepted": div("correct_accepted", "accepted"),
                "accuracy_all": div("correct", "rows")}
    return {"fp_rate": div("false_positives", "benign_flows"), "recall": div("detected", "flows")}


#: The Zeek package's default notice thresholds (``Multa::threat_thresholds`` and
#: ``Multa::default_threat_threshold`` in zeek_scripts/main.zeek; a test pins them).
PACKAGE_NOTICE_THRESHOLDS: dict[str, float] = {"scan": 0.9, "bruteforce": 0.98, "dos": 0.9, "c2": 0.8, "exploit": 0.9}
PACKAGE_DEFAULT_THRESHOLD = 0.9


def calibrate(oos: dict[str, list[FoldPreds]], classes: dict[str, list[str]], max_fp: float = MAX_FP,
              threat_task: str = "threat", benign: str = "benign") -> dict[str, Any]:
    """Open-set thresholds per task and notice thresholds per threat class, with cross-validated figures."""
    result: dict[str, Any] = {"open_set": {}, "notice": {}, "max_fp": max_fp}
    for task, preds in oos.items():
        y, p = _labelled(preds)
        cv = _cross_validated(preds, lambda yy, pp: open_set_threshold(yy, pp), open_set_counts)
        result["open_set"][task] = {"threshold": open_set_threshold(y, p), "cross_validated": cv}
    if threat_task in oos and benign in classes.get(threat_task, []):
        preds = oos[threat_task]
        b = classes[threat_task].index(benign)
        y, p = _labelled(preds)
        for c, name in enumerate(classes[threat_task]):
            if c == b:
                continue
            t = notice_threshold(y, p, c, b, max_fp)
            cv = _cross_validated(preds, lambda yy, pp, c=c: notice_threshold(yy, pp, c, b, max_fp),
                                  lambda yy, pp, tt, c=c: notice_counts(yy, pp, c, b, tt))
            result["notice"][name] = {"threshold": t, "cross_validated": cv}
            fixed = PACKAGE_NOTICE_THRESHOLDS.get(name, PACKAGE_DEFAULT_THRESHOLD)
            counts = notice_counts(y, p, c, b, fixed)
            result.setdefault("package_defaults", {})[name] = {"threshold": fixed, **counts, **rates(counts)}
    return result


def _cross_validated(preds: list[FoldPreds], pick, counts) -> dict[str, Any]:
    """Each fold scored with the threshold picked on the other folds; counts summed over folds."""
    total: dict[str, int] = {}
    for k, fold in enumerate(preds):
        others = [p for j, p in enumerate(preds) if j != k]
        yo, po = _labelled(others)
        if len(yo) == 0:  # nothing else to pick a threshold on: this fold gets no figure
            continue
        t = pick(yo, po)
        yk, pk = fold.y[fold.y >= 0], fold.probs[fold.y >= 0]
        if t is None or len(yk) == 0:
            continue
        for name, v in counts(yk, pk, t).items():
            total[name] = total.get(name, 0) + v
    return {**total, **rates(total)} if total else {}


def markdown(calib: dict[str, Any]) -> str:
    """Open-set and notice thresholds with their cross-validated out-of-source figures."""
    lines = ["Open set, calibrated out of source (figures cross-validated over the folds):", "",
             "| task | threshold | coverage | accuracy when accepted | accuracy on all |", "|---|---:|---:|---:|---:|"]
    for task, o in calib["open_set"].items():
        cv = o["cross_validated"]
        lines.append(f"| {task} | {o['threshold']:.3f} | {_f(cv.get('coverage'))} | "
                     f"{_f(cv.get('accuracy_accepted'))} | {_f(cv.get('accuracy_all'))} |")
    lines += ["", f"Notice thresholds: the smallest score with at most {calib['max_fp']:.1%} of out-of-source "
              "benign flows flagged (figures cross-validated over the folds):", "",
              "| threat class | threshold | benign flows | false positives | FP rate | class flows | recall |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for cls, o in calib["notice"].items():
        cv = o["cross_validated"]
        t = "n/a" if o["threshold"] is None else f"{o['threshold']:.3f}"
        lines.append(f"| {cls} | {t} | {cv.get('benign_flows', 0):.0f} | {cv.get('false_positives', 0):.0f} | "
                     f"{_f(cv.get('fp_rate'))} | {cv.get('flows', 0):.0f} | {_f(cv.get('recall'))} |")
    if calib.get("package_defaults"):
        lines += ["", "At the Zeek package's default notice thresholds (`Multa::threat_thresholds`), pooled over "
                  "the left-out sources:", "",
                  "| threat class | threshold | benign flows | false positives | FP rate | class flows | recall |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for cls, o in calib["package_defaults"].items():
            lines.append(f"| {cls} | {o['threshold']:.2f} | {o['benign_flows']} | {o['false_positives']} | "
                         f"{_f(o.get('fp_rate'))} | {o['flows']} | {_f(o.get('recall'))} |")
    return "\n".join(lines) + "\n"


def _f(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"
