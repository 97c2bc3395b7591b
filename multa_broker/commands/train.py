"""``multa train``: train an LMMoE (joint or separate paradigm), optionally with its baselines.

The default model is made by the one command in docs/model.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multa_broker.model.arch import Arch

HELP = "train an LMMoE (joint or separate paradigm) and its baselines"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``multa train`` and ``multa tune``."""
    from multa_broker.flow import DEFAULT_N

    parser.add_argument("--dataset", type=Path, default=Path("data/dataset.npz"),
                        help="dataset file from `multa dataset build` (default: data/dataset.npz)")
    parser.add_argument("--paradigm", choices=("joint", "separate"), default="separate",
                        help="joint: rows labelled for every task; separate: per-task rows, masked loss "
                             "(default: separate)")
    parser.add_argument("--tasks", help="comma-separated tasks (default: every task with labelled rows)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"packets per flow (default {DEFAULT_N})")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--epochs", type=int, default=60, help="maximum epochs (default 60)")
    parser.add_argument("--patience", type=int, default=10,
                        help="stop after this many epochs without a better validation mean macro-F1 (default 10)")
    parser.add_argument("--min-epochs", type=int, default=15, help="never stop before this epoch (default 15)")
    parser.add_argument("--smooth", type=int, default=1,
                        help="early stopping on the mean validation score of the last K epochs (default 1)")
    parser.add_argument("--max-steps", type=int, default=None, metavar="K",
                        help="at most K optimizer steps per epoch for each task's batches (default: one pass "
                             "over the labelled rows; the leave-one-source-out runs cap it to fit a CPU budget)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                        help="constant, or cosine: anneal the rate per step to lr/100 over --epochs "
                             "(default constant)")
    parser.add_argument("--capture-balance", type=float, default=0.0, metavar="A",
                        help="draw training rows with probability proportional to (rows of their capture)^-A, "
                             "so a few large captures do not fill most batches (0: uniform, 1: every capture "
                             "alike; default 0)")
    parser.add_argument("--class-weights", choices=("none", "sqrt", "inverse"), default="sqrt",
                        help="per-class loss weights from training counts (default sqrt: count^-1/2)")
    parser.add_argument("--task-weights", default="",
                        help="loss weight per task, e.g. service=1,threat=2 (default 1 each)")
    parser.add_argument("--sampling", choices=("round-robin", "proportional"), default="round-robin",
                        help="separate paradigm: how batches are drawn across tasks")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a busy 2-core machine 2 threads ran 3x slower)")
    parser.add_argument("--single-hidden", type=int, default=64,
                        help="LSTM width of the single-task baselines (default 64)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--augment", choices=("on", "off"), default="on",
                        help="training-time augmentation: other RTTs, jitter, MTUs, header sizes, loss, "
                             "short flows (docs/model.md; default on)")
    parser.add_argument("--distill", type=float, default=0.0, metavar="W",
                        help="mix the classical trees' soft labels into every task's loss with weight W in "
                             "0..1 (distillation; the trees are trained first; default 0)")
    parser.add_argument("--distill-crossfit", type=int, default=0, metavar="K",
                        help="with --distill: the trees' soft label of each training flow comes from trees "
                             "fitted without its capture, over K capture-grouped folds (default 0: the trees' "
                             "own, nearly one-hot, view of their training flows)")
    parser.add_argument("--distill-augmented", action="store_true",
                        help="with --distill: the trees score every training batch after augmentation, as "
                             "the student sees it, instead of each flow once as captured")
    parser.add_argument("--context", choices=("auto", "on", "off"), default="auto",
                        help="models read each flow's host context (what its hosts did in the 60 s before it); "
                             "auto: where the dataset carries it (default auto)")
    parser.add_argument("--context-dropout", type=float, default=0.1, metavar="P",
                        help="share of training rows shown without context, so the model also works for "
                             "flows from an older Zeek package (default 0.1)")
    parser.add_argument("--label-smoothing", type=float, default=0.0,
                        help="label smoothing of every task's loss (default 0)")
    parser.add_argument("--payload-noise", type=float, default=0.0, metavar="P",
                        help="with --augment on: share of flows whose payload sizes are scaled by a random "
                             "factor (other content, another tool's payloads; default 0)")
    parser.add_argument("--path-delay", type=float, default=0.0, metavar="P",
                        help="with --augment on: share of flows given a longer path: a round trip of 1-300 ms "
                             "added where the direction turns (default 0)")
    parser.add_argument("--augment-share", default="", metavar="NAME=P,...",
                        help="with --augment on: the share of flows each transform touches, overriding its "
                             "default (time-scale 0.5, jitter 0.5, header 0.3, reseg 0.2, loss 0.15, cut 0.15; "
                             "docs/model.md); e.g. header=0,reseg=0 keeps every packet's size")
    parser.add_argument("--consistency", type=float, default=0.0, metavar="W",
                        help="with --augment on: train on two augmented views of every batch and add W times "
                             "the Jensen-Shannon divergence between their predictions (each task), so a flow "
                             "gets the same answer whatever network it crossed; about 1.3 times the training time "
                             "(default 0: off)")
    parser.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                        help="keep an exponential moving average of the weights with this per-step decay "
                             "(e.g. 0.99) and validate, stop and store with it (default 0: off)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("model_store"), help="model store (default model_store)")
    parser.add_argument("--name", default="multa", help="model name in the store (default multa)")
    parser.add_argument("--version", help="version (default: the next integer)")
    parser.add_argument("--experts", type=int, default=3, help="LSTM experts (default 3)")
    parser.add_argument("--hidden", type=int, default=32, help="expert LSTM width (default 32)")
    parser.add_argument("--tower", type=int, default=32, help="tower MLP width (default 32)")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--no-stats", action="store_true",
                        help="towers read only the LSTM state, not the per-flow statistics (for comparison)")
    parser.add_argument("--summary-bins", type=int, default=0, metavar="K",
                        help="towers also read each per-flow statistic coded piecewise-linearly over K bins at "
                             "its training quantiles (LMMoE and single-task alike; default 0: off)")
    parser.add_argument("--size-embed", type=int, default=0, metavar="D",
                        help="experts also read a learnt D-wide vector per packet size (exact below 256 bytes, "
                             "16-byte steps to 1535; LMMoE and single-task alike; default 0: off)")
    parser.add_argument("--size-bag", type=int, default=0, metavar="D",
                        help="gates and towers also read learnt D-wide vectors per packet direction and size, "
                             "averaged over the flow, and the first packet's (LMMoE and single-task alike; "
                             "default 0: off)")
    parser.add_argument("--size-bag-tasks", default="", metavar="TASKS",
                        help="comma-separated tasks whose gates and towers read the bag of sizes, and whose "
                             "single-task models get it (default: every task)")
    parser.add_argument("--baselines", action="store_true",
                        help="also train and store the single-task LSTMs and the classical models")
    parser.add_argument("--no-calibrate", action="store_true", help="skip temperature scaling")
    parser.add_argument("--reject", type=float, default=0.05,
                        help="open-set threshold: fraction of correct validation predictions it may "
                             "turn to unknown (default 0.05)")
    parser.add_argument("--calibration", type=Path,
                        help="thresholds.json from `multa train --eval loso`: use its out-of-source open-set "
                             "thresholds instead of those picked on validation")
    parser.add_argument("--eval", choices=("split", "loso"), default="split",
                        help="split: train, test on the held-out split and store the model; loso: leave one "
                             "source out at a time, train on the rest, report each left-out source "
                             "(stores no model; default split)")
    parser.add_argument("--loso-out", type=Path, default=Path("runs/loso"),
                        help="--eval loso: folder for loso.md, loso.json and the out-of-source "
                             "predictions oos.npz (default runs/loso)")
    parser.add_argument("--fold", action="append", default=[], metavar="SOURCE",
                        help="--eval loso: leave out only this source (repeatable; default every source "
                             "with enough labelled flows)")
    parser.add_argument("--jobs", type=int, default=1, help="--eval loso: folds trained at once (default 1)")
    parser.add_argument("--summarise-only", action="store_true",
                        help="--eval loso: train nothing, report the folds an earlier run with the same "
                             "recipe finished (each finished fold is kept under LOSO_OUT/folds/)")
    parser.add_argument("--with-old-recipe", action="store_true",
                        help="--eval loso: also train the LMMoE the way multa-default/2 was trained "
                             "(no augmentation, no distillation, no label smoothing) and, when --distill is "
                             "on and --ablate-distill is given, without distillation only, for the ablation")
    parser.add_argument("--ablate-distill", action="store_true",
                        help="--eval loso with --with-old-recipe: also train the LMMoE without distillation "
                             "(one more model per fold)")
    parser.add_argument("--reexport", type=Path, metavar="MODEL_DIR",
                        help="train nothing: store the model in MODEL_DIR (and its baselines) again with "
                             "today's model code, as --version beside it, after checking it computes the "
                             "same probabilities")
    parser.add_argument("--set-default", action="store_true", help="make this the store's default model")
    parser.add_argument("--force", action="store_true", help="overwrite an existing name/version")


def parse_named_numbers(text: str, flag: str, names: dict[str, str]) -> dict[str, float]:
    """``NAME=number,...`` as {names[NAME]: number}; MultaError (one line, naming the part) for a
    part without ``=``, a NAME not in ``names`` or a value that is not a finite number >= 0."""
    import math

    from multa_broker.errors import MultaError

    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in names:
            raise MultaError(f"{flag}: {part!r} is not NAME=number with NAME one of {', '.join(names)}")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and number >= 0):
            raise MultaError(f"{flag}: {part!r}: {value.strip()!r} is not a number >= 0")
        out[names[name.strip()]] = number
    return out


def parse_task_weights(text: str) -> dict[str, float]:
    from multa_broker.taxonomy import TASKS

    return parse_named_numbers(text, "--task-weights", {t: t for t in TASKS})


#: ``--augment-share`` names, and the AugmentConfig field each sets.
AUGMENT_SHARES = {"time-scale": "time_scale_p", "jitter": "jitter_p", "header": "header_p",
                  "reseg": "reseg_p", "loss": "loss_p", "cut": "cut_p"}


def parse_augment_shares(text: str) -> dict[str, float]:
    return parse_named_numbers(text, "--augment-share", AUGMENT_SHARES)


def train_config(args: argparse.Namespace):
    from multa_broker.model.augment import AugmentConfig
    from multa_broker.model.training import TrainConfig

    augment = (AugmentConfig(payload_p=args.payload_noise, rtt_p=args.path_delay,
                             **parse_augment_shares(args.augment_share)) if args.augment == "on"
               else AugmentConfig.off())
    return TrainConfig(augment=augment,
                       label_smoothing=args.label_smoothing, distill=args.distill,
                       paradigm=args.paradigm, epochs=args.epochs, patience=args.patience,
                       min_epochs=args.min_epochs, smooth=args.smooth,
                       batch_size=args.batch_size, lr=args.lr, class_weights=args.class_weights,
                       task_weights=parse_task_weights(args.task_weights), sampling=args.sampling,
                       seed=args.seed, progress=not args.no_progress, max_steps=args.max_steps,
                       context_dropout=args.context_dropout, ema=args.ema,
                       lr_schedule=args.lr_schedule, capture_balance=args.capture_balance,
                       distill_crossfit=args.distill_crossfit, distill_augmented=args.distill_augmented,
                       consistency=args.consistency)


def context_choice(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "on": True, "off": False}[args.context]


def arch_of(args: argparse.Namespace) -> Arch:
    from multa_broker.model.arch import Arch

    return Arch(n=args.n, experts=args.experts, hidden=args.hidden, tower=args.tower, dropout=args.dropout,
                single_hidden=args.single_hidden, stats=not args.no_stats, summary_bins=args.summary_bins,
                size_embed=args.size_embed, size_bag=args.size_bag, size_bag_tasks=bag_tasks(args),
                context=context_choice(args))


def bag_tasks(args: argparse.Namespace) -> list[str] | None:
    from multa_broker.errors import MultaError
    from multa_broker.taxonomy import TASKS

    if not args.size_bag_tasks:
        return None
    tasks = [t.strip() for t in args.size_bag_tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise MultaError(f"--size-bag-tasks {args.size_bag_tasks!r}: tasks are {', '.join(TASKS)}")
    if not args.size_bag:
        raise MultaError("--size-bag-tasks needs --size-bag D")
    return tasks


def setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def run_loso(args: argparse.Namespace) -> int:
    import dataclasses

    from multa_broker.model import loso
    from multa_broker.model.augment import AugmentConfig

    cfg = train_config(args)
    variants = {}
    if args.with_old_recipe:
        variants["old"] = dataclasses.replace(cfg, augment=AugmentConfig.off(), label_smoothing=0.0, distill=0.0)
        if cfg.distill > 0 and args.ablate_distill:
            variants["no-distill"] = dataclasses.replace(cfg, distill=0.0)
    spec = loso.LosoSpec(
        dataset=args.dataset, out=args.loso_out, arch=arch_of(args), train=cfg, baselines=args.baselines,
        folds=args.fold or None, jobs=args.jobs, variants=variants, summarise_only=args.summarise_only)
    summary = loso.run(spec)
    print(loso.markdown(summary), end="")
    print(f"wrote {args.loso_out}/loso.md, loso.json, oos.npz")
    return 0


def run_reexport(args: argparse.Namespace) -> int:
    from multa_broker import store
    from multa_broker.errors import MultaError
    from multa_broker.model.reexport import reexport

    if not args.version:
        raise MultaError("--reexport needs --version (the new version's name)")
    dest = reexport(args.reexport, args.version, force=args.force)
    if args.set_default:
        store.set_default(dest.parent.parent, dest.parent.name, dest.name)
    print(f"stored {dest}")
    return 0


def run(args: argparse.Namespace) -> int:
    from multa_broker.model.experiment import RunSpec, run as run_experiment

    from multa_broker.errors import MultaError

    setup_torch(args.threads)
    if min(args.size_embed, args.size_bag, args.summary_bins) < 0:
        raise MultaError("--size-embed, --size-bag and --summary-bins take a width of 0 (off) or more")
    if args.reexport:
        return run_reexport(args)
    if args.eval == "loso":
        return run_loso(args)
    spec = RunSpec(
        dataset=args.dataset, out=args.out, name=args.name, version=args.version,
        tasks=[t.strip() for t in args.tasks.split(",")] if args.tasks else None, arch=arch_of(args),
        train=train_config(args), baselines=args.baselines,
        calibrate=not args.no_calibrate, reject=args.reject, set_default=args.set_default, force=args.force,
        calibration=args.calibration,
        command="multa train " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("train") + 1:])
        if "train" in sys.argv else "",
    )
    dest = run_experiment(spec)
    print((dest / "REPORT.md").read_text(), end="")
    print(f"stored {dest}")
    return 0
