"""Classify flows with a stored model: the API ``multa classify`` and the bridge share.

>>> clf = Classifier.load("default")                       # doctest: +SKIP
>>> clf.classify(flows)[0].labels["service"]               # doctest: +SKIP
'tls'

Each task's score is the model's (temperature-calibrated) max softmax
probability; below the task's threshold the label is
:data:`multa_broker.taxonomy.UNKNOWN` (open set). Thresholds default to the
manifest's, picked on validation at training time, and can be overridden per
task (``"service=0.6,threat=0.8"``, a mapping, or one number for all tasks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from multa_broker import store
from multa_broker.errors import MultaError
from multa_broker.flow import EncodedBatch, Flow, encode
from multa_broker.taxonomy import UNKNOWN

log = logging.getLogger("multa.inference")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One flow's result: a label and a score per task, and the model that gave them."""

    model: str
    labels: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)



def parse_thresholds(spec: Any, tasks: Sequence[str]) -> dict[str, float]:
    """Overrides from ``"task=value,..."``, a mapping, or one number for every task."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, (int, float)):
        items = {t: float(spec) for t in tasks}
    elif isinstance(spec, str):
        items = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            task, eq, value = part.partition("=")
            if not eq:
                task, value = "", part
            try:
                v = float(value)
            except ValueError:
                raise MultaError(f"thresholds: {part!r} is not task=number") from None
            if task:
                items[task.strip()] = v
            else:
                items.update({t: v for t in tasks})
    elif isinstance(spec, Mapping):
        items = {str(k): float(v) for k, v in spec.items()}
    else:
        raise MultaError(f"thresholds: cannot read {spec!r}")
    for task, v in items.items():
        if task not in tasks:
            raise MultaError(f"thresholds: the model has no task {task!r} (tasks: {', '.join(tasks)})")
        if not 0.0 <= v <= 1.0:
            raise MultaError(f"thresholds: {task}={v} is outside 0..1")
    return items


class Classifier:
    """A verified stored model plus its open-set thresholds."""

    def __init__(self, stored: store.StoredModel, thresholds: Any = None) -> None:
        self._stored = stored
        self._module = stored.module
        self.manifest: dict[str, Any] = stored.manifest
        self.name: str = stored.ident
        self.tasks: tuple[str, ...] = tuple(t["name"] for t in stored.tasks)
        self.n: int = int(self.manifest["n"])
        self.classes: dict[str, tuple[str, ...]] = {t["name"]: tuple(t["classes"]) for t in stored.tasks}
        self.thresholds: dict[str, float] = {t["name"]: float(t["threshold"]) for t in stored.tasks}
        self.thresholds.update(parse_thresholds(thresholds, self.tasks))
        self.path: Path = stored.path
        #: The model reads host context (its manifest has a context_spec).
        self.uses_context: bool = "context_spec" in self.manifest

    @classmethod
    def load(cls, path: str | Path = "default", thresholds: Any = None, *, threads: int | None = None,
             verify: bool = True, sha256: str | None = None) -> "Classifier":
        """Load ``path`` (a store dir, a model.pt with its manifest beside it, or ``"default"``).

        ``threads`` sets torch's intra-op CPU threads (process-wide); ``verify``
        checks the archive and weight hashes (the feature spec is always checked).
        """
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        clf = cls(store.load(path, verify=verify, sha256=sha256), thresholds)
        log.info("loaded %s from %s (tasks %s, N=%d)", clf.name, clf.path, ", ".join(clf.tasks), clf.n)
        return clf

    def classify(self, flows: Sequence[Flow]) -> list[Verdict]:
        if not flows:
            return []
        return self.classify_batch(encode(flows, self.n))

    def probabilities(self, batch: EncodedBatch) -> list[np.ndarray]:
        """Per task, the [B, C] calibrated probabilities for an encoded batch."""
        sizes, dirs, iats = batch.sizes, batch.dirs, batch.iats
        width = sizes.shape[1]
        if width > self.n:
            sizes, dirs, iats = sizes[:, :self.n], dirs[:, :self.n], iats[:, :self.n]
        elif width < self.n:
            pad = ((0, 0), (0, self.n - width))
            sizes, dirs, iats = (np.pad(a, pad) for a in (sizes, dirs, iats))
        lengths = np.minimum(batch.lengths, self.n)
        args = [torch.as_tensor(np.ascontiguousarray(sizes), dtype=torch.float32),
                torch.as_tensor(np.ascontiguousarray(dirs), dtype=torch.float32),
                torch.as_tensor(np.ascontiguousarray(iats), dtype=torch.float32),
                torch.as_tensor(lengths, dtype=torch.int64),
                torch.as_tensor(batch.proto, dtype=torch.int64)]
        if self.uses_context:
            # Models without context have a five-argument forward (older archives too).
            args += [torch.as_tensor(np.ascontiguousarray(batch.ctx), dtype=torch.float32),
                     torch.as_tensor(np.ascontiguousarray(batch.has_ctx), dtype=torch.float32)]
        with torch.inference_mode():
            out = self._module(*args)
        return [p.numpy() for p in out]

    def classify_batch(self, batch: EncodedBatch) -> list[Verdict]:
        if len(batch) == 0:
            return []
        probs = self.probabilities(batch)
        labels: dict[str, list[str]] = {}
        scores: dict[str, list[float]] = {}
        for task, p in zip(self.tasks, probs):
            best = p.argmax(axis=1)
            score = p[np.arange(len(best)), best]
            names = np.array(self.classes[task] + (UNKNOWN,), dtype=object)
            idx = np.where(score >= self.thresholds[task], best, len(self.classes[task]))
            labels[task] = names[idx].tolist()
            scores[task] = score.astype(float).tolist()
        return [Verdict(self.name, {t: labels[t][i] for t in self.tasks}, {t: scores[t][i] for t in self.tasks})
                for i in range(len(batch))]
