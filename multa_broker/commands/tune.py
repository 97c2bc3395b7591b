"""``multa tune``: search expert count, expert width and tower width (docs/model.md).

The default grid (12 points, one seed) runs in about a quarter of an hour on
one CPU core with the default dataset; ``--grid big`` (75 points),
``--seeds 3`` or explicit ``--experts/--hidden/--tower`` lists search further.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from multa_broker.commands.train import add_model_arguments, context_choice, setup_torch, train_config

HELP = "search model sizes for the smallest LMMoE that keeps accuracy"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("runs/tune"),
                        help="where tune.csv, tune.md, tune.png and tune.json go (default runs/tune)")
    parser.add_argument("--grid", choices=("default", "big"), default="default",
                        help="default: experts 1,2,3 x width 16,32 x tower 16,32; "
                             "big: experts 1-6 x width 16-64 x tower 16-64 (75 points, hours)")
    parser.add_argument("--experts", type=_ints, help="expert counts, e.g. 1,2,3 (overrides the grid's)")
    parser.add_argument("--hidden", type=_ints, help="expert widths, e.g. 16,32")
    parser.add_argument("--tower", type=_ints, help="tower widths, e.g. 16,32")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="allowed drop in every task's validation macro-F1 vs its single-task model "
                             "(default 0.01)")
    parser.add_argument("--single-tower", type=int, default=32, help="tower width of the single-task models")
    parser.add_argument("--repeats", type=int, default=7, help="timing repeats per point (default 7)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds per point, validation F1 averaged (default 1; 3 for a steadier choice)")


def run(args: argparse.Namespace) -> int:
    from multa_broker.model import tune

    setup_torch(args.threads)
    grid = dict(tune.BIG_GRID if args.grid == "big" else tune.DEFAULT_GRID)
    for key in ("experts", "hidden", "tower"):
        if getattr(args, key):
            grid[key] = getattr(args, key)
    tune.run(args.dataset, args.out, train_config(args),
             tasks=[t.strip() for t in args.tasks.split(",")] if args.tasks else None, n=args.n,
             grid=grid, tolerance=args.tolerance, single_hidden=args.single_hidden,
             single_tower=args.single_tower, repeats=args.repeats, seeds=args.seeds, context=context_choice(args))
    print((args.out / "tune.md").read_text(), end="")
    print(f"wrote {args.out}/tune.csv, tune.md, tune.png, tune.json")
    return 0
