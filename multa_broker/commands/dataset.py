"""``multa dataset build|info``: build the labelled corpus, or show a dataset's class counts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from multa_broker.errors import MultaError
from multa_broker.resources import CORPUS_ENV, capture_corpus

HELP = "build the labelled dataset from captures and label sources"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build a dataset file from label sources and captures")
    b.add_argument("--data", default=None,
                   help=f"folder holding the capture corpus, which label sources' roots are relative to "
                        f"(default: ${CORPUS_ENV}; with --no-builtin and neither, the current folder)")
    b.add_argument("--lab", action="append", default=[], metavar="DIR",
                   help="a `multa lab run` output folder to include (repeatable)")
    b.add_argument("--source", action="append", default=[], metavar="YAML",
                   help="an extra label-source file (docs/datasets.md; repeatable)")
    b.add_argument("--no-builtin", action="store_true", help="skip the built-in label sources")
    b.add_argument("--without", action="append", default=[], metavar="NAME",
                   help="leave out one label source by name, e.g. stopddos or lab (repeatable)")
    b.add_argument("--out", default="data/dataset.npz", help="dataset file to write (default: %(default)s)")
    b.add_argument("--seed", type=int, default=1, help="seed of the split by capture (default: %(default)s)")
    b.add_argument("--keep-splits", type=Path, metavar="DATASET",
                   help="captures in this earlier dataset file keep the split it gave them; only new captures "
                        "are placed (so a retrained model keeps its training captures)")
    b.add_argument("--ratios", default="0.7,0.15,0.15", help="train,val,test ratios (default: %(default)s)")
    b.add_argument("--max-per-capture-label", type=int, default=300, metavar="N",
                   help="keep at most N flows with the same labels from one capture, 0 for all (default: %(default)s)")
    b.add_argument("--verify-checksums", action="store_true",
                   help="drop TCP/UDP packets with bad checksums, like Zeek without -C")
    b.add_argument("--json", action="store_true", help="print the class counts as JSON")
    i = sub.add_parser("info", help="print a dataset file's data card and class counts per split")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="the data card and class counts as JSON")


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or abs(sum(parts) - 1) > 1e-6 or min(parts) < 0:
        raise MultaError(f"--ratios {text!r}: need three non-negative numbers summing to 1")
    return parts  # type: ignore[return-value]


def format_counts(counts: dict[str, dict[str, dict[str, int]]]) -> str:
    lines = []
    for task, per_split in counts.items():
        lines.append(f"{task}:")
        classes = list(next(iter(per_split.values())))
        lines.append(f"  {'class':<14}{'train':>8}{'val':>8}{'test':>8}{'total':>8}")
        for c in classes:
            vals = [per_split[s][c] for s in ("train", "val", "test")]
            lines.append(f"  {c:<14}{vals[0]:>8}{vals[1]:>8}{vals[2]:>8}{sum(vals):>8}")
        tot = [sum(per_split[s].values()) for s in ("train", "val", "test")]
        lines.append(f"  {'(labelled)':<14}{tot[0]:>8}{tot[1]:>8}{tot[2]:>8}{sum(tot):>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from multa_broker.dataset.format import FlowDataset

    if args.action == "info":
        from multa_broker.dataset.card import data_card, render_markdown

        ds = FlowDataset.load(args.path)
        counts = ds.class_counts()
        card = data_card(ds)
        if args.json:
            print(json.dumps({"card": card, "counts": counts}, indent=1))
        else:
            print(f"{args.path}: {len(ds)} flows from {len(set(ds.capture.tolist()))} captures, "
                  f"{int(ds.has_ctx.sum())} with host context\n")
            print(render_markdown(card))
            print("\nClass counts per split:\n" + format_counts(counts))
        return 0

    from multa_broker.dataset.build import BuildConfig, build

    data = Path(args.data) if args.data else capture_corpus()
    if data is None:
        if not args.no_builtin:
            raise MultaError(f"no capture corpus: give --data or set {CORPUS_ENV}")
        data = Path.cwd()  # --source roots are then relative to the current folder
    elif not data.is_dir() and not args.no_builtin:
        raise MultaError(f"--data {data}: no such folder (set --data or {CORPUS_ENV})")
    config = BuildConfig(
        data_dir=data, lab_dirs=[Path(p) for p in args.lab], sources=[Path(p) for p in args.source],
        builtin=not args.no_builtin, without=list(args.without), verify_checksums=args.verify_checksums, seed=args.seed,
        ratios=_ratios(args.ratios), max_per_capture_label=args.max_per_capture_label,
        keep_splits=args.keep_splits,
    )
    ds, report = build(config)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save(out)
    counts = ds.class_counts()
    if args.json:
        print(json.dumps({"out": str(out), "flows": len(ds), "captures_read": report.captures_read,
                          "flows_seen": report.flows_seen,
                          "flows_capped": report.flows_capped, "errors": report.errors, "counts": counts}, indent=1))
    else:
        print(f"{out}: {len(ds)} labelled flows of {report.flows_seen} seen in {report.captures_read} captures"
              f" ({report.flows_capped} over the per-capture cap left out, {len(report.errors)} capture errors)")
        print(format_counts(counts))
    return 1 if report.errors and len(ds) == 0 else 0
