"""The single ``multa`` command and its subcommands.

Each subcommand lives in its own module under ``multa_broker.commands`` and
exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so ``multa flows`` never
pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from multa_broker import __version__
from multa_broker.errors import MultaError

#: subcommand -> (module, one-line help). Kept here so `multa --help` is instant.
COMMANDS: dict[str, tuple[str, str]] = {
    "flows": ("multa_broker.commands.flows", "extract first-N packet sequences from captures (JSON lines)"),
    "dataset": ("multa_broker.commands.dataset", "build the labelled dataset from captures and label sources"),
    "train": ("multa_broker.commands.train", "train an LMMoE (joint or separate paradigm) and its baselines"),
    "tune": ("multa_broker.commands.tune", "search model sizes for the smallest LMMoE that keeps accuracy"),
    "classify": ("multa_broker.commands.classify", "classify the flows in captures with a stored model"),
    "bench": ("multa_broker.commands.bench", "benchmarks: flows, model, bridge, zeek, soak, context, cluster-context, versus"),
    "bridge": ("multa_broker.commands.bridge", "run the Zeek <-> model bridge service"),
    "lab": ("multa_broker.commands.lab", "generate labelled traffic in network namespaces"),
    "zeek-path": ("multa_broker.resources", "print the folder of the installed Zeek scripts (for @load)"),
}

log = logging.getLogger("multa")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multa", description="Multi-task traffic analysis for Zeek.")
    parser.add_argument("--version", action="version", version=f"multa {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the global options and the command name only; the command's own
    # parser (built from its module) handles the rest.
    ns, rest = parser.parse_known_args(argv)
    if ns.command is None:
        parser.print_help()
        return 2
    module_name, help_text = COMMANDS[ns.command]
    module = importlib.import_module(module_name)
    cmd_parser = argparse.ArgumentParser(prog=f"multa {ns.command}", description=help_text)
    module.add_arguments(cmd_parser)
    idx = argv.index(ns.command)
    args = cmd_parser.parse_args(argv[idx + 1:])
    _setup_logging(ns.verbose, ns.quiet)
    try:
        return int(module.run(args) or 0)
    except MultaError as e:
        print(f"multa {ns.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"multa {ns.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (| head): stop quietly, and point stdout at
        # /dev/null so the interpreter's final flush does not complain about it again.
        import os

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
