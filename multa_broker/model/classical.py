"""The classical baseline: per-flow statistics + gradient-boosted trees, one model per task.

Features come from the same first-N packets the LSTMs see (never ports):
packet and byte counts per direction, size mean/std/min/max overall and per
direction, inter-arrival statistics (log microseconds), duration, the first
few signed sizes and gaps, the protocol and the length; with host context, the
six context counts (multa_broker.context) and their shares as the LMMoE reads
them, so both see the same information.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from multa_broker.dataset.format import FlowDataset
from multa_broker.flow import PROTOS

log = logging.getLogger("multa.model.classical")

#: Packets whose individual size and gap become features.
FIRST = 8


def _masked_stats(x: np.ndarray, m: np.ndarray) -> list[np.ndarray]:
    cnt = m.sum(axis=1)
    safe = np.maximum(cnt, 1)
    mean = (x * m).sum(axis=1) / safe
    var = (((x - mean[:, None]) ** 2) * m).sum(axis=1) / safe
    big = np.where(m, x, np.inf).min(axis=1)
    small = np.where(m, x, -np.inf).max(axis=1)
    return [cnt, mean, np.sqrt(var), np.where(cnt > 0, big, 0), np.where(cnt > 0, small, 0)]


def flow_features(sizes: np.ndarray, dirs: np.ndarray, iats: np.ndarray, lengths: np.ndarray,
                  proto: np.ndarray, ctx: np.ndarray | None = None, has_ctx: np.ndarray | None = None) -> np.ndarray:
    """[F, D] float32 features from encoded flows (arrays as in EncodedBatch); host context
    columns are appended when ``ctx`` is given."""
    n = sizes.shape[1]
    valid = np.arange(n)[None, :] < lengths[:, None]
    orig = valid & (dirs > 0.5)
    resp = valid & (dirs <= 0.5)
    liat = np.log1p(np.maximum(iats, 0))
    gaps = valid.copy()
    gaps[:, 0] = False
    cols: list[np.ndarray] = [lengths.astype(np.float64)]
    for m in (valid, orig, resp):
        cols += _masked_stats(sizes, m)
        cols.append((sizes * m).sum(axis=1))
    cols += _masked_stats(liat, gaps)[1:]
    cols.append(np.log1p((iats * valid).sum(axis=1)))
    k = min(FIRST, n)
    signed = np.where(dirs[:, :k] > 0.5, sizes[:, :k], -sizes[:, :k]) * valid[:, :k]
    cols += list(signed.T) + list((liat[:, :k] * valid[:, :k]).T)
    cols += [(proto == i).astype(np.float64) for i in range(len(PROTOS))]
    feats = np.stack(cols, axis=1).astype(np.float32)
    return feats if ctx is None else with_context(feats, ctx, has_ctx)


def with_context(feats: np.ndarray, ctx: np.ndarray, has_ctx: np.ndarray | None = None) -> np.ndarray:
    """``feats`` of :func:`flow_features` without context, with the host-context columns appended."""
    h = np.ones(len(feats)) if has_ctx is None else np.asarray(has_ctx, dtype=np.float64)
    c = np.asarray(ctx, dtype=np.float64)
    orig, resp = np.maximum(c[:, 0], 1), np.maximum(c[:, 4], 1)
    cols = list(c.T) + [c[:, 1] / orig, c[:, 2] / orig, c[:, 3] / orig, c[:, 5] / resp,
                        np.maximum(c[:, 1], c[:, 2]) / orig, h]
    return np.concatenate([feats, np.stack(cols, axis=1).astype(np.float32)], axis=1)


def dataset_features(ds: FlowDataset, n: int, context: bool = False) -> np.ndarray:
    e = ds.encoded(n)
    if context:
        return flow_features(e.sizes, e.dirs, e.iats, e.lengths, e.proto, e.ctx, e.has_ctx)
    return flow_features(e.sizes, e.dirs, e.iats, e.lengths, e.proto)


@dataclass
class ClassicalModel:
    task: str
    classes: list[str]
    estimator: Any
    params: dict[str, Any]
    #: Trained with the host-context columns.
    context: bool = False

    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        """[F, C] probabilities over all of the task's classes (absent classes get 0)."""
        out = np.zeros((len(feats), len(self.classes)))
        if len(feats) == 0:  # scikit-learn refuses an empty batch
            return out
        p = self.estimator.predict_proba(feats)
        out[:, self.estimator.classes_.astype(int)] = p
        return out


def fit_task(task: str, classes: list[str], x_train: np.ndarray, y_train: np.ndarray,
             x_val: np.ndarray, y_val: np.ndarray, seed: int, class_weights: str = "sqrt",
             context: bool = False) -> ClassicalModel:
    """Fit a HistGradientBoostingClassifier, picking its size on validation macro-F1."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from multa_broker.model.metrics import macro_f1
    from multa_broker.model.training import class_weights as weights_for

    w = weights_for(y_train, len(classes), class_weights).numpy()[y_train]
    best: ClassicalModel | None = None
    best_f1 = -1.0
    for max_iter, leaves in ((100, 15), (300, 31)):
        params = {"max_iter": max_iter, "max_leaf_nodes": leaves, "learning_rate": 0.1}
        est = HistGradientBoostingClassifier(**params, early_stopping=False, random_state=seed)
        if len(np.unique(y_train)) < 2:
            from sklearn.dummy import DummyClassifier
            est = DummyClassifier(strategy="most_frequent")
        est.fit(x_train, y_train, sample_weight=w)
        model = ClassicalModel(task, classes, est, params, context)
        f1 = macro_f1(y_val, model.predict_proba(x_val).argmax(axis=1)) if len(y_val) else 0.0
        if f1 > best_f1:
            best, best_f1 = model, f1
    assert best is not None
    log.debug("classical %s: %s (val macro-F1 %.3f)", task, best.params, best_f1)
    return best
