"""Size tuning: the smallest, fastest LMMoE that keeps the single-task models' accuracy.

MulTA tunes the LMMoE's size instead of fixing it. Here: train the
single-task LSTM of every task once (the reference), then an LMMoE for each
point of a grid over expert count, expert width and tower width, all with
the same training budget and seed. A point is *feasible* when every task's
validation macro-F1 is within ``tolerance`` of its single-task model. The
choice is the feasible point with the fewest parameters (ties: the higher
batch-1024 flows/s). ``seeds`` > 1 averages validation F1 over seeds
(single-seed F1 on our corpus varies by a few points). The Pareto front over (parameters, flows/s, mean
macro-F1) is written as CSV, markdown and a PNG.

Validation, never test, drives the choice; the test split stays for the
final report. Every model is trained with the recipe ``multa train`` would
use for the same options: host context where asked (or where the dataset
carries it), and with ``distill`` > 0 the classical trees as teacher.
"""

from __future__ import annotations

import dataclasses
import csv
import itertools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from multa_broker.model.experiment import (choose_tasks, fit_classical, load_dataset, load_splits, make_lmmoe,
                                           make_single, use_context)
from multa_broker.model.lmmoe import LMMoEConfig, count_params
from multa_broker.model.metrics import mean_macro_f1
from multa_broker.model.single import SingleConfig
from multa_broker.model.speed import flows_per_second, take
from multa_broker.model.training import TrainConfig, fit
from multa_broker.store import script

log = logging.getLogger("multa.model.tune")

DEFAULT_GRID = {"experts": (1, 2, 3), "hidden": (16, 32), "tower": (16, 32)}
BIG_GRID = {"experts": (1, 2, 3, 4, 6), "hidden": (16, 24, 32, 48, 64), "tower": (16, 32, 64)}


@dataclass
class Point:
    experts: int
    hidden: int
    tower: int
    params: int
    flows_s_64: float
    flows_s_1024: float
    val_f1: dict[str, float]
    mean_f1: float
    feasible: bool = False
    pareto: bool = False
    chosen: bool = False


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of points no other point beats on params (fewer), flows/s (more) and mean F1 (more)."""
    front = []
    for i, p in enumerate(points):
        dominated = any(
            q.params <= p.params and q.flows_s_1024 >= p.flows_s_1024 and q.mean_f1 >= p.mean_f1
            and (q.params < p.params or q.flows_s_1024 > p.flows_s_1024 or q.mean_f1 > p.mean_f1)
            for j, q in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def run(dataset: Path, out: Path, cfg: TrainConfig, *, tasks: list[str] | None, n: int,
        grid: dict[str, Sequence[int]], tolerance: float, single_hidden: int, single_tower: int,
        repeats: int = 7, seeds: int = 1, context: bool | None = None) -> dict[str, Any]:
    ds = load_dataset(dataset)
    tasks = choose_tasks(ds, tasks)
    classes = {t: list(ds.tasks[t]) for t in tasks}
    ctx = use_context(ds, context)
    teachers: dict[str, Any] = {}
    if cfg.distill > 0:
        classical = fit_classical(ds, tasks, classes, n, cfg.seed, cfg.class_weights, ctx)
        teachers = {t: classical[t][0] for t in tasks}
    splits = load_splits(ds, tasks, n)
    bench_inputs = {b: take(ds.split_rows("val").encoded(n), b, seed=b) for b in (64, 1024)}

    reference: dict[str, float] = {}
    single_models = []
    single_cfg = dataclasses.replace(cfg, paradigm="separate")
    seed_list = [cfg.seed + k for k in range(seeds)]
    for task in tasks:
        one = {task: classes[task]}
        tsplits = load_splits(ds, [task], n)
        scores = []
        for seed in seed_list:
            model = make_single(SingleConfig(tasks=one, n=n, hidden=single_hidden, tower=single_tower,
                                             context=ctx), seed)
            res = fit(model, tsplits["train"], tsplits["val"], one,
                      dataclasses.replace(single_cfg, seed=seed), desc=f"single {task} s{seed}",
                      teachers=[teachers[task]] if teachers else None)
            scores.append(res.val[task]["macro_f1"])
        reference[task] = float(np.mean(scores))
        single_models.append(model)
        log.info("single-task %s: val macro-F1 %.4f", task, reference[task])
    single_params = sum(count_params(m) for m in single_models)
    scripted_single = [script(m.eval()) for m in single_models]

    points: list[Point] = []
    combos = list(itertools.product(grid["experts"], grid["hidden"], grid["tower"]))
    for k, (e, h, t) in enumerate(combos, 1):
        runs = []
        for seed in seed_list:
            model = make_lmmoe(LMMoEConfig(tasks=classes, n=n, experts=e, hidden=h, tower=t, context=ctx), seed)
            runs.append(fit(model, splits["train"], splits["val"], classes,
                            dataclasses.replace(cfg, seed=seed),
                            desc=f"[{k}/{len(combos)}] E{e} H{h} T{t} s{seed}",
                            teachers=[teachers[task] for task in tasks] if teachers else None).val)
        scripted = script(model.eval())
        speed = {b: flows_per_second({"m": [scripted], "s": scripted_single}, x, repeats=repeats)
                 for b, x in bench_inputs.items()}
        f1 = {task: float(np.mean([r[task]["macro_f1"] for r in runs])) for task in tasks}
        p = Point(e, h, t, count_params(model), speed[64]["m"], speed[1024]["m"], f1,
                  float(np.mean([mean_macro_f1(r) for r in runs])))
        p.feasible = all(f1[task] >= reference[task] - tolerance for task in tasks)
        points.append(p)
        log.info("E=%d H=%d T=%d: %d params, %.0f flows/s @1024, val mean macro-F1 %.4f%s", e, h, t, p.params,
                 p.flows_s_1024, p.mean_f1, " (feasible)" if p.feasible else "")
    for i in pareto_front(points):
        points[i].pareto = True
    feasible = [p for p in points if p.feasible]
    if feasible:
        best = min(feasible, key=lambda p: (p.params, -p.flows_s_1024))
        best.chosen = True
    single_speed = {b: flows_per_second({"s": scripted_single}, x, repeats=repeats)["s"]
                    for b, x in bench_inputs.items()}
    result = {
        "dataset": str(dataset), "tasks": tasks, "tolerance": tolerance, "train": cfg.to_json(), "seeds": seed_list,
        "context": ctx,
        "single": {"hidden": single_hidden, "tower": single_tower, "params": single_params,
                   "val_f1": reference, "mean_f1": float(np.mean(list(reference.values()))),
                   "flows_s_64": single_speed[64], "flows_s_1024": single_speed[1024]},
        "points": [asdict(p) for p in points],
        "chosen": asdict(next(p for p in points if p.chosen)) if feasible else None,
    }
    write_outputs(result, out)
    return result


def write_outputs(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps(result, indent=1) + "\n")
    tasks = result["tasks"]
    cols = ["experts", "hidden", "tower", "params", "flows_s_64", "flows_s_1024", "mean_f1"] + \
        [f"f1_{t}" for t in tasks] + ["feasible", "pareto", "chosen"]
    with open(out / "tune.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for p in result["points"]:
            w.writerow([p["experts"], p["hidden"], p["tower"], p["params"], round(p["flows_s_64"]),
                        round(p["flows_s_1024"]), f"{p['mean_f1']:.4f}"] +
                       [f"{p['val_f1'][t]:.4f}" for t in tasks] + [int(p["feasible"]), int(p["pareto"]),
                                                                   int(p["chosen"])])
    (out / "tune.md").write_text(markdown(result))
    plot(result, out / "tune.png")


def markdown(result: dict[str, Any]) -> str:
    s = result["single"]
    tasks = result["tasks"]
    lines = [f"# LMMoE size search ({result['dataset']})", "",
             f"Reference: one single-task LSTM per task (width {s['hidden']}, tower {s['tower']}): "
             f"{s['params']} parameters in all, {s['flows_s_64']:.0f} / {s['flows_s_1024']:.0f} flows/s "
             f"(batch 64 / 1024, all models run on each batch), validation macro-F1 "
             + ", ".join(f"{t} {s['val_f1'][t]:.4f}" for t in tasks) + ".",
             f"Validation macro-F1 is the mean over seeds {result['seeds']}. "
             f"Feasible: every task within {result['tolerance']} of its single-task model. "
             "Pareto: no other point has fewer parameters, more flows/s and a higher mean F1 at once.", "",
             "| experts | width | tower | params | vs single | flows/s @64 | flows/s @1024 | mean F1 | "
             + " | ".join(tasks) + " | feasible | Pareto | chosen |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(tasks) + "---|---|---|"]
    for p in sorted(result["points"], key=lambda p: p["params"]):
        lines.append(
            f"| {p['experts']} | {p['hidden']} | {p['tower']} | {p['params']} | {p['params'] / s['params']:.0%} | "
            f"{p['flows_s_64']:.0f} | {p['flows_s_1024']:.0f} | {p['mean_f1']:.4f} | "
            + " | ".join(f"{p['val_f1'][t]:.4f}" for t in tasks)
            + f" | {'yes' if p['feasible'] else ''} | {'yes' if p['pareto'] else ''} | {'**yes**' if p['chosen'] else ''} |")
    lines.append("")
    lines.append("No grid point met the tolerance." if result["chosen"] is None else
                 f"Chosen: {result['chosen']['experts']} experts of width {result['chosen']['hidden']}, "
                 f"tower {result['chosen']['tower']}.")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    s = result["single"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "flows_s_1024", "flows/s at batch 1024")):
        xs = [p[key] for p in pts]
        ys = [p["mean_f1"] for p in pts]
        ax.scatter(xs, ys, c=["tab:green" if p["feasible"] else "tab:gray" for p in pts], s=25, zorder=2)
        front = sorted((p for p in pts if p["pareto"]), key=lambda p: p[key])
        ax.plot([p[key] for p in front], [p["mean_f1"] for p in front], "--", color="tab:blue", lw=1,
                label="Pareto front", zorder=1)
        for p in pts:
            ax.annotate(f"{p['experts']}x{p['hidden']}/{p['tower']}", (p[key], p["mean_f1"]), fontsize=6,
                        xytext=(2, 2), textcoords="offset points")
        chosen = [p for p in pts if p["chosen"]]
        if chosen:
            ax.scatter([chosen[0][key]], [chosen[0]["mean_f1"]], marker="*", s=160, color="tab:red",
                       label="chosen", zorder=3)
        ref_x = s["params"] if key == "params" else s["flows_s_1024"]
        ax.scatter([ref_x], [s["mean_f1"]], marker="s", color="black", label="single-task set", zorder=3)
        ax.axhline(s["mean_f1"] - result["tolerance"], color="black", lw=0.6, ls=":")
        ax.set_xlabel(label)
        ax.set_ylabel("validation mean macro-F1")
        if key == "params":
            ax.set_xscale("log")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("LMMoE size search (green: every task within tolerance of its single-task model)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
