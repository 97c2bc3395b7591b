"""``multa bench seeds``: one training recipe's out-of-source figures over several seeds.

A leave-one-source-out mean moves a lot between seeds: a left-out source that
holds one or two classes loses half its macro-F1 when a handful of its flows
go to a third class, so one run cannot tell a 2-point change of recipe from
luck. This reads finished ``multa train --eval loso`` runs of the same
dataset (one per seed, or per recipe when comparing recipes) and prints per
task and model:

* the mean over left-out sources, as each run's loso.md gives it, then its
  median, minimum and maximum over the runs;
* the macro-F1 of all left-out flows pooled (every source's out-of-source
  predictions together, so big sources weigh more and one tiny source less);
* in how many runs the LMMoE's fold mean is at least each baseline's.

Predictions are each model's most likely class (no open-set threshold), as in
the out-of-source tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from multa_broker.bench.oos import load_oos, tasks_of
from multa_broker.errors import MultaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", dest="runs", type=Path, action="append", required=True, metavar="DIR",
                        help="a loso output folder (repeat: one per seed)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run_scores(folder: Path, task: str) -> dict[str, dict[str, Any]]:
    """{model: {"folds": {fold: macro-F1}, "mean": fold mean, "pooled": pooled macro-F1}}."""
    from multa_broker.model.metrics import macro_f1

    out: dict[str, dict[str, Any]] = {}
    for model, folds in load_oos(folder, task).items():
        per_fold, ys, preds = {}, [], []
        for fold, (y, p) in sorted(folds.items()):
            sel = y >= 0
            pred = p[sel].argmax(axis=1)
            per_fold[fold] = float(macro_f1(y[sel], pred))
            ys.append(y[sel])
            preds.append(pred)
        out[model] = {"folds": per_fold, "mean": float(np.mean(list(per_fold.values()))),
                      "pooled": float(macro_f1(np.concatenate(ys), np.concatenate(preds)))}
    return out


def compare(runs: list[Path]) -> dict[str, Any]:
    tasks = tasks_of(runs[0])
    res: dict[str, Any] = {"runs": [str(r) for r in runs], "tasks": {}}
    for task in tasks:
        scores = [run_scores(r, task) for r in runs]
        models = [m for m in scores[0] if all(m in s for s in scores)]
        folds = [set(s[m]["folds"]) for s in scores for m in models]
        if folds and any(f != folds[0] for f in folds):
            raise MultaError(f"{task}: the runs left out different sources; compare runs of one dataset")
        entry: dict[str, Any] = {}
        for m in models:
            means = [s[m]["mean"] for s in scores]
            pooled = [s[m]["pooled"] for s in scores]
            entry[m] = {"mean": means, "pooled": pooled, "mean_median": float(np.median(means)),
                        "pooled_median": float(np.median(pooled))}
        if "lmmoe" in entry:
            for m in models:
                if m != "lmmoe":
                    entry["lmmoe"][f"runs_at_least_{m}"] = int(sum(
                        a >= b for a, b in zip(entry["lmmoe"]["mean"], entry[m]["mean"])))
        res["tasks"][task] = entry
    return res


def _spread(xs: list[float]) -> str:
    return f"{np.median(xs):.3f} [{min(xs):.3f}-{max(xs):.3f}]"


def render(res: dict[str, Any]) -> str:
    n = len(res["runs"])
    lines = [f"Out of source over {n} runs: " + ", ".join(res["runs"]), "",
             "| task | model | mean over sources, median [min-max] | pooled, median [min-max] | runs |",
             "|---|---|---|---|---|"]
    for task, entry in res["tasks"].items():
        for m, e in entry.items():
            wins = ", ".join(f"LMMoE >= {k[len('runs_at_least_'):]} in {v}/{n}"
                             for k, v in e.items() if k.startswith("runs_at_least_"))
            per_run = " ".join(f"{x:.3f}" for x in e["mean"])
            lines.append(f"| {task} | {m} | {_spread(e['mean'])} | {_spread(e['pooled'])} | {per_run}"
                         + (f"; {wins}" if wins else "") + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    res = compare(args.runs)
    print(json.dumps(res, indent=1) if args.json else render(res), end="")
    return 0
