"""One training run, end to end: the dataset in, a verified store entry out.

``multa train`` is a thin wrapper around :func:`run`: load the dataset, train
the LMMoE with the chosen paradigm, fit temperatures and open-set thresholds
on validation, evaluate on the held-out test split, optionally train the
baselines with the same budget, and export everything into
``<out>/<name>/<version>/`` with metrics and a confusion-matrix figure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from multa_broker import store
from multa_broker.dataset.format import SPLITS, FlowDataset
from multa_broker.errors import MultaError
from multa_broker.flow import MAX_N
from multa_broker.model.calibration import DEFAULT_REJECT, fit_temperature, pick_threshold, softmax
from multa_broker.model.arch import LMMOE, SINGLE, Arch, architecture
from multa_broker.model.lmmoe import LMMoE, LMMoEConfig, count_params
from multa_broker.model.metrics import ece, mean_macro_f1
from multa_broker.model.single import SingleConfig, SingleTaskLSTM
from multa_broker.model.training import FitResult, SplitTensors, TrainConfig, evaluate, fit, predict_logits

log = logging.getLogger("multa.model.experiment")

BASELINE_DIR = "baselines"


@dataclass
class RunSpec:
    dataset: Path
    out: Path
    name: str = "multa"
    version: str | None = None
    tasks: list[str] | None = None
    arch: Arch = field(default_factory=Arch)
    train: TrainConfig = field(default_factory=TrainConfig)
    baselines: bool = False
    calibrate: bool = True
    reject: float = DEFAULT_REJECT
    set_default: bool = False
    force: bool = False
    command: str = ""
    #: thresholds.json of a `multa train --eval loso` run: open-set thresholds picked out of source.
    calibration: Path | None = None


@dataclass
class Trained:
    """A fitted model with its calibration and its validation/test metrics."""

    model: nn.Module
    fit: FitResult
    temperatures: list[float]
    thresholds: list[float]
    val: dict[str, dict[str, Any]]
    test: dict[str, dict[str, Any]]
    test_ece_uncalibrated: dict[str, float]

    def summary(self) -> dict[str, Any]:
        return {
            "params": count_params(self.model),
            "best_epoch": self.fit.best_epoch,
            "epochs_run": self.fit.epochs_run,
            "train_seconds": round(self.fit.seconds, 1),
            "val_mean_macro_f1": mean_macro_f1(self.val),
            "test_mean_macro_f1": mean_macro_f1(self.test),
            "temperature": dict(zip(self.model.task_names, self.temperatures)),
            "threshold": dict(zip(self.model.task_names, self.thresholds)),
            "test_ece_uncalibrated": self.test_ece_uncalibrated,
            "val": self.val,
            "test": self.test,
            "history": self.fit.history,
        }


def load_dataset(path: Path) -> FlowDataset:
    ds = FlowDataset.load(path)
    if len(ds) == 0:
        raise MultaError(f"{path}: the dataset has no flows")
    return ds


def choose_tasks(ds: FlowDataset, requested: list[str] | None) -> list[str]:
    """The requested tasks (all by default) that have labelled rows in train and val."""
    names = ds.task_names
    for t in requested or []:
        if t not in names:
            raise MultaError(f"task {t!r} is not in the dataset (tasks: {', '.join(names)})")
    chosen = []
    for t in requested or names:
        col = ds.task_labels(t)
        counts = [int((col[ds.split == s] >= 0).sum()) for s in range(len(SPLITS))]
        if counts[0] == 0 or counts[1] == 0:
            msg = f"task {t!r} has {counts[0]} labelled training and {counts[1]} validation rows"
            if requested:
                raise MultaError(msg)
            log.warning("%s; leaving it out", msg)
            continue
        chosen.append(t)
    if not chosen:
        raise MultaError("no task has labelled training and validation rows")
    return chosen


def use_context(ds: FlowDataset, wanted: bool | None) -> bool:
    """Whether models read host context: as asked, by default where the dataset carries it."""
    has = bool(ds.has_ctx.any())
    if wanted and not has:
        raise MultaError("--context on: the dataset carries no host context (rebuild it with this multa)")
    return has if wanted is None else bool(wanted)


def load_splits(ds: FlowDataset, tasks: list[str], n: int) -> dict[str, SplitTensors]:
    return {s: SplitTensors.from_dataset(ds.split_rows(s), tasks, n) for s in SPLITS}


def train_model(model: nn.Module, splits: dict[str, SplitTensors], classes: dict[str, list[str]],
                cfg: TrainConfig, *, calibrate: bool = True, reject: float = DEFAULT_REJECT,
                desc: str = "train", teachers: list[Any] | None = None) -> Trained:
    """Fit, calibrate (temperature per task), pick thresholds on validation, evaluate on test."""
    fit_summary_code(model, splits["train"].inputs)
    result = fit(model, splits["train"], splits["val"], classes, cfg, desc=desc, teachers=teachers)
    val_logits = predict_logits(model, splits["val"].inputs)
    temps, thresholds = [], []
    for t, _task in enumerate(model.task_names):
        y = splits["val"].labels[:, t].numpy()
        # Calibrate and threshold on the classes the model was taught: validation flows of a class
        # with a handful of training rows are open-set cases, and letting them set the temperature
        # (confidently wrong -> T at its cap) ruined calibration on everything else.
        sel = known_rows(y, splits["train"].labels[:, t].numpy())
        temp = fit_temperature(val_logits[t][sel], y[sel]) if calibrate else 1.0
        temps.append(temp)
        thresholds.append(pick_threshold(softmax(val_logits[t][sel], temp), y[sel], reject))
    with torch.no_grad():
        model.temperature.copy_(torch.tensor(temps))
    val = evaluate(model, splits["val"], classes, temps, thresholds)
    test = evaluate(model, splits["test"], classes, temps, thresholds)
    test_logits = predict_logits(model, splits["test"].inputs)
    raw_ece = {}
    for t, task in enumerate(model.task_names):
        y = splits["test"].labels[:, t].numpy()
        sel = y >= 0
        raw_ece[task] = ece(softmax(test_logits[t][sel]), y[sel]) if sel.any() else float("nan")
    return Trained(model, result, temps, thresholds, val, test, raw_ece)


def fit_summary_code(model: nn.Module, inputs: tuple[torch.Tensor, ...], chunk: int = 8192) -> None:
    """Set a model's summary-code bins (preprocess.SummaryCode) from its training flows."""
    code = getattr(model, "summary_code", None)
    if code is None or code.bins == 0:
        return
    parts = []
    with torch.no_grad():
        for start in range(0, int(inputs[0].shape[0]), chunk):
            _x, summary, _last = model.features(*(a[start:start + chunk] for a in inputs))
            parts.append(summary)
    code.fit(torch.cat(parts))


#: A class with fewer training rows than this is "seen too rarely" for calibration.
MIN_TRAIN_ROWS = 20


def known_rows(y_val: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """Validation rows whose class has at least MIN_TRAIN_ROWS training rows."""
    counts = np.bincount(y_train[y_train >= 0], minlength=int(max(y_val.max(initial=0), y_train.max(initial=0))) + 1)
    return (y_val >= 0) & (counts[np.clip(y_val, 0, None)] >= MIN_TRAIN_ROWS)


def make_lmmoe(spec_or_cfg: LMMoEConfig, seed: int) -> LMMoE:
    torch.manual_seed(seed)
    return LMMoE(spec_or_cfg)


def make_single(cfg: SingleConfig, seed: int) -> SingleTaskLSTM:
    torch.manual_seed(seed)
    return SingleTaskLSTM(cfg)


def dataset_summary(ds: FlowDataset, path: Path, tasks: list[str]) -> dict[str, Any]:
    counts = ds.class_counts()
    return {
        "file": path.name,
        "sha256": store.sha256_file(path),
        "flows": {s: int((ds.split == i).sum()) for i, s in enumerate(SPLITS)},
        "captures": len(ds.captures),
        "class_counts": {t: counts[t] for t in tasks},
        "meta": {k: v for k, v in ds.meta.items() if isinstance(v, (str, int, float, bool, list))},
    }


def manifest_for(name: str, version: str, kind: str, trained: Trained, classes: dict[str, list[str]],
                 n: int, arch: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    tasks = [{"name": task, "classes": list(classes[task]), "threshold": round(trained.thresholds[t], 6),
              "temperature": round(trained.temperatures[t], 6)}
             for t, task in enumerate(trained.model.task_names)]
    for t, task in enumerate(trained.model.task_names):
        with torch.no_grad():
            trained.model.temperature[t] = tasks[t]["temperature"]
    metrics = {"test": {task: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "rows": r["rows"],
                               "ece": r["ece"]} for task, r in trained.test.items()},
               "val_mean_macro_f1": mean_macro_f1(trained.val)}
    return {
        "name": name, "version": version, "kind": kind, "tasks": tasks, "n": n,
        "architecture": dict(arch, params=count_params(trained.model)),
        "training": training, "metrics": _finite(metrics),
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "torch": torch.__version__,
    }


def _finite(obj: Any) -> Any:
    """JSON without NaN (manifests are strict JSON): NaN becomes null."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def run(spec: RunSpec) -> Path:
    """Train, evaluate and export; returns the model's store directory."""
    arch = spec.arch
    if not 1 <= arch.n <= MAX_N:
        raise MultaError(f"--n must be within 1..{MAX_N}")
    started = time.perf_counter()
    ds = load_dataset(spec.dataset)
    tasks = choose_tasks(ds, spec.tasks)
    classes = {t: list(ds.tasks[t]) for t in tasks}
    version = spec.version or store.next_version(spec.out, spec.name)
    dest = spec.out / spec.name / version
    if (dest / store.MODEL_FILE).exists() and not spec.force:
        raise MultaError(f"{dest}: a model is already stored there (use another --version or --force)")
    splits = load_splits(ds, tasks, arch.n)
    log.info("dataset %s: %s flows (train/val/test), tasks %s", spec.dataset,
             "/".join(str(len(splits[s])) for s in SPLITS), ", ".join(tasks))
    data = dataset_summary(ds, spec.dataset, tasks)
    from multa_broker.dataset.card import data_card

    data["card"] = data_card(ds)
    training = {"paradigm": spec.train.paradigm, "seed": spec.train.seed, "config": spec.train.to_json(),
                "dataset": data, "command": spec.command}

    context = use_context(ds, arch.context)
    classical = None
    if spec.baselines or spec.train.distill > 0:
        classical = fit_classical(ds, tasks, classes, arch.n, spec.train.seed, spec.train.class_weights, context)
    teachers = [classical[t][0] for t in tasks] if classical and spec.train.distill > 0 else None
    cfg = arch.lmmoe(classes, context)
    lmmoe = train_model(make_lmmoe(cfg, spec.train.seed), splits, classes, spec.train,
                        calibrate=spec.calibrate, reject=spec.reject, desc="lmmoe", teachers=teachers)
    if spec.calibration:
        training["calibration"] = apply_calibration(lmmoe, splits, classes, spec.calibration)
    manifest = manifest_for(spec.name, version, LMMOE, lmmoe, classes, arch.n, architecture(cfg), training)
    metrics: dict[str, Any] = {"dataset": data, "lmmoe": lmmoe.summary()}

    if spec.baselines:
        metrics["single"], metrics["classical"] = {}, {}
        # The single-task models see only their task's rows: both paradigms are the same for them.
        single_cfg = dataclasses.replace(spec.train, paradigm="separate")
        for task in tasks:
            one = {task: classes[task]}
            tsplits = load_splits(ds, [task], arch.n)
            scfg = arch.single(task, classes[task], context)
            trained = train_model(make_single(scfg, spec.train.seed), tsplits, one, single_cfg,
                                  calibrate=spec.calibrate, reject=spec.reject, desc=f"single {task}",
                                  teachers=[classical[task][0]] if teachers else None)
            smanifest = manifest_for(f"{spec.name}-single-{task}", version, SINGLE, trained, one, arch.n,
                                     architecture(scfg), training)
            store.export(trained.model, smanifest, dest / BASELINE_DIR / f"single-{task}")
            metrics["single"][task] = trained.summary()
        metrics["classical"] = {task: r for task, (_m, r) in classical.items()}

    if spec.calibration and (spec.calibration.parent / "loso.json").is_file():
        metrics["loso"] = json.loads((spec.calibration.parent / "loso.json").read_text())
    store.export(lmmoe.model, manifest, dest)
    (dest / "metrics.json").write_text(json.dumps(_finite(metrics), indent=1, sort_keys=True) + "\n")
    from multa_broker.model.figures import confusion_png

    confusion_png(lmmoe.test, classes, dest / "confusion_test.png",
                  f"{spec.name}/{version} on the held-out test split (rows: true class)")
    (dest / "REPORT.md").write_text(report_markdown(manifest, metrics) + _report_extras(spec, data["card"]))
    if spec.set_default:
        store.set_default(spec.out, spec.name, version)
    log.info("stored %s in %.0fs", dest, time.perf_counter() - started)
    return dest


def apply_calibration(trained: Trained, splits: dict[str, SplitTensors], classes: dict[str, list[str]],
                      path: Path) -> dict[str, Any]:
    """Replace the validation-picked open-set thresholds by out-of-source ones; re-score val and test."""
    try:
        calib = json.loads(Path(path).read_text())
        picked = {t: float(o["threshold"]) for t, o in calib["open_set"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MultaError(f"--calibration {path}: not a thresholds.json of `multa train --eval loso` ({e})") from None
    for t, task in enumerate(trained.model.task_names):
        if task in picked:
            trained.thresholds[t] = picked[task]
    trained.val = evaluate(trained.model, splits["val"], classes, trained.temperatures, trained.thresholds)
    trained.test = evaluate(trained.model, splits["test"], classes, trained.temperatures, trained.thresholds)
    return {"file": str(path), "open_set": picked,
            "notice": {c: o["threshold"] for c, o in calib.get("notice", {}).items()},
            "cross_validated": {"open_set": {t: o["cross_validated"] for t, o in calib["open_set"].items()},
                                "notice": {c: o["cross_validated"] for c, o in calib.get("notice", {}).items()}}}


def train_classical(ds: FlowDataset, tasks: list[str], classes: dict[str, list[str]], n: int, seed: int,
                    class_weights: str, context: bool = False) -> dict[str, Any]:
    """Per-task gradient-boosting baselines; returns their validation/test metrics."""
    return {task: r for task, (_m, r) in fit_classical(ds, tasks, classes, n, seed, class_weights, context).items()}


def fit_classical(ds: FlowDataset, tasks: list[str], classes: dict[str, list[str]], n: int, seed: int,
                  class_weights: str, context: bool = False) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Per-task gradient-boosting models on the train split, with their validation/test metrics."""
    from multa_broker.model.classical import dataset_features, fit_task
    from multa_broker.model.metrics import task_report

    feats = {s: dataset_features(ds.split_rows(s), n, context) for s in SPLITS}
    out: dict[str, tuple[Any, dict[str, Any]]] = {}
    for task in tasks:
        col = {s: ds.split_rows(s).task_labels(task).astype(np.int64) for s in SPLITS}
        sel = {s: col[s] >= 0 for s in SPLITS}
        model = fit_task(task, classes[task], feats["train"][sel["train"]], col["train"][sel["train"]],
                         feats["val"][sel["val"]], col["val"][sel["val"]], seed, class_weights, context)
        out[task] = (model, {"params": model.params,
                             **{s: task_report(col[s][sel[s]], model.predict_proba(feats[s][sel[s]]), classes[task])
                                for s in ("val", "test")}})
    return out


def report_markdown(manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Test-split figures of the LMMoE (and baselines when trained), as a markdown table."""
    lines = [f"# {manifest['name']}/{manifest['version']}: held-out test split", "",
             f"Trained with: `{manifest['training'].get('command') or '(library call)'}`", "",
             "| task | test rows | LMMoE acc | LMMoE macro-F1 |"
             + (" single-task acc | single-task macro-F1 | classical acc | classical macro-F1 |"
                if "single" in metrics else ""),
             "|---|---:|---:|---:|" + ("---:|---:|---:|---:|" if "single" in metrics else "")]
    for task, r in metrics["lmmoe"]["test"].items():
        row = f"| {task} | {r['rows']} | {_f(r['accuracy'])} | {_f(r['macro_f1'])} |"
        if "single" in metrics:
            s = metrics["single"][task]["test"][task]
            c = metrics["classical"][task]["test"]
            row += f" {_f(s['accuracy'])} | {_f(s['macro_f1'])} | {_f(c['accuracy'])} | {_f(c['macro_f1'])} |"
        lines.append(row)
    lm = metrics["lmmoe"]
    lines += ["", f"LMMoE parameters: {lm['params']}; best epoch {lm['best_epoch']} of {lm['epochs_run']}; "
              f"validation mean macro-F1 {_f(lm['val_mean_macro_f1'])}.", "",
              "Open set (threshold on the calibrated max probability, picked on validation):", "",
              "| task | temperature | threshold | test coverage | test accuracy when accepted | "
              "test ECE raw | test ECE calibrated |", "|---|---:|---:|---:|---:|---:|---:|"]
    for task, r in lm["test"].items():
        o = r.get("open_set", {})
        lines.append(f"| {task} | {lm['temperature'][task]:.3f} | {lm['threshold'][task]:.3f} | "
                     f"{_f(o.get('coverage'))} | {_f(o.get('accuracy_accepted'))} | "
                     f"{_f(lm['test_ece_uncalibrated'][task])} | {_f(r['ece'])} |")
    return "\n".join(lines) + "\n"


def _report_extras(spec: RunSpec, card: dict[str, Any]) -> str:
    """The out-of-source evaluation (when calibrated from one) and the data card, for REPORT.md."""
    from multa_broker.dataset.card import render_markdown

    parts = []
    if spec.calibration and (spec.calibration.parent / "loso.md").is_file():
        parts += ["", "## Out of source (leave one source out)", "",
                  (spec.calibration.parent / "loso.md").read_text()]
    parts += ["", "## Data card", "", render_markdown(card)]
    return "\n".join(parts)


def _f(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"
