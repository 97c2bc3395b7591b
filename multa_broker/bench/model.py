"""``multa bench model``: the LMMoE against the single-task LSTMs it replaces (and classical models).

One run, same machine, same thread count, reports side by side:

* parameters and bytes on disk (TorchScript ``model.pt`` files);
* CPU flows/s at batch 1, 64 and 1024 -- the single-task set runs every one
  of its models on each batch, as a one-model-per-task deployment must;
  medians of interleaved repeats (:mod:`multa_broker.model.speed`);
* per-task macro-F1 on the dataset's test split for the LMMoE, the
  single-task LSTMs and the classical per-task models (retrained here with the
  model's seed: a few seconds of gradient boosting);
* the targets (issue 14, beyond MulTA's own 50% / 2x): size <= 40% of the
  single-task set's bytes, >= 3x its flows/s at batch 64 and 1024, test
  macro-F1 at most 0.5 points below each single-task model and not below the
  classical model;
* out of source: the leave-one-source-out means recorded in the model's
  metrics when it was calibrated from a ``multa train --eval loso`` run.

Needs a model trained with ``multa train --baselines`` (the single-task
models live in its ``baselines/`` folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from pathlib import Path
from typing import Any

log = logging.getLogger("multa.model.bench")

TARGETS = {"size_ratio": 0.4, "speedup": 3.0, "f1_drop": 0.005}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default",
                        help="model_store/<name>/<version> trained with --baselines, or 'default'")
    parser.add_argument("--dataset", type=Path, default=Path("data/dataset.npz"),
                        help="dataset whose test split gives macro-F1 and timing inputs (default data/dataset.npz)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every model (default 1)")
    parser.add_argument("--batches", default="1,64,1024", help="batch sizes (default 1,64,1024)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per batch size (default 15)")
    parser.add_argument("--no-classical", action="store_true", help="skip retraining the classical models")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--impl", action="store_true",
                        help="instead: time three ways to run E LSTM experts (the design choice in lmmoe.py)")
    parser.add_argument("--experts", type=int, default=3, help="--impl: experts (default 3)")
    parser.add_argument("--hidden", type=int, default=32, help="--impl: expert width (default 32)")


def _single_dirs(model_dir: Path, tasks: list[str]) -> list[Path]:
    from multa_broker.errors import MultaError
    from multa_broker.model.experiment import BASELINE_DIR

    dirs = [model_dir / BASELINE_DIR / f"single-{t}" for t in tasks]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise MultaError(f"{missing[0]}: no single-task baseline; train the model with `multa train --baselines`")
    return dirs


def _params(model: Any) -> int:
    """Trained parameters, as the manifest records them: an archive in its inference form holds some
    of them as buffers (the LMMoE's fused heads), with padding that was never trained."""
    recorded = (model.manifest.get("architecture") or {}).get("params")
    return int(recorded) if recorded is not None else sum(p.numel() for p in model.module.parameters())


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from multa_broker import store
    from multa_broker.dataset.format import FlowDataset
    from multa_broker.errors import MultaError
    from multa_broker.model.speed import flows_per_second, synthetic_inputs, take
    from multa_broker.model.training import SplitTensors, evaluate

    torch.set_num_threads(max(1, args.threads))
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise MultaError(f"--batches: {args.batches!r} is not a comma-separated list of integers") from None
    main = store.load(args.model)
    tasks = [t["name"] for t in main.tasks]
    classes = {t["name"]: list(t["classes"]) for t in main.tasks}
    n = int(main.manifest["n"])
    singles = [store.load(d) for d in _single_dirs(main.path, tasks)]

    ds = FlowDataset.load(args.dataset) if args.dataset.exists() else None
    if ds is not None:
        want = main.manifest["training"]["dataset"].get("sha256")
        if want and want != store.sha256_file(args.dataset):
            log.warning("%s differs from the dataset %s was trained on", args.dataset, main.ident)
        test = ds.split_rows("test")
        pool = test.encoded(n)
    else:
        log.warning("%s not found: timing on synthetic flows, macro-F1 from the training run's metrics",
                    args.dataset)
        pool = synthetic_inputs(4096, n)

    out: dict[str, Any] = {
        "model": main.ident, "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "tasks": tasks,
        "lmmoe": {"params": _params(main),
                  "bytes": (main.path / store.MODEL_FILE).stat().st_size,
                  "architecture": main.manifest.get("architecture")},
        "single": {"params": sum(_params(s) for s in singles),
                   "bytes": sum((s.path / store.MODEL_FILE).stat().st_size for s in singles),
                   "architecture": singles[0].manifest.get("architecture")},
        "flows_s": {},
    }
    for b in batches:
        x = take(pool, b, seed=b)
        fps = flows_per_second({"lmmoe": [main.module], "single": [s.module for s in singles]}, x,
                               repeats=args.repeats)
        out["flows_s"][str(b)] = {**fps, "speedup": fps["lmmoe"] / fps["single"]}

    f1: dict[str, dict[str, float]] = {t: {} for t in tasks}
    if ds is not None:
        split = SplitTensors.from_dataset(test, tasks, n)
        for task, r in evaluate(main.module, split, classes).items():
            f1[task]["lmmoe"] = r["macro_f1"]
        for task, s in zip(tasks, singles):
            r = evaluate(s.module, SplitTensors.from_dataset(test, [task], n), {task: classes[task]})[task]
            f1[task]["single"] = r["macro_f1"]
        if not args.no_classical:
            from multa_broker.model.experiment import train_classical

            seed = int(main.manifest["training"].get("seed", 1))
            cw = main.manifest["training"].get("config", {}).get("class_weights", "sqrt")
            # Like for like: the trees read host context where the model does.
            context = "context_spec" in main.manifest
            for task, r in train_classical(ds, tasks, classes, n, seed, cw, context).items():
                f1[task]["classical"] = r["test"]["macro_f1"]
        out["f1_source"] = f"{args.dataset} test split ({len(test)} flows)"
    else:
        metrics = json.loads((main.path / "metrics.json").read_text())
        for task in tasks:
            f1[task]["lmmoe"] = metrics["lmmoe"]["test"][task]["macro_f1"]
            if "single" in metrics:
                f1[task]["single"] = metrics["single"][task]["test"][task]["macro_f1"]
                f1[task]["classical"] = metrics["classical"][task]["test"]["macro_f1"]
        out["f1_source"] = f"{main.path / 'metrics.json'} (recorded at training time)"
    out["f1"] = f1
    out["out_of_source"] = out_of_source(main.path)
    out["targets"] = check_targets(out)
    return out


def check_targets(r: dict[str, Any]) -> dict[str, Any]:
    size = r["lmmoe"]["bytes"] / r["single"]["bytes"]
    params = r["lmmoe"]["params"] / r["single"]["params"]
    speed = {b: v["speedup"] for b, v in r["flows_s"].items() if b in ("64", "1024")}
    drops = {t: v["single"] - v["lmmoe"] for t, v in r["f1"].items() if "single" in v and "lmmoe" in v}
    vs_classical = {t: v["lmmoe"] - v["classical"] for t, v in r["f1"].items() if "classical" in v}
    out: dict[str, Any] = {
        "size_ratio_bytes": size, "size_ratio_params": params, "size_met": size <= TARGETS["size_ratio"],
        "speedup": speed, "speed_met": bool(speed) and all(v >= TARGETS["speedup"] for v in speed.values()),
        "f1_drop": drops, "f1_met": all(d <= TARGETS["f1_drop"] for d in drops.values()),
        "vs_classical": vs_classical, "classical_met": all(d >= 0 for d in vs_classical.values()),
    }
    oos = r.get("out_of_source", {}).get("mean")
    if oos:
        out["oos_vs_single"] = {t: v["lmmoe"] - v["single"] for t, v in oos.items() if "single" in v}
        out["oos_vs_classical"] = {t: v["lmmoe"] - v["classical"] for t, v in oos.items() if "classical" in v}
        out["oos_met"] = all(d >= 0 for d in [*out["oos_vs_single"].values(), *out["oos_vs_classical"].values()])
    return out


def out_of_source(model_dir: Path) -> dict[str, Any]:
    """The leave-one-source-out means recorded beside the model ({} when it was not evaluated so)."""
    path = model_dir / "metrics.json"
    if not path.is_file():
        return {}
    loso = json.loads(path.read_text()).get("loso")
    if not loso:
        return {}
    mean = {t: {m: loso["mean"][m][t] for m in loso["mean"]} for t in loso["tasks"]}
    return {"mean": mean, "folds": loso["folds_per_task"]}


def table(r: dict[str, Any]) -> str:
    lm, si, t = r["lmmoe"], r["single"], r["targets"]
    ok = {True: "met", False: "MISSED"}
    lines = [f"multa bench model: {r['model']} vs {len(r['tasks'])} single-task LSTMs "
             f"({r['threads']} thread{'s' if r['threads'] != 1 else ''}, torch {r['torch']})", "",
             "| | LMMoE | single-task set | ratio |", "|---|---:|---:|---:|",
             f"| parameters | {lm['params']:,} | {si['params']:,} | {t['size_ratio_params']:.0%} |",
             f"| bytes on disk | {lm['bytes']:,} | {si['bytes']:,} | {t['size_ratio_bytes']:.0%} |"]
    for b, v in r["flows_s"].items():
        lines.append(f"| flows/s, batch {b} | {v['lmmoe']:,.0f} | {v['single']:,.0f} | {v['speedup']:.2f}x |")
    lines += ["", f"Macro-F1, {r['f1_source']}:", "", "| task | LMMoE | single-task | classical | LMMoE - single |",
              "|---|---:|---:|---:|---:|"]
    for task, v in r["f1"].items():
        d = v.get("lmmoe", float("nan")) - v.get("single", float("nan"))
        lines.append(f"| {task} | {_f(v.get('lmmoe'))} | {_f(v.get('single'))} | {_f(v.get('classical'))} | "
                     f"{d:+.3f} |")
    oos = r.get("out_of_source", {}).get("mean")
    if oos:
        models = list(next(iter(oos.values())))
        lines += ["", "Out of source (mean macro-F1 over left-out sources, recorded at training time):", "",
                  "| task | folds | " + " | ".join(models) + " |", "|---|---:|" + "---:|" * len(models)]
        for task, v in oos.items():
            lines.append(f"| {task} | {len(r['out_of_source']['folds'][task])} | "
                         + " | ".join(_f(v[m]) for m in models) + " |")
    lines += ["", "Targets:",
              f"- size <= {TARGETS['size_ratio']:.0%} of the single-task set: {t['size_ratio_bytes']:.0%} of the "
              f"bytes -> {ok[t['size_met']]}",
              f"- >= {TARGETS['speedup']:.0f}x flows/s at batch 64 and 1024: "
              + ", ".join(f"{b}: {v:.2f}x" for b, v in t["speedup"].items()) + f" -> {ok[t['speed_met']]}",
              f"- test macro-F1 at most {TARGETS['f1_drop'] * 100:.1f} points below single-task: "
              + ", ".join(f"{k} {-v:+.3f}" for k, v in t["f1_drop"].items()) + f" -> {ok[t['f1_met']]}",
              "- test macro-F1 not below the classical model: "
              + (", ".join(f"{k} {v:+.3f}" for k, v in t["vs_classical"].items()) + f" -> {ok[t['classical_met']]}"
                 if t["vs_classical"] else "not measured")]
    if "oos_met" in t:
        lines.append("- out of source, not below single-task and classical: "
                     + ", ".join(f"{k} {t['oos_vs_single'][k]:+.3f}/{t['oos_vs_classical'].get(k, float('nan')):+.3f}"
                                 for k in t["oos_vs_single"]) + f" -> {ok[t['oos_met']]}")
    return "\n".join(lines) + "\n"


def _f(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def expert_implementations(experts: int, hidden: int, n: int, batches: list[int], repeats: int) -> dict[str, Any]:
    """flows/s of the three ways to run E LSTM experts in :mod:`multa_broker.model.experts`."""
    import torch

    from multa_broker.model.experts import IMPLEMENTATIONS
    from multa_broker.model.preprocess import INPUT_DIM
    from multa_broker.model.speed import flows_per_second, synthetic_inputs, take
    from multa_broker.store import script

    torch.manual_seed(0)
    scripted = {name: [script(cls(INPUT_DIM, experts, hidden).eval())] for name, cls in IMPLEMENTATIONS.items()}
    pool = synthetic_inputs(4096, n)
    out: dict[str, Any] = {}
    for b in batches:
        x = take(pool, b, seed=b)
        feats = torch.rand(n, b, INPUT_DIM)  # time-major, as the experts read it
        out[str(b)] = flows_per_second(scripted, (feats, x[3] - 1), repeats=repeats)
    return out


def run(args: argparse.Namespace) -> int:
    if args.impl:
        import torch

        from multa_broker.flow import DEFAULT_N

        torch.set_num_threads(max(1, args.threads))
        batches = [int(b) for b in args.batches.split(",")]
        r = expert_implementations(args.experts, args.hidden, DEFAULT_N, batches, args.repeats)
        if args.json:
            print(json.dumps(r, indent=1))
        else:
            names = list(next(iter(r.values())))
            print(f"{args.experts} experts of width {args.hidden}, N={DEFAULT_N}, {args.threads} thread(s): flows/s")
            print("| batch | " + " | ".join(names) + " |")
            print("|---:|" + "---:|" * len(names))
            for b, v in r.items():
                print(f"| {b} | " + " | ".join(f"{v[k]:,.0f}" for k in names) + " |")
        return 0
    r = measure(args)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(table(r), end="")
    return 0
