"""Out-of-source thresholds: picked where they should be, and reported only on folds that did not pick them."""

from __future__ import annotations

import numpy as np

from multa_broker.model import thresholds as th


def _probs(pred: np.ndarray, score: np.ndarray, classes: int) -> np.ndarray:
    p = np.full((len(pred), classes), 0.0)
    rest = (1 - score) / (classes - 1)
    p[:] = rest[:, None]
    p[np.arange(len(pred)), pred] = score
    return p


def test_open_set_threshold_cuts_where_predictions_turn_mostly_wrong() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    score = rng.uniform(0.34, 1.0, 2000)
    right = score >= 0.6            # right above 0.6, wrong below
    pred = np.where(right, y, (y + 1) % 3)
    t = th.open_set_threshold(y, _probs(pred, score, 3))
    assert 0.58 <= t <= 0.62
    c = th.rates(th.open_set_counts(y, _probs(pred, score, 3), t))
    assert c["accuracy_accepted"] > 0.97 and c["accuracy_all"] < 0.7


def test_open_set_threshold_is_zero_when_everything_is_right() -> None:
    y = np.arange(300) % 3
    assert th.open_set_threshold(y, _probs(y, np.full(300, 0.5), 3)) == 0.0


def test_notice_threshold_keeps_benign_false_positives_under_the_cap() -> None:
    rng = np.random.default_rng(1)
    benign, scan = 0, 1
    y = np.r_[np.zeros(5000, int), np.ones(500, int)]
    # Benign flows called scan with scores up to 0.95; real scans score 0.97+.
    pred = np.r_[np.where(rng.random(5000) < 0.05, scan, benign), np.full(500, scan)]
    score = np.r_[rng.uniform(0.5, 0.95, 5000), rng.uniform(0.97, 1.0, 500)]
    p = _probs(pred, score, 3)
    t = th.notice_threshold(y, p, scan, benign, max_fp=0.005)
    counts = th.notice_counts(y, p, scan, benign, t)
    assert counts["false_positives"] / counts["benign_flows"] <= 0.005
    assert th.notice_threshold(y, p, scan, benign, max_fp=0.005) > th.notice_threshold(y, p, scan, benign, max_fp=0.05)
    assert counts["detected"] == 500
    assert th.notice_threshold(y[:100], p[:100], scan, benign) is None  # too few benign flows to measure


def test_cross_validation_scores_each_fold_with_the_other_folds_threshold() -> None:
    # Fold a: right above 0.5; fold b: right only above 0.9. Picked on b, fold a's cut is high, and vice versa.
    rng = np.random.default_rng(2)
    folds = []
    for name, cut in (("a", 0.5), ("b", 0.9)):
        y = rng.integers(0, 2, 1000)
        score = rng.uniform(0.5, 1.0, 1000)
        pred = np.where(score >= cut, y, 1 - y)
        folds.append(th.FoldPreds(name, y, _probs(pred, score, 2)))
    calib = th.calibrate({"encrypted": folds}, {"encrypted": ["encrypted", "cleartext"]})
    cv = calib["open_set"]["encrypted"]["cross_validated"]
    assert cv["rows"] == 2000
    # Fold a scored with b's threshold (~0.9) keeps ~20% of its rows; b with a's (~0.5, or none) keeps all.
    assert 0.5 < cv["coverage"] < 0.7
    assert "| encrypted |" in th.markdown(calib)


def test_a_single_fold_gets_no_cross_validated_figure() -> None:
    y = np.arange(300) % 2
    calib = th.calibrate({"encrypted": [th.FoldPreds("only", y, _probs(y, np.full(300, 0.9), 2))]},
                         {"encrypted": ["encrypted", "cleartext"]})
    assert calib["open_set"]["encrypted"]["cross_validated"] == {}


def test_package_default_thresholds_are_scored_pooled() -> None:
    from multa_broker.model.thresholds import FoldPreds, calibrate

    # benign=0, scan=1; fold a: one benign flow called scan at 0.95 (flagged at 0.9), one at 0.85 (not).
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.05, 0.95], [0.15, 0.85], [0.02, 0.98], [0.6, 0.4]])
    calib = calibrate({"threat": [FoldPreds("a", y, p), FoldPreds("b", y, p)]}, {"threat": ["benign", "scan"]})
    d = calib["package_defaults"]["scan"]
    assert d["threshold"] == 0.9
    assert (d["benign_flows"], d["false_positives"], d["flows"], d["detected"]) == (4, 2, 4, 2)
    assert d["fp_rate"] == 0.5 and d["recall"] == 0.5
