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


def _estimator(params: dict[str, Any], seed: int, y: np.ndarray) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    if len(np.unique(y)) < 2:
        from sklearn.dummy import DummyClassifier
        return DummyClassifier(strategy="most_frequent")
    return HistGradientBoostingClassifier(**params, early_stopping=False, random_state=seed)


def _sample_weights(y: np.ndarray, n_classes: int, class_weights: str) -> np.ndarray:
    from multa_broker.model.training import class_weights as weights_for

    return weights_for(y, n_classes, class_weights).numpy()[y]


def fit_task(task: str, classes: list[str], x_train: np.ndarray, y_train: np.ndarray,
             x_val: np.ndarray, y_val: np.ndarray, seed: int, class_weights: str = "sqrt",
             context: bool = False) -> ClassicalModel:
    """Fit a HistGradientBoostingClassifier, picking its size on validation macro-F1."""
    from multa_broker.model.metrics import macro_f1

    w = _sample_weights(y_train, len(classes), class_weights)
    best: ClassicalModel | None = None
    best_f1 = -1.0
    for max_iter, leaves in ((100, 15), (300, 31)):
        params = {"max_iter": max_iter, "max_leaf_nodes": leaves, "learning_rate": 0.1}
        est = _estimator(params, seed, y_train)
        est.fit(x_train, y_train, sample_weight=w)
        model = ClassicalModel(task, classes, est, params, context)
        f1 = macro_f1(y_val, model.predict_proba(x_val).argmax(axis=1)) if len(y_val) else 0.0
        if f1 > best_f1:
            best, best_f1 = model, f1
    assert best is not None
    log.debug("classical %s: %s (val macro-F1 %.3f)", task, best.params, best_f1)
    return best


def crossfit_proba(model: ClassicalModel, x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int,
                   seed: int, class_weights: str = "sqrt") -> np.ndarray:
    """[F, C] out-of-fold probabilities of ``model``'s own training rows.

    The rows are cut into ``folds`` parts by ``groups`` (their captures); each part is scored by
    trees of ``model``'s size fitted on the other parts. On the flows it was fitted on a tree model
    is almost always sure and right; scored this way its probabilities say which classes it tells
    apart on captures it has not seen, which is what a student should learn from it.
    """
    from sklearn.model_selection import GroupKFold

    out = np.zeros((len(x), len(model.classes)))
    k = min(folds, len(np.unique(groups)))
    if k < 2:
        return model.predict_proba(x)
    for fit_rows, score_rows in GroupKFold(n_splits=k).split(x, y, groups):
        est = _estimator(model.params, seed, y[fit_rows])
        est.fit(x[fit_rows], y[fit_rows], sample_weight=_sample_weights(y[fit_rows], len(model.classes),
                                                                        class_weights))
        part = ClassicalModel(model.task, model.classes, est, model.params, model.context)
        out[score_rows] = part.predict_proba(x[score_rows])
    return out
