"""Out-of-source evaluation: leave one source out, train on the rest, test on it.

A test split drawn from the same captures as training flatters every model:
the flows share hosts, stacks, RTTs and tools. What an operator gets is the
figure on traffic from *elsewhere*, so this is multa's main yardstick.

For each fold (a source, or a group of the lab's scenario families):

* training rows are the other sources' ``train`` and ``test`` splits, and
  validation rows their ``val`` split (validation drives early stopping,
  temperatures and thresholds, so model selection never sees the left-out
  source);
* the test rows are **every** labelled row of the left-out source;
* the LMMoE, the single-task LSTMs and the classical trees are trained with
  the same budget; per task, macro-F1 over the classes present in the fold.

The out-of-source probabilities of every fold are kept (``oos.npz``): the
open-set and notice thresholds are calibrated on them (``thresholds.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multa_broker.dataset.format import SPLITS, FlowDataset
from multa_broker.errors import MultaError
from multa_broker.model.arch import Arch
from multa_broker.model.experiment import _finite

log = logging.getLogger("multa.model.loso")

#: A source with fewer labelled flows than this is never a fold of its own (its figure would be noise).
MIN_FOLD_ROWS = 100
MODELS = ("lmmoe", "single", "classical")


@dataclass
class LosoSpec:
    dataset: Path
    out: Path
    #: Every fold's models (host context, where ``arch.context`` is None: where the dataset carries it).
    arch: Arch = field(default_factory=Arch)
    train: Any = None  # TrainConfig
    baselines: bool = True
    #: Leave out only these folds (default: every fold with MIN_FOLD_ROWS labelled rows).
    folds: list[str] | None = None
    jobs: int = 1
    #: Variants of the LMMoE recipe trained in every fold beside the main one: {name: TrainConfig}.
    variants: dict[str, Any] = field(default_factory=dict)
    #: Train nothing: report the folds an earlier run with this recipe finished.
    summarise_only: bool = False


def lab_kind(family: str) -> str | None:
    """The lab scenario kind (benign, tunnel, threat) of a scenario family, if the lab knows it."""
    from multa_broker.lab import runner  # noqa: F401  (importing it registers every scenario)
    from multa_broker.lab.scenario import REGISTRY, UNAVAILABLE

    for name in UNAVAILABLE:
        if name.split("-", 1)[0] == family:
            return UNAVAILABLE[name][0]
    for name, spec in REGISTRY.items():
        if name.split("-", 1)[0] == family:
            return spec.kind
    return None


def fold_of(source: str) -> str:
    """The fold a source belongs to: benign lab services form one fold, lab tunnels one, each
    lab threat family its own (scan, bf, dos, ...), every shared corpus its own."""
    if not source.startswith("lab/"):
        return source
    family = source.split("/", 1)[1]
    kind = lab_kind(family)
    if kind in ("benign", "tunnel"):
        return f"lab/{kind}"
    return source


def folds_of(ds: FlowDataset) -> np.ndarray:
    srcs = ds.sources()
    return np.array([fold_of(s) for s in srcs], dtype=object)


def plan_folds(ds: FlowDataset, wanted: list[str] | None) -> list[str]:
    folds = folds_of(ds)
    labelled = (ds.labels >= 0).any(axis=1)
    names, counts = np.unique(folds[labelled], return_counts=True)
    available = {str(n): int(c) for n, c in zip(names, counts)}
    if wanted:
        unknown = [w for w in wanted if w not in available]
        if unknown:
            raise MultaError(f"--fold {', '.join(unknown)}: no such source in the dataset "
                             f"(folds: {', '.join(sorted(available))})")
        return list(wanted)
    return sorted(n for n, c in available.items() if c >= MIN_FOLD_ROWS)


def _fold_datasets(ds: FlowDataset, fold: str) -> tuple[FlowDataset, FlowDataset]:
    """(the other sources, every row of the left-out fold as test).

    The other sources keep their validation split (early stopping, calibration); their test split
    trains too: here the test is the left-out source, and every flow from elsewhere helps.
    """
    folds = folds_of(ds)
    out = folds == fold
    rest = ds.subset(~out)
    rest.split = np.where(rest.split == SPLITS.index("test"), SPLITS.index("train"), rest.split).astype(np.int8)
    held = ds.subset(out)
    held.split = np.full(len(held), SPLITS.index("test"), np.int8)
    return rest, held


def _concat(a: FlowDataset, b: FlowDataset) -> FlowDataset:
    cols = {f.name: np.concatenate([getattr(a, f.name), getattr(b, f.name)])
            for f in dataclasses.fields(FlowDataset) if isinstance(getattr(a, f.name), np.ndarray)}
    return FlowDataset(**cols, tasks=a.tasks, captures=a.captures, meta=a.meta)


def run_fold(spec: LosoSpec, fold: str) -> dict[str, Any]:
    """Train every model without ``fold`` and test it on ``fold``; returns figures and OOS probabilities."""
    import torch

    from multa_broker.model.experiment import (choose_tasks, load_splits, make_lmmoe, make_single, train_model,
                                               use_context)
    from multa_broker.model.training import predict_logits
    from multa_broker.model.calibration import softmax

    torch.set_num_threads(1)
    arch = spec.arch
    started = time.perf_counter()
    ds = FlowDataset.load(spec.dataset)
    rest, held = _fold_datasets(ds, fold)
    work = _concat(rest, held)
    tasks = choose_tasks(rest, None)
    held_tasks = [t for t in tasks if (held.task_labels(t) >= 0).any()]
    classes = {t: list(ds.tasks[t]) for t in tasks}
    splits = load_splits(work, tasks, arch.n)
    result: dict[str, Any] = {"fold": fold, "rows": {t: int((held.task_labels(t) >= 0).sum()) for t in held_tasks},
                              "train_rows": int((rest.split == 0).sum()), "models": {}, "oos": {}}

    def oos(model: Any, trained: Any, task_list: list[str]) -> dict[str, np.ndarray]:
        logits = predict_logits(model, splits["test"].inputs)
        return {task: softmax(logits[i], trained.temperatures[i]) for i, task in enumerate(task_list)}

    from multa_broker.model.classical import dataset_features
    from multa_broker.model.experiment import fit_classical

    context = use_context(ds, arch.context)
    result["context"] = context
    classical = fit_classical(work, tasks, classes, arch.n, spec.train.seed, spec.train.class_weights, context)
    test_feats = dataset_features(work.split_rows("test"), arch.n, context)
    models = {t: m for t, (m, _r) in classical.items()}

    def teachers_for(cfg: Any, task_list: list[str]) -> list[Any] | None:
        return [models[t] for t in task_list] if cfg.distill > 0 else None

    recipes = {"lmmoe": spec.train, **{f"lmmoe:{k}": v for k, v in spec.variants.items()}}
    for name, cfg in recipes.items():
        cfg = dataclasses.replace(cfg, progress=False)
        trained = train_model(make_lmmoe(arch.lmmoe(classes, context), cfg.seed), splits, classes, cfg,
                              desc=f"{fold} {name}", teachers=teachers_for(cfg, tasks))
        result["models"][name] = {t: trained.test[t] for t in held_tasks}
        result["oos"][name] = oos(trained.model, trained, tasks)

    if spec.baselines:
        single_cfg = dataclasses.replace(spec.train, paradigm="separate", progress=False)
        result["models"]["single"] = {}
        result["oos"]["single"] = {}
        for task in tasks:
            tsplits = load_splits(work, [task], arch.n)
            model = make_single(arch.single(task, classes[task], context), single_cfg.seed)
            trained = train_model(model, tsplits, {task: classes[task]}, single_cfg, desc=f"{fold} single {task}",
                                  teachers=teachers_for(single_cfg, [task]))
            if task in held_tasks:
                result["models"]["single"][task] = trained.test[task]
            logits = predict_logits(trained.model, tsplits["test"].inputs)
            result["oos"]["single"][task] = softmax(logits[0], trained.temperatures[0])
        result["models"]["classical"] = {t: classical[t][1]["test"] for t in held_tasks}
        result["oos"]["classical"] = {t: models[t].predict_proba(test_feats) for t in tasks}
    # Labels of the held-out rows, per task, for calibration.
    result["labels"] = {t: held.task_labels(t).astype(np.int64) for t in tasks}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def recipe_key(spec: LosoSpec) -> str:
    """What a fold's result depends on (not which folds run, nor how many at once)."""
    import hashlib

    d = dataclasses.asdict(spec)
    for k in ("folds", "jobs", "out", "summarise_only"):
        d.pop(k, None)
    # Options added later are left out at their do-nothing value, so earlier runs keep their key.
    recipes = [d["train"], *d.get("variants", {}).values()]
    for recipe in recipes:
        if recipe.get("lr_schedule") == "constant":
            del recipe["lr_schedule"]
        for later in ("capture_balance", "distill_crossfit", "distill_augmented", "consistency"):
            if not recipe.get(later):
                recipe.pop(later, None)
        aug = recipe.get("augment")
        if isinstance(aug, dict) and not aug.get("rtt_p"):
            aug.pop("rtt_p", None)
            aug.pop("rtt_ms", None)
    # The architecture's options sat in the spec itself before Arch: flattened, keys stay as they were.
    d.update(d.pop("arch"))
    for later in ("summary_bins", "size_embed", "size_bag", "size_bag_tasks"):
        if not d[later]:
            del d[later]
    if any(r.get("max_steps") for r in recipes):
        d["max_steps_per"] = "stream"  # the cap was per epoch before; those runs trained otherwise
    d["dataset_sha256"] = _sha256(spec.dataset)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    from multa_broker.store import sha256_file

    return sha256_file(path)


def _fold_file(spec: LosoSpec, fold: str, key: str) -> Path:
    return spec.out / "folds" / f"{fold.replace('/', '_')}-{key}.pkl"


def run_and_keep(spec: LosoSpec, fold: str, key: str) -> dict[str, Any]:
    """One fold, its result written as soon as it is done (a stopped run keeps its finished folds)."""
    import pickle

    result = run_fold(spec, fold)
    path = _fold_file(spec, fold, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(path)
    return result


def run(spec: LosoSpec) -> dict[str, Any]:
    """Every fold (in ``spec.jobs`` processes); writes loso.json, loso.md and oos.npz under ``spec.out``.

    Each finished fold is kept under ``out/folds/`` with a key of the recipe and dataset: a rerun
    with the same recipe reuses them, and ``summarise_only`` reports the finished folds without
    training (for a run stopped at its time budget).
    """
    import pickle
    from concurrent.futures import as_completed

    ds = FlowDataset.load(spec.dataset)
    folds = plan_folds(ds, spec.folds)
    if not folds:
        raise MultaError(f"{spec.dataset}: no source has {MIN_FOLD_ROWS} labelled flows to leave out")
    spec.out.mkdir(parents=True, exist_ok=True)
    key = recipe_key(spec)
    done = {f: pickle.loads(_fold_file(spec, f, key).read_bytes()) for f in folds if _fold_file(spec, f, key).is_file()}
    todo = [] if spec.summarise_only else [f for f in folds if f not in done]
    log.info("leave-one-source-out over %d folds (%d kept from an earlier run): %s", len(done) + len(todo),
             len(done), ", ".join(folds))
    if spec.jobs > 1 and todo:
        with ProcessPoolExecutor(max_workers=spec.jobs) as pool:
            futures = [pool.submit(run_and_keep, spec, f, key) for f in todo]
            for fut in as_completed(futures):
                r = fut.result()
                log.info("fold %s done in %.0fs", r["fold"], r["seconds"])
                done[r["fold"]] = r
    else:
        for fold in todo:
            done[fold] = run_and_keep(spec, fold, key)
            log.info("fold %s done in %.0fs", fold, done[fold]["seconds"])
    if not done:
        raise MultaError(f"{spec.out}: no finished fold to report")
    results = [done[f] for f in folds if f in done]
    summary = summarise(results)
    summary["classes"] = {t: list(c) for t, c in ds.tasks.items()}
    _save(spec, results, summary)
    from multa_broker.model import thresholds

    calib = thresholds.calibrate(thresholds.load_oos(spec.out / "oos.npz", "lmmoe"), dict(ds.tasks))
    (spec.out / "thresholds.json").write_text(json.dumps(_finite(calib), indent=1, sort_keys=True) + "\n")
    with open(spec.out / "loso.md", "a") as fh:
        fh.write("\n" + thresholds.markdown(calib))
    summary["thresholds"] = calib
    return summary


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per fold, per model, per task macro-F1; and the mean over folds per task."""
    per_fold: dict[str, dict[str, dict[str, float]]] = {}
    models: list[str] = []
    for r in results:
        per_fold[r["fold"]] = {}
        for model, reports in r["models"].items():
            if model not in models:
                models.append(model)
            per_fold[r["fold"]][model] = {t: float(rep["macro_f1"]) for t, rep in reports.items()}
    tasks = sorted({t for r in results for t in r["rows"]})
    mean: dict[str, dict[str, float]] = {}
    for model in models:
        mean[model] = {}
        for t in tasks:
            vals = [per_fold[f][model][t] for f in per_fold if t in per_fold[f].get(model, {})]
            vals = [v for v in vals if np.isfinite(v)]
            mean[model][t] = float(np.mean(vals)) if vals else float("nan")
    folds_per_task = {t: sorted(f for f in per_fold if t in per_fold[f].get(models[0], {})) for t in tasks}
    rows = {r["fold"]: r["rows"] for r in results}
    return {"models": models, "tasks": tasks, "per_fold": per_fold, "mean": mean,
            "folds_per_task": folds_per_task, "rows": rows,
            "seconds": {r["fold"]: r["seconds"] for r in results}}


def _save(spec: LosoSpec, results: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    (spec.out / "loso.json").write_text(json.dumps(_finite(summary), indent=1, sort_keys=True) + "\n")
    (spec.out / "loso.md").write_text(markdown(summary))
    arrays: dict[str, np.ndarray] = {}
    for r in results:
        for model, per_task in r["oos"].items():
            for task, p in per_task.items():
                arrays[f"{r['fold']}|{model}|{task}|probs"] = p.astype(np.float32)
        for task, y in r["labels"].items():
            arrays[f"{r['fold']}|labels|{task}"] = y
    np.savez_compressed(spec.out / "oos.npz", **arrays)


def markdown(summary: dict[str, Any]) -> str:
    """The out-of-source table: per fold and task, each model's macro-F1; then the mean."""
    models, tasks = summary["models"], summary["tasks"]
    head = "| left out | task | rows | " + " | ".join(models) + " |"
    lines = ["Out of source: macro-F1 on each left-out source (trained on every other source).", "",
             head, "|---|---|---:|" + "---:|" * len(models)]
    for fold, per_model in summary["per_fold"].items():
        for t in tasks:
            if t not in per_model.get(models[0], {}):
                continue
            vals = " | ".join(_f(per_model.get(m, {}).get(t)) for m in models)
            lines.append(f"| {fold} | {t} | {summary['rows'][fold][t]} | {vals} |")
    lines += ["", "Mean over the left-out sources that carry the task:", "",
              "| task | folds | " + " | ".join(models) + " |", "|---|---:|" + "---:|" * len(models)]
    for t in tasks:
        best = max((summary["mean"][m][t] for m in models if np.isfinite(summary["mean"][m][t])), default=None)
        cells = []
        for m in models:
            v = summary["mean"][m][t]
            cells.append(f"**{_f(v)}**" if best is not None and v == best else _f(v))
        lines.append(f"| {t} | {len(summary['folds_per_task'][t])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _f(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"
