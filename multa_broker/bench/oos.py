"""Reading finished ``multa train --eval loso`` runs: the out-of-source predictions of each model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from multa_broker.errors import MultaError


def load_oos(folder: Path, task: str) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{model: {fold: (labels, probabilities)}} for ``task`` from a loso run's oos.npz; folds
    without a label for the task are left out."""
    path = folder / "oos.npz"
    if not path.is_file():
        raise MultaError(f"{folder}: no oos.npz (not a finished `multa train --eval loso` output folder)")
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    with np.load(path) as z:
        for key in z.files:
            fold, kind, *rest = key.split("|")
            if kind == "labels" or rest[0] != task:
                continue
            y = z[f"{fold}|labels|{task}"]
            if (y >= 0).sum() == 0:
                continue
            out.setdefault(kind, {})[fold] = (y, z[key])
    return out


def classes_of(folder: Path, task: str) -> list[str]:
    """The task's classes in the run's output order."""
    try:
        classes = json.loads((folder / "loso.json").read_text()).get("classes", {}).get(task)
    except (OSError, ValueError) as e:
        raise MultaError(f"{folder}: cannot read loso.json ({e})") from None
    if not classes:
        from multa_broker.taxonomy import TASKS

        classes = list(TASKS[task])
    return list(classes)


def tasks_of(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / "loso.json").read_text())["tasks"])
    except (OSError, ValueError, KeyError) as e:
        raise MultaError(f"{folder}: cannot read the tasks from loso.json ({e})") from None
