"""Training: the joint and separate paradigms, class weights, early stopping.

* **joint** -- one dataset labelled for every task: batches come from the rows
  that carry all of the model's task labels; the loss is the weighted sum of
  the task losses.
* **separate** -- a dataset per task: each task has its own labelled rows and
  batches are drawn per task (round-robin by default, or proportional to the
  task's row count). The loss covers every task whose label a batch row
  carries; missing labels (-1) are masked out.

Both stop early on the validation mean macro-F1 and restore the best epoch.
The single-task baselines train with this same loop (one task, so both
paradigms coincide) and the same budget.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from multa_broker.dataset.format import FlowDataset
from multa_broker.errors import MultaError
from multa_broker.model.augment import AugmentConfig, augment
from multa_broker.model.metrics import mean_macro_f1, task_report

log = logging.getLogger("multa.model.training")

PARADIGMS = ("joint", "separate")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    paradigm: str = "separate"
    epochs: int = 60
    patience: int = 10
    #: No early stop before this epoch: validation F1 often spikes in the first epochs.
    min_epochs: int = 15
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    #: none | sqrt | inverse: per-class loss weights from training counts.
    class_weights: str = "sqrt"
    #: task -> loss weight (default 1 each).
    task_weights: dict[str, float] = field(default_factory=dict)
    #: separate paradigm: round-robin | proportional.
    sampling: str = "round-robin"
    seed: int = 1
    progress: bool = True
    #: Cap on optimizer steps per epoch and per batch stream (None: one pass over the labelled rows).
    #: Per stream, so that under a cap each task of a separately trained LMMoE still gets as many
    #: batches as its single-task baseline does, as it does without the cap.
    max_steps: int | None = None
    #: Early stopping reads the mean of the last ``smooth`` epochs' validation scores: one lucky
    #: epoch on a small, differently mixed validation split should not pick the weights.
    smooth: int = 1
    #: Training-time augmentation (augment.py); off unless given.
    augment: AugmentConfig = field(default_factory=AugmentConfig.off)
    #: Label smoothing of every task's cross-entropy.
    label_smoothing: float = 0.0
    #: Weight of the teacher's soft labels in each task's loss (0: no distillation).
    distill: float = 0.0
    #: Share of training rows whose host context is hidden (as from an older Zeek package or a
    #: host first seen), so that a model with context still works without it.
    context_dropout: float = 0.1
    #: Decay of an exponential moving average of the weights, updated every step (0: off). With
    #: it, validation, early stopping and the stored model use the average, not the last step's
    #: weights: on small data the average sits in a flatter minimum (Polyak averaging).
    ema: float = 0.0
    #: Learning-rate schedule: ``constant``, or ``cosine`` -- annealed per step from ``lr`` to
    #: ``lr``/100 over ``epochs``. At a constant rate the weights keep jumping between epochs, and
    #: which epoch early stopping lands on decides much of the out-of-source figure.
    lr_schedule: str = "constant"
    #: Exponent a of capture balancing: a training row is drawn with probability proportional to
    #: (its capture's labelled rows for the task)^-a. 0 draws every row once per pass; 1 gives
    #: every capture the same share. A few large captures (one flood, one busy trace) otherwise
    #: fill most batches, and a model learns those captures rather than their classes.
    capture_balance: float = 0.0
    #: With distillation: score each training flow by trees fitted without its capture, over this
    #: many capture-grouped folds (0: the teacher's own, nearly one-hot, view of its training flows).
    distill_crossfit: int = 0
    #: With distillation: the teacher scores every training batch as the student sees it, after
    #: augmentation and hidden context (the student matches the trees' function on the inputs it
    #: trains on), instead of each flow once, as captured.
    distill_augmented: bool = False
    #: Weight of a consistency term: each training batch is seen in two independently augmented
    #: views, both trained on, and every task's predictions on the two are pulled together by
    #: their Jensen-Shannon divergence (AugMix, Hendrycks et al., ICLR 2020). Seeing variants
    #: teaches the classes; the term asks for the same answer whatever network the flow crossed.
    #: 0: off (one view). Needs augmentation: two unaugmented views are the same flow.
    consistency: float = 0.0

    def __post_init__(self) -> None:
        # At construction, so a bad value stops before any model (or teacher tree) is trained.
        if self.capture_balance < 0:
            raise MultaError(f"capture balance must be >= 0, not {self.capture_balance}")
        if self.distill_crossfit < 0 or self.distill_crossfit == 1:
            raise MultaError(f"cross-fitted distillation needs at least 2 folds (or 0 for none), "
                             f"not {self.distill_crossfit}")
        if self.distill_augmented and self.distill_crossfit:
            raise MultaError("distillation on augmented batches and cross-fitted distillation exclude "
                             "each other: out-of-fold scores exist only for flows as captured")
        if not self.consistency >= 0 or not math.isfinite(self.consistency):
            raise MultaError(f"consistency weight must be a finite number >= 0, not {self.consistency}")
        if self.consistency > 0 and not self.augment.active:
            raise MultaError("--consistency needs augmentation (--augment on): two unaugmented views of a "
                             "flow are the same flow")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SplitTensors:
    """One split's model inputs and labels, labels in the model's task order."""

    #: sizes, dirs, iats, lengths, proto, ctx, has_ctx (the model's arguments, in order).
    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor  # int64 [F, T], -1 = missing
    #: Each row's capture index (for capture balancing); None: every row its own capture.
    capture: np.ndarray | None = None

    @classmethod
    def from_dataset(cls, ds: FlowDataset, tasks: Sequence[str], n: int) -> "SplitTensors":
        enc = ds.encoded(n)
        inputs = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in
                       (enc.sizes, enc.dirs, enc.iats, enc.lengths, enc.proto, enc.ctx,
                        enc.has_ctx.astype(np.float32)))
        cols = [ds.task_names.index(t) for t in tasks]
        labels = torch.from_numpy(ds.labels[:, cols].astype(np.int64)) if len(ds) else torch.zeros((0, len(cols)), dtype=torch.long)
        return cls(inputs, labels, np.asarray(ds.capture, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(a[idx] for a in self.inputs)

    def augmented_rows(self, idx: torch.Tensor, rng: np.random.Generator,
                       cfg: AugmentConfig) -> tuple[torch.Tensor, ...]:
        sizes, dirs, iats, lengths, proto, ctx, has_ctx = (a.numpy() for a in self.rows(idx))
        out = augment(sizes, dirs, iats, lengths, proto, rng, cfg)
        return (*(torch.from_numpy(a) for a in out), torch.from_numpy(proto), torch.from_numpy(ctx),
                torch.from_numpy(has_ctx))


def hide_context(rows: tuple[torch.Tensor, ...], share: float, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Rows with the host context of about ``share`` of them zeroed and flagged absent."""
    if share <= 0:
        return rows
    keep = torch.from_numpy((rng.random(int(rows[0].shape[0])) >= share).astype(np.float32))
    return (*rows[:5], rows[5] * keep.unsqueeze(1), rows[6] * keep)


def predict_logits(model: nn.Module, inputs: Sequence[torch.Tensor], batch: int = 4096) -> list[np.ndarray]:
    """Logits per task for all rows (eval mode, no autograd)."""
    was_training = model.training
    model.eval()
    # Models without host context (older archives among them) take the first five inputs only.
    if not getattr(model, "context", False):
        inputs = inputs[:5]
    outs: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for start in range(0, int(inputs[0].shape[0]), batch):
            part = model.logits(*(a[start:start + batch] for a in inputs))
            outs.append([z.numpy() for z in part])
    model.train(was_training)
    if not outs:
        return [np.zeros((0, 1), np.float32) for _ in model.task_names]
    return [np.concatenate([o[t] for o in outs]) for t in range(len(outs[0]))]


def evaluate(model: nn.Module, split: SplitTensors, classes: dict[str, list[str]],
             temperatures: Sequence[float] | None = None,
             thresholds: Sequence[float] | None = None) -> dict[str, dict[str, Any]]:
    """Per-task metrics on the rows of ``split`` that carry the task's label."""
    from multa_broker.model.calibration import softmax

    logits = predict_logits(model, split.inputs)
    out: dict[str, dict[str, Any]] = {}
    for t, task in enumerate(model.task_names):
        y = split.labels[:, t].numpy()
        sel = y >= 0
        temp = temperatures[t] if temperatures is not None else 1.0
        probs = softmax(logits[t][sel], temp) if sel.any() else np.zeros((0, len(classes[task])))
        out[task] = task_report(y[sel], probs, classes[task], thresholds[t] if thresholds is not None else None)
    return out


def class_weights(y: np.ndarray, n_classes: int, mode: str, p: np.ndarray | None = None) -> torch.Tensor:
    """Loss weight per class: 1 (none), count^-1/2 (sqrt) or count^-1 (inverse), mean 1 over rows.

    With ``p`` (the rows' draw probabilities under capture balancing) a class counts as many rows
    as the batches hold of it on average, not as the split has."""
    ok = y >= 0
    counts = (np.bincount(y[ok], minlength=n_classes).astype(np.float64) if p is None else
              np.bincount(y[ok], weights=p[ok] / p[ok].sum() * ok.sum(), minlength=n_classes))
    if mode == "none" or counts.sum() == 0:
        return torch.ones(n_classes)
    power = {"sqrt": 0.5, "inverse": 1.0}.get(mode)
    if power is None:
        raise MultaError(f"unknown class-weight mode {mode!r} (none, sqrt, inverse)")
    w = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    w = w / ((w * counts).sum() / counts.sum())
    return torch.tensor(w, dtype=torch.float32)


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]]
    val: dict[str, dict[str, Any]]


def _cycle(rows: np.ndarray, batch: int, rng: np.random.Generator,
           p: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Endless batches over ``rows``: each pass a reshuffle, or with ``p`` len(rows) draws by ``p``."""
    while True:
        perm = rng.permutation(rows) if p is None else rng.choice(rows, size=len(rows), replace=True, p=p)
        for start in range(0, len(perm), batch):
            yield perm[start:start + batch]


def capture_probs(capture: np.ndarray | None, rows: np.ndarray, power: float) -> np.ndarray | None:
    """Draw probabilities of ``rows`` under capture balancing (None: uniform, one pass each)."""
    if power <= 0 or capture is None or len(rows) == 0:
        return None
    _, inverse, counts = np.unique(capture[rows], return_inverse=True, return_counts=True)
    w = counts[inverse].astype(np.float64) ** -power
    return w / w.sum()


def _task_rows(train: SplitTensors, tasks: Sequence[str], paradigm: str) -> list[np.ndarray]:
    labels = train.labels.numpy()
    if paradigm == "joint":
        rows = np.flatnonzero((labels >= 0).all(axis=1))
        if len(rows) == 0:
            raise MultaError(
                f"joint training needs rows labelled for every task ({', '.join(tasks)}); the training "
                "split has none: use --paradigm separate or fewer --tasks")
        return [rows]
    out = []
    for t, task in enumerate(tasks):
        rows = np.flatnonzero(labels[:, t] >= 0)
        if len(rows) == 0:
            raise MultaError(f"task {task!r} has no labelled training rows")
        out.append(rows)
    return out


def _teacher_features(teachers: Sequence[Any], inputs: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
    from multa_broker.model.classical import flow_features, with_context

    arrays = [a.numpy() for a in inputs]
    plain = flow_features(*arrays[:5])
    with_ctx = with_context(plain, *arrays[5:]) if any(getattr(m, "context", False) for m in teachers) else None
    return plain, with_ctx


def teacher_probs(teachers: Sequence[Any], inputs: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """Each task's teacher probabilities for every row; None where a task has no teacher."""
    plain, with_ctx = _teacher_features(teachers, inputs)
    return [None if m is None else torch.from_numpy(
        m.predict_proba(with_ctx if getattr(m, "context", False) else plain).astype(np.float32)) for m in teachers]


def batch_teacher_probs(teachers: Sequence[Any], rows: Sequence[torch.Tensor],
                        labels: torch.Tensor) -> list[torch.Tensor | None]:
    """As :func:`teacher_probs` for one batch, scoring only the tasks some of its rows carry (in
    the separate paradigm a batch is one task's)."""
    carried = (labels >= 0).any(dim=0).tolist()
    return teacher_probs([m if carried[t] else None for t, m in enumerate(teachers)], rows)


def crossfit_teacher_probs(teachers: Sequence[Any], train: "SplitTensors", folds: int, seed: int,
                           class_weights: str) -> list[torch.Tensor | None]:
    """As :func:`teacher_probs` for the training rows, each labelled row scored out of fold by trees
    fitted without its capture (:func:`multa_broker.model.classical.crossfit_proba`)."""
    from multa_broker.model.classical import crossfit_proba

    plain, with_ctx = _teacher_features(teachers, train.inputs)
    labels = train.labels.numpy()
    groups = train.capture if train.capture is not None else np.arange(len(train))
    out: list[torch.Tensor | None] = []
    for t, m in enumerate(teachers):
        if m is None:
            out.append(None)
            continue
        x = with_ctx if getattr(m, "context", False) else plain
        rows = labels[:, t] >= 0
        probs = np.zeros((len(x), len(m.classes)))
        probs[~rows] = m.predict_proba(x[~rows])
        probs[rows] = crossfit_proba(m, x[rows], labels[rows, t], groups[rows], folds, seed, class_weights)
        out.append(torch.from_numpy(probs.astype(np.float32)))
    return out


def js_divergence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean Jensen-Shannon divergence between the softmaxes of two [B, C] logit tensors (nats)."""
    pa, pb = torch.softmax(a, dim=1), torch.softmax(b, dim=1)
    log_m = (0.5 * (pa + pb)).clamp_min(1e-7).log()
    kl = nn.functional.kl_div
    return 0.5 * (kl(log_m, pa, reduction="batchmean") + kl(log_m, pb, reduction="batchmean"))


def _views(train: "SplitTensors", idx: torch.Tensor, rng: np.random.Generator, cfg: TrainConfig,
           context: bool, views: int) -> tuple[torch.Tensor, ...]:
    """The batch's rows as the model sees them: ``views`` independently augmented copies, stacked."""
    out = []
    for _ in range(views):
        rows = train.augmented_rows(idx, rng, cfg.augment) if cfg.augment.active else train.rows(idx)
        out.append(hide_context(rows, cfg.context_dropout, rng) if context else rows)
    return out[0] if views == 1 else tuple(torch.cat(parts) for parts in zip(*out))


def _soft_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets, weighted per row like the hard loss's class weights."""
    per_row = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1)
    return (per_row * weight).sum() / weight.sum().clamp_min(1e-12)


class WeightAverage:
    """An exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                self.state[k].copy_(v)

    def swap(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Load the average into ``model``; returns the weights it had, to load back afterwards."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        return raw


def fit(model: nn.Module, train: SplitTensors, val: SplitTensors, classes: dict[str, list[str]],
        cfg: TrainConfig, desc: str = "train", teachers: Sequence[Any] | None = None) -> FitResult:
    """Train ``model`` in place with early stopping; returns the history and best validation metrics.

    ``teachers`` (one per task, or None): models with ``predict_proba`` over per-flow features (the
    classical trees); with ``cfg.distill`` > 0 each task's loss mixes in their soft labels. The teacher
    labels each training flow once, as captured: an augmented copy is the same flow seen from another
    network, so it keeps the original's soft label (and the trees are not asked for every batch).
    """
    if cfg.paradigm not in PARADIGMS:
        raise MultaError(f"unknown paradigm {cfg.paradigm!r} ({', '.join(PARADIGMS)})")
    if cfg.sampling not in ("round-robin", "proportional"):
        raise MultaError(f"unknown sampling {cfg.sampling!r} (round-robin, proportional)")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise MultaError(f"unknown learning-rate schedule {cfg.lr_schedule!r} ({', '.join(LR_SCHEDULES)})")
    tasks = list(model.task_names)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    groups = _task_rows(train, tasks, cfg.paradigm)
    probs = [capture_probs(train.capture, rows, cfg.capture_balance) for rows in groups]
    streams = [_cycle(rows, cfg.batch_size, rng, p) for rows, p in zip(groups, probs)]
    sizes = np.array([len(r) for r in groups], dtype=np.float64)
    steps = int(sum(math.ceil(s / cfg.batch_size) for s in sizes))
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps * len(streams))
    labels_np = train.labels.numpy()
    g_of = [0 if cfg.paradigm == "joint" else t for t in range(len(tasks))]
    cw = [class_weights(labels_np[groups[g_of[t]], t], len(classes[task]), cfg.class_weights, probs[g_of[t]])
          for t, task in enumerate(tasks)]
    tw = [float(cfg.task_weights.get(task, 1.0)) for task in tasks]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps, eta_min=cfg.lr / 100)
                if cfg.lr_schedule == "cosine" else None)
    soft_all = None
    distilling = bool(teachers) and cfg.distill > 0
    live_teacher = distilling and cfg.distill_augmented
    if distilling and not live_teacher:
        soft_all = (crossfit_teacher_probs(teachers, train, cfg.distill_crossfit, cfg.seed, cfg.class_weights)
                    if cfg.distill_crossfit > 1 else teacher_probs(teachers, train.inputs))
    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    views = 2 if cfg.consistency > 0 else 1

    best_score, best_epoch, best_state, best_val = -1.0, 0, copy.deepcopy(model.state_dict()), {}
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    bar = tqdm(total=cfg.epochs * steps, desc=desc, unit="step", disable=not cfg.progress, leave=False,
               dynamic_ncols=True)
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for step in range(steps):
            if len(streams) == 1:
                g = 0
            elif cfg.sampling == "round-robin":
                g = step % len(streams)
            else:
                g = int(rng.choice(len(streams), p=sizes / sizes.sum()))
            idx = torch.from_numpy(next(streams[g]))
            y = train.labels[idx]
            rows = _views(train, idx, rng, cfg, getattr(model, "context", False), views)
            logits = model.logits(*rows)
            if live_teacher:
                soft = [None if p is None else p.view(views, len(idx), -1)
                        for p in batch_teacher_probs(teachers, rows, y)]
            else:
                soft = [None if p is None else p[idx] for p in soft_all] if soft_all else None
            loss = torch.zeros(())
            for t in range(len(tasks)):
                parts = logits[t].view(views, len(idx), -1)
                present = y[:, t] >= 0
                if bool(present.any()):
                    for v in range(views):
                        hard = nn.functional.cross_entropy(parts[v][present], y[present, t], weight=cw[t],
                                                           label_smoothing=cfg.label_smoothing)
                        target = None if soft is None or soft[t] is None else (
                            soft[t][v] if live_teacher else soft[t])
                        if target is not None:
                            hard = (1 - cfg.distill) * hard + cfg.distill * _soft_ce(
                                parts[v][present], target[present], cw[t][y[present, t]])
                        loss = loss + tw[t] * hard / views
                if views > 1:
                    # Every row, labelled for this task or not: the answer should not depend on the view.
                    loss = loss + cfg.consistency * tw[t] * js_divergence(parts[0], parts[1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if schedule is not None:
                schedule.step()
            if average is not None:
                average.update(model)
            total += float(loss.item())
            count += 1
            bar.update(1)
        raw_weights = average.swap(model) if average is not None else None
        val_reports = evaluate(model, val, classes)
        raw = mean_macro_f1(val_reports)
        recent = [h["val_mean_macro_f1"] for h in history[-(max(1, cfg.smooth) - 1):]] if cfg.smooth > 1 else []
        score = float(np.mean(recent + [raw]))
        history.append({"epoch": epoch, "loss": total / max(1, count), "val_mean_macro_f1": raw,
                        "val_score": score, "lr": float(opt.param_groups[0]["lr"])})
        bar.set_postfix(loss=f"{total / max(1, count):.3f}", val_f1=f"{score:.3f}", best=f"{max(best_score, score):.3f}")
        log.debug("%s epoch %d loss %.4f val mean macro-F1 %.4f", desc, epoch, total / max(1, count), score)
        if score > best_score:
            best_score, best_epoch, best_state, best_val = score, epoch, copy.deepcopy(model.state_dict()), val_reports
        if raw_weights is not None:
            model.load_state_dict(raw_weights)
        if epoch - best_epoch >= cfg.patience and epoch >= cfg.min_epochs:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, best_score, epoch, time.perf_counter() - started, history, best_val)
