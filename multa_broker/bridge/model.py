"""The model as the bridge sees it: loading, change detection, verdicts -> Results.

The bridge runs :class:`multa_broker.inference.Classifier` (which verifies the
stored model's manifest and checksum on load). Anything with the same
attributes works, which is how tests plug in tiny models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from multa_broker.flow import Flow
from multa_broker.protocol import Result


class Verdict(Protocol):
    model: str
    labels: Mapping[str, str]
    scores: Mapping[str, float]


class ClassifierLike(Protocol):
    name: str
    tasks: tuple[str, ...]
    n: int

    def classify(self, flows: Sequence[Flow]) -> list[Any]: ...


#: ``loader(path, thresholds) -> classifier``; raises on a bad model.
Loader = Callable[[str, "str | None"], ClassifierLike]


def load_classifier(path: str, thresholds: str | None = None) -> ClassifierLike:
    """Load the stored model with multa's Classifier (imports torch)."""
    from multa_broker.inference import Classifier

    return Classifier.load(path, thresholds=thresholds)


def fingerprint(path: str | os.PathLike[str]) -> tuple[Any, ...]:
    """What changes when the model at ``path`` is replaced: (name, size, mtime_ns) of its files.

    ``path`` may be a file or a directory (a model store entry); a missing path
    has an empty fingerprint.
    """
    p = Path(path)
    try:
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
        else:
            files = [p]
        out = []
        for f in files:
            st = f.stat()
            out.append((str(f), st.st_size, st.st_mtime_ns))
        return tuple(out)
    except OSError:
        return ()


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
