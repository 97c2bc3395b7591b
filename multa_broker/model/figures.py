"""Figures written beside a trained model (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def confusion_png(reports: dict[str, dict[str, Any]], classes: dict[str, list[str]], path: Path,
                  title: str) -> None:
    """One row-normalised confusion matrix per task, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in classes if t in reports and reports[t]["rows"] > 0]  # model order
    cols = min(2, max(1, len(tasks)))
    rows = max(1, -(-len(tasks) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 5.0 * rows), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    for ax, task in zip(axes.flat, tasks):
        cm = np.array(reports[task]["confusion"], dtype=float)
        # Only classes present in truth or predictions; a 16x16 grid of zeros says nothing.
        keep = np.flatnonzero((cm.sum(axis=0) + cm.sum(axis=1)) > 0)
        cm = cm[np.ix_(keep, keep)]
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        names = [classes[task][i] for i in keep]
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for i in range(len(keep)):
            for j in range(len(keep)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
        r = reports[task]
        ax.set_title(f"{task}: acc {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f}", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
