"""``multa bench WHAT``: benchmarks that print side-by-side figures (medians, ratios).

Each benchmark is a module of :mod:`multa_broker.bench` that exposes
``add_arguments(parser)`` and ``run(args) -> int``; this is the one place the
product reaches it, and only by name, when ``multa bench`` runs
(tests/test_layout.py checks that nothing else in the product imports it).
"""

from __future__ import annotations

import argparse
import importlib

from multa_broker.errors import MultaError

HELP = "benchmarks: flows, model, bridge, zeek, soak, context, cluster-context, versus, conditions, seeds, tabular"

BENCHES: dict[str, tuple[str, str]] = {
    "flows": ("multa_broker.bench.flows", "offline extractor packets/s on a capture corpus"),
    "model": ("multa_broker.bench.model", "LMMoE vs single-task models: size, flows/s, macro-F1"),
    "bridge": ("multa_broker.bench.bridge", "end-to-end bridge flows/s and latency over WebSocket"),
    "zeek": ("multa_broker.bench.zeek", "Zeek wall time and memory: plain vs multa vs new_packet"),
    "soak": ("multa_broker.bench.soak", "the bridge for a bounded time under load and injected faults"),
    "context": ("multa_broker.bench.context", "threat verdicts out of source with host context against without"),
    "cluster-context": ("multa_broker.bench.cluster_context",
                        "host context on Zeek workers split by address pair against one node"),
    "versus": ("multa_broker.bench.versus", "stored models side by side on a dataset's test split, per source"),
    "conditions": ("multa_broker.bench.conditions",
                   "stored models on lab captures made under drawn delay, jitter and loss, by condition"),
    "seeds": ("multa_broker.bench.seeds", "out-of-source figures of loso runs over several seeds, with their spread"),
    "tabular": ("multa_broker.bench.tabular",
                "the classical trees against an MLP on the same per-flow features, leave one source out"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="WHAT", required=True)
    for name, (module, help_text) in BENCHES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_bench_module=module)
        try:
            # Bench modules import heavy libraries inside run(), so this stays cheap.
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            p.set_defaults(_bench_missing=f"benchmark {name!r} is not available in this build")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_bench_missing", None):
        raise MultaError(args._bench_missing)
    return int(importlib.import_module(args._bench_module).run(args) or 0)
