"""``multa bench versus``: stored models side by side on one dataset's test split.

For each model, per task: macro-F1 and accuracy on the test split's labelled
rows, then the same per source (a label source or lab family), so a retrained
model can be held against the one it replaces on the same flows. Predictions
are each model's most likely class (no open-set threshold); a class the model
does not know counts as wrong. A model that reads host context gets each
flow's context; one that does not, gets none.

Caveat, printed with the table: a model trained on another build of the data
may have trained on some of these test captures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from multa_broker.errors import MultaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="PATH",
                        help="a stored model (store dir or 'default'); repeat to compare")
    parser.add_argument("--dataset", type=Path, default=Path("data/dataset.npz"),
                        help="dataset whose test split is scored (default data/dataset.npz)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--unseen-in", action="append", type=Path, default=[], metavar="DATASET",
                        help="score only captures in neither the train nor the validation split of DATASET "
                             "(the dataset a compared model was trained on); repeatable")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def score(model: str, ds: Any) -> dict[str, Any]:
    """Per task (and per source) macro-F1 and accuracy of one stored model on ``ds``'s rows."""
    from multa_broker.inference import Classifier
    from multa_broker.model.metrics import macro_f1

    clf = Classifier.load(model)
    sources = ds.sources()
    out: dict[str, Any] = {"model": clf.name, "context": clf.uses_context, "tasks": {}, "sources": {}}
    for task, pred in predictions(clf, ds).items():
        y = ds.task_labels(task).astype(np.int64)
        sel = y >= 0
        out["tasks"][task] = {"rows": int(sel.sum()), "macro_f1": macro_f1(y[sel], pred[sel]),
                              "accuracy": float((y[sel] == pred[sel]).mean()) if sel.any() else float("nan")}
        for src in np.unique(sources[sel]):
            m = sel & (sources == src)
            out["sources"].setdefault(str(src), {})[task] = {"rows": int(m.sum()), "macro_f1": macro_f1(y[m], pred[m])}
    return out


def predictions(clf: Any, ds: Any) -> dict[str, np.ndarray]:
    """Each task's most likely class per row, as an index into ``ds``'s classes (-1: a class ``ds``
    lacks, which counts as wrong)."""
    probs = dict(zip(clf.tasks, clf.probabilities(ds.encoded(clf.n))))
    out = {}
    for task, classes in ds.tasks.items():
        if task in probs:
            names = np.array(clf.classes[task] + ("?",), dtype=object)
            index = {c: i for i, c in enumerate(classes)}
            out[task] = np.array([index.get(n, -1) for n in names[probs[task].argmax(axis=1)]], dtype=np.int64)
    return out


def unseen_in(ds: Any, other: Any) -> Any:
    """The rows of ``ds`` whose capture never trained or validated a model built from ``other``."""
    from multa_broker.dataset.format import SPLITS

    fitted = {name for name, split in other.capture_splits().items() if split != SPLITS.index("test")}
    keep = np.array([name not in fitted for name in ds.captures], dtype=bool)
    return ds.subset(keep[ds.capture])


def render(results: list[dict[str, Any]], dataset: Path, split: str, unseen: list[Path] = ()) -> str:
    names = [r["model"] for r in results]
    tasks = [t for t in results[0]["tasks"] if all(t in r["tasks"] for r in results)]
    where = "".join(f", captures unseen in {u}'s train and validation splits" for u in unseen)
    lines = [f"{dataset} ({split} split{where}): macro-F1 (accuracy), most likely class, no open-set threshold", "",
             "| task | rows | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for t in tasks:
        cells = " | ".join(f"{r['tasks'][t]['macro_f1']:.3f} ({r['tasks'][t]['accuracy']:.3f})" for r in results)
        lines.append(f"| {t} | {results[0]['tasks'][t]['rows']} | {cells} |")
    lines += ["", "Per source, macro-F1:", "",
              "| source | task | rows | " + " | ".join(names) + " |", "|---|---|---:|" + "---:|" * len(names)]
    for src in sorted(results[0]["sources"]):
        for t in tasks:
            if t not in results[0]["sources"][src]:
                continue
            cells = " | ".join(f"{r['sources'].get(src, {}).get(t, {}).get('macro_f1', float('nan')):.3f}"
                               for r in results)
            lines.append(f"| {src} | {t} | {results[0]['sources'][src][t]['rows']} | {cells} |")
    if not unseen:
        lines += ["", "A model trained on another build of the data may have trained on some of these captures "
                      "(--unseen-in leaves them out)."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from multa_broker.dataset.format import FlowDataset

    if not args.dataset.is_file():
        raise MultaError(f"{args.dataset}: no such dataset (build one with `multa dataset build`)")
    ds = FlowDataset.load(args.dataset).split_rows(args.split)
    if len(ds) == 0:
        raise MultaError(f"{args.dataset}: the {args.split} split is empty")
    for other in args.unseen_in:
        if not other.is_file():
            raise MultaError(f"{other}: no such dataset (--unseen-in)")
        ds = unseen_in(ds, FlowDataset.load(other))
    if len(ds) == 0:
        raise MultaError(f"no {args.split} flow of {args.dataset} is unseen in {', '.join(map(str, args.unseen_in))}")
    results = [score(m, ds) for m in args.model]
    print(json.dumps(results, indent=1) if args.json else render(results, args.dataset, args.split, args.unseen_in),
          end="")
    return 0
