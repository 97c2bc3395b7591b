"""The model as the bridge sees it: loading, change detection, verdicts -> Results.

The bridge runs :class:`multa_broker.inference.Classifier` (which verifies the
stored model's manifest and checksum on load). Anything with the same
attributes works, which is how tests plug in tiny models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from multa_broker.flow import Flow
from multa_broker.protocol import Result

if TYPE_CHECKING:
    from multa_broker.inference import Verdict


class ClassifierLike(Protocol):
    name: str
    tasks: tuple[str, ...]
    n: int

    def classify(self, flows: Sequence[Flow]) -> list["Verdict"]: ...


#: ``loader(path, thresholds) -> classifier``; raises on a bad model.
Loader = Callable[[str, Any], ClassifierLike]


def load_classifier(path: str, thresholds: Any = None, sha256: str | None = None) -> ClassifierLike:
    """Load and verify the stored model with multa's Classifier (imports torch).

    ``sha256`` pins the archive (``model.sha256``): another one raises ``store.PinMismatch``.
    """
    from multa_broker.inference import Classifier

    return Classifier.load(path, thresholds=thresholds, sha256=sha256)


def check_pin(path: str, sha256: str | None) -> None:
    """Raise ``store.PinMismatch`` unless the model at ``path`` has the pinned archive sha256
    (for loaders other than :func:`load_classifier`, which checks the bytes it loads)."""
    from multa_broker import store

    if sha256 is None:
        return
    model_path = store.resolve(path) / store.MODEL_FILE
    try:
        got = store.sha256_file(model_path)
    except OSError as e:
        from multa_broker.errors import MultaError

        raise MultaError(f"{model_path}: cannot read: {e.strerror or e}") from None
    store.check_pin(model_path, got, sha256)


def load_pinned(loader: "Loader | None", path: str, thresholds: Any, sha256: str | None) -> ClassifierLike:
    """``loader(path, thresholds)`` (None: multa's own) with the archive pinned to ``sha256``."""
    if loader is None or loader is load_classifier:
        return load_classifier(path, thresholds, sha256)
    check_pin(path, sha256)
    return loader(path, thresholds)


def watched_files(path: str) -> list[Path]:
    """The files whose change means "a new model": the archive, its manifest, the DEFAULT pointer."""
    from multa_broker import store

    files: list[Path] = []
    if path == "default":
        files.append(store.repo_store() / store.DEFAULT_FILE)
    try:
        d = store.resolve(path)
        files += [d / store.MODEL_FILE, d / store.MANIFEST_FILE]
    except Exception:  # not (yet) a loadable path: watch it as given
        p = Path(path)
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return files


def fingerprint(path: str | os.PathLike[str]) -> tuple[Any, ...]:
    """(file, size, mtime_ns) of :func:`watched_files`; a missing file reads as absent.

    Cheap enough to poll every few seconds: a few stat() calls.
    """
    out = []
    for f in watched_files(str(path)):
        try:
            st = f.stat()
            out.append((str(f), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(f), None, None))
    return tuple(out)


@dataclass(frozen=True)
class ModelInfo:
    """What the bridge needs to know about a model it runs in another process."""

    name: str
    tasks: tuple[str, ...]
    n: int
    classes: dict[str, tuple[str, ...]]
    thresholds: dict[str, float]

    @classmethod
    def of(cls, clf: Any) -> "ModelInfo":
        return cls(clf.name, tuple(clf.tasks), int(clf.n), {t: tuple(c) for t, c in clf.classes.items()},
                   {t: float(v) for t, v in clf.thresholds.items()})


def has_probabilities(clf: Any) -> bool:
    """True for multa's Classifier (calibrated probabilities + open-set thresholds)."""
    return callable(getattr(clf, "probabilities", None)) and hasattr(clf, "thresholds") \
        and hasattr(clf, "classes")


def results_from_probabilities(info: Any, flows: Sequence[Flow], probs: Sequence[Any]) -> list[Result]:
    """Results from per-task [B, C] probabilities, by ``Classifier.classify_batch``'s rule.

    Argmax per task; below the task's threshold the label is ``unknown``. Done
    on whole arrays and zipped into Results: building an inference.Verdict and two dicts
    per flow cost as much as the model on a 2-core machine.
    tests/test_bridge_model.py pins this to ``Classifier.classify``.
    """
    import numpy as np

    from multa_broker.taxonomy import UNKNOWN

    labels, scores = [], []
    for task, p in zip(info.tasks, probs):
        best = p.argmax(axis=1)
        score = p[np.arange(len(best)), best]
        names = np.array(tuple(info.classes[task]) + (UNKNOWN,), dtype=object)
        idx = np.where(score >= info.thresholds[task], best, len(info.classes[task]))
        labels.append(names[idx].tolist())
        scores.append(score.astype(float).tolist())
    tasks, name = tuple(info.tasks), info.name
    return [Result(f.uid or "", name, tasks, lb, sc)
            for f, lb, sc in zip(flows, zip(*labels), zip(*scores))]


def classify(clf: ClassifierLike, flows: Sequence[Flow]) -> list[Result]:
    """Classify ``flows`` into Results in this process (the inference thread).

    multa's Classifier goes through :func:`results_from_probabilities`; any
    other classifier through its ``classify()``.
    """
    if not flows:
        return []
    if not has_probabilities(clf):
        return to_results(flows, clf.classify(flows), clf.tasks)
    from multa_broker.flow import encode

    return results_from_probabilities(clf, flows, clf.probabilities(encode(flows, clf.n)))


def to_results(flows: Sequence[Flow], verdicts: Sequence[Any], tasks: Sequence[str]) -> list[Result]:
    """One Result per flow, tasks in the model's order (the order Zeek logs them in)."""
    if len(verdicts) != len(flows):
        raise ValueError(f"model returned {len(verdicts)} verdicts for {len(flows)} flows")
    tasks = tuple(tasks)
    return [
        Result(f.uid or "", v.model, tasks, tuple(v.labels[t] for t in tasks),
               tuple(float(v.scores[t]) for t in tasks))
        for f, v in zip(flows, verdicts)
    ]
