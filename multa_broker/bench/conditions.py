"""``multa bench conditions``: stored models on lab captures made under drawn delay, jitter and loss.

A lab run records each scenario's path conditions in its manifest (round trip, jitter, loss;
docs/lab.md). This scores each model's most likely class on the dataset rows that come from that
run's captures, grouped by the conditions of their capture:

* macro-F1 per task by round-trip bin (none, under 20 ms, 20-100 ms, 100 ms or more), with loss,
  and all. Floods draw no delay, so the bins hold different scenarios: compare models within a row;
* with ``--reference DATASET``: per scenario, the model's accuracy on that dataset's test-split
  captures of the same scenario (made without these conditions) against its accuracy on the
  conditioned capture, averaged over the scenarios that drew a delay, a round trip of 50 ms or
  more, loss only, or neither (the control).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from multa_broker.bench.versus import predictions
from multa_broker.errors import MultaError

BINS = (("no delay", 0.0, 0.0), ("under 20 ms", 1e-9, 20.0), ("20-100 ms", 20.0, 100.0), ("100 ms or more", 100.0, 1e9))
TASKS = ("service", "encrypted", "tunnel", "threat")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="PATH",
                        help="a stored model (store dir or 'default'); repeat to compare")
    parser.add_argument("--lab", type=Path, required=True, metavar="DIR",
                        help="the `multa lab run` folder whose manifest gives each capture's conditions")
    parser.add_argument("--dataset", type=Path, required=True,
                        help="a dataset holding that run's captures (e.g. `multa dataset build --no-builtin --lab DIR`)")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="score only this split's rows (for a model that trained on some of the run)")
    parser.add_argument("--reference", type=Path, metavar="DATASET",
                        help="also compare, per scenario, with this dataset's test-split lab captures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def _scenario(capture: str) -> str | None:
    m = re.match(r"lab:[^/]+/(.+)-s\d+\.pcap$", capture)
    return m.group(1) if m else None


def conditions_of(lab: Path) -> dict[str, dict[str, Any]]:
    """Capture name as a dataset holds it (``lab:<folder>/<pcap>``) -> that scenario's manifest entry."""
    path = lab / "manifest.json"
    if not path.is_file():
        raise MultaError(f"{path}: no lab manifest (is {lab} a `multa lab run` folder?)")
    man = json.loads(path.read_text())
    return {f"lab:{lab.name}/{s['capture']}": s for s in man.get("scenarios", []) if s.get("capture")}


def by_bin(clf: Any, ds: Any, cond: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from multa_broker.model.metrics import macro_f1

    rtt = np.array([2 * cond.get(c, {}).get("delay_ms", 0.0) for c in ds.captures])[ds.capture]
    loss = np.array([cond.get(c, {}).get("loss", 0.0) > 0 for c in ds.captures])[ds.capture]
    groups = [(name, (rtt >= lo) & (rtt < hi) if hi else rtt == 0) for name, lo, hi in BINS]
    groups += [("with loss", loss), ("all", np.ones(len(ds), bool))]
    pred = predictions(clf, ds)
    out: dict[str, dict[str, Any]] = {}
    for name, sel in groups:
        row: dict[str, Any] = {"flows": int(sel.sum())}
        for task, p in pred.items():
            y = ds.task_labels(task).astype(np.int64)
            ok = sel & (y >= 0)
            if ok.any():
                row[task] = {"rows": int(ok.sum()), "macro_f1": macro_f1(y[ok], p[ok])}
        out[name] = row
    return out


def _scenario_accuracy(clf: Any, ds: Any) -> dict[str, dict[str, float]]:
    scen = np.array([_scenario(c) or "" for c in ds.captures])[ds.capture]
    pred = predictions(clf, ds)
    out: dict[str, dict[str, float]] = {}
    for task, p in pred.items():
        y = ds.task_labels(task)
        for s in np.unique(scen[scen != ""]):
            ok = (scen == s) & (y >= 0)
            if ok.any():
                out.setdefault(str(s), {})[task] = float((p[ok] == y[ok]).mean())
    return out


def paired(clf: Any, ds: Any, ref: Any, cond: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean per-scenario accuracy before (reference test captures) and under the run's conditions."""
    from multa_broker.dataset.format import SPLITS

    lab_test = np.array([c.startswith("lab:") for c in ref.captures])[ref.capture] & (ref.split == SPLITS.index("test"))
    before = _scenario_accuracy(clf, ref.subset(np.flatnonzero(lab_test)))
    after = _scenario_accuracy(clf, ds)
    present = set(ds.captures)
    runs = {_scenario(c): s for c, s in cond.items() if c in present}
    groups = {"delayed": lambda s: s.get("delay_ms", 0) > 0, "round trip 50 ms or more": lambda s: 2 * s.get("delay_ms", 0) >= 50,
              "loss only": lambda s: s.get("delay_ms", 0) == 0 and s.get("loss", 0) > 0,
              "neither (control)": lambda s: s.get("delay_ms", 0) == 0 and s.get("loss", 0) == 0}
    out: dict[str, dict[str, Any]] = {}
    for name, pick in groups.items():
        names = [n for n, s in runs.items() if n in before and n in after and pick(s)]
        row: dict[str, Any] = {"scenarios": len(names)}
        for task in TASKS:
            pairs = [(before[n][task], after[n][task]) for n in names if task in before[n] and task in after[n]]
            if pairs:
                row[task] = {"scenarios": len(pairs), "before": float(np.mean([a for a, _ in pairs])),
                             "under": float(np.mean([b for _, b in pairs]))}
        out[name] = row
    return out


def render(results: list[dict[str, Any]]) -> str:
    names = [r["model"] for r in results]
    lines = ["Macro-F1 by the round trip of each flow's capture (most likely class):", "",
             "| flows | " + " | ".join(f"{t} {n}" for t in TASKS for n in names) + " |",
             "|---|" + "---:|" * (len(TASKS) * len(names))]
    for group, row in results[0]["bins"].items():
        cells = [f"{r['bins'][group][t]['macro_f1']:.3f}" if t in r["bins"][group] else "-" for t in TASKS for r in results]
        lines.append(f"| {group} ({row['flows']}) | " + " | ".join(cells) + " |")
    if "paired" in results[0]:
        lines += ["", "Per-scenario accuracy, reference test captures -> this run's capture, mean over scenarios:", "",
                  "| scenarios | model | " + " | ".join(TASKS) + " |", "|---|---|" + "---|" * len(TASKS)]
        for group, row in results[0]["paired"].items():
            for r in results:
                g = r["paired"][group]
                cells = [f"{g[t]['before']:.3f} -> {g[t]['under']:.3f}" if t in g else "-" for t in TASKS]
                lines.append(f"| {group} ({row['scenarios']}) | {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from multa_broker.dataset.format import SPLITS, FlowDataset
    from multa_broker.inference import Classifier

    cond = conditions_of(args.lab)
    if not args.dataset.is_file():
        raise MultaError(f"{args.dataset}: no such dataset (build one with `multa dataset build --no-builtin --lab {args.lab}`)")
    ds = FlowDataset.load(args.dataset)
    keep = np.array([c in cond for c in ds.captures])[ds.capture]
    if args.split:
        keep &= ds.split == SPLITS.index(args.split)
    ds = ds.subset(np.flatnonzero(keep))
    if len(ds) == 0:
        raise MultaError(f"{args.dataset}: no {args.split + ' ' if args.split else ''}flow comes from a capture of {args.lab}")
    ref = None
    if args.reference:
        if not args.reference.is_file():
            raise MultaError(f"{args.reference}: no such dataset (--reference)")
        ref = FlowDataset.load(args.reference)
    results = []
    for m in args.model:
        clf = Classifier.load(m)
        r: dict[str, Any] = {"model": clf.name, "bins": by_bin(clf, ds, cond)}
        if ref is not None:
            r["paired"] = paired(clf, ds, ref, cond)
        results.append(r)
    print(json.dumps(results, indent=1) if args.json else render(results), end="")
    return 0
