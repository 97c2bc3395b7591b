"""``multa bench context``: threat verdicts out of source with host context against without.

Reads two finished ``multa train --eval loso`` runs over the same dataset, one
trained with ``--context on`` and one with ``--context off``, and prints side
by side, for every left-out source that carries threat labels and every model
(LMMoE, single-task, classical): threat macro-F1 without and with context; then
the threat confusion pooled over those sources (rows: true class, columns:
predicted), where a flood called a scan and a scan called a flood show.
Predictions are each model's most likely class (no open-set threshold), as in
the out-of-source tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from multa_broker.bench.oos import classes_of, load_oos
from multa_broker.errors import MultaError

#: The classes whose mix-ups context is meant to mend, shown first in the confusion.
FOCUS = ("dos", "scan", "bruteforce", "benign")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--with", dest="with_ctx", type=Path, required=True, metavar="DIR",
                        help="the loso output folder of the run with --context on")
    parser.add_argument("--without", type=Path, required=True, metavar="DIR",
                        help="the loso output folder of the run with --context off")
    parser.add_argument("--task", default="threat", help="task to compare (default threat)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def compare(with_dir: Path, without_dir: Path, task: str) -> dict:
    from multa_broker.model.metrics import macro_f1

    runs = {"without": load_oos(without_dir, task), "with": load_oos(with_dir, task)}
    classes = classes_of(with_dir, task)
    models = [m for m in runs["with"] if m in runs["without"]]
    folds = sorted(set.intersection(*(set(runs[r][m]) for r in runs for m in models))) if models else []
    if not folds:
        raise MultaError(f"{with_dir} and {without_dir} share no left-out source with {task} labels")
    per_fold: dict[str, dict[str, dict[str, float]]] = {}
    confusion: dict[str, dict[str, list[list[int]]]] = {}
    for m in models:
        confusion[m] = {}
        for r in runs:
            cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
            for f in folds:
                y, p = runs[r][m][f]
                sel = y >= 0
                pred = p[sel].argmax(axis=1)
                per_fold.setdefault(f, {}).setdefault(m, {})[r] = float(macro_f1(y[sel], pred))
                np.add.at(cm, (y[sel], pred), 1)
            confusion[m][r] = cm.tolist()
    mean = {m: {r: float(np.mean([per_fold[f][m][r] for f in folds])) for r in runs} for m in models}
    return {"task": task, "classes": classes, "folds": folds, "models": models, "per_fold": per_fold,
            "mean": mean, "confusion": confusion}


def render(res: dict) -> str:
    models, classes = res["models"], res["classes"]
    lines = [f"{res['task']} macro-F1 out of source, without -> with host context:", "",
             "| left out | " + " | ".join(f"{m} without | {m} with" for m in models) + " |",
             "|---|" + "---:|---:|" * len(models)]
    for f in res["folds"]:
        cells = " | ".join(f"{res['per_fold'][f][m]['without']:.3f} | {res['per_fold'][f][m]['with']:.3f}"
                           for m in models)
        lines.append(f"| {f} | {cells} |")
    cells = " | ".join(f"**{res['mean'][m]['without']:.3f}** | **{res['mean'][m]['with']:.3f}**" for m in models)
    lines.append(f"| mean | {cells} |")
    shown = [c for c in FOCUS if c in classes] + [c for c in classes if c not in FOCUS]
    idx = [classes.index(c) for c in shown]
    for m in models:
        for r in ("without", "with"):
            cm = np.array(res["confusion"][m][r])
            lines += ["", f"{m}, {r} context: pooled confusion (rows true, columns predicted)", "",
                      "| true \\ predicted | " + " | ".join(shown) + " |", "|---|" + "---:|" * len(shown)]
            for i, c in zip(idx, shown):
                if cm[i].sum():
                    lines.append(f"| {c} | " + " | ".join(str(int(cm[i, j])) for j in idx) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    res = compare(args.with_ctx, args.without, args.task)
    print(json.dumps(res, indent=1) if args.json else render(res), end="")
    return 0
