"""``multa bridge``: run the Zeek <-> model bridge service (docs/bridge.md).

Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the model.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

HELP = "run the Zeek <-> model bridge service"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="YAML configuration; keys left out keep their defaults (see --print-config)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the configuration (defaults, overlaid by --config) with comments, and exit")
    parser.add_argument("--check", action="store_true",
                        help="load the configuration and the model, report, and exit")


async def _serve(service) -> int:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, service.stop)
    loop.add_signal_handler(signal.SIGINT, service.stop)
    loop.add_signal_handler(signal.SIGHUP, service.request_reload)
    return await service.run()


def _tune_gc() -> None:
    """Make the cyclic GC rare: the bridge makes ~10 container objects per flow and none form
    cycles (refcounting frees them), yet each gen-0 pass walks them; with the default
    threshold (700) the collector cost about as much as decoding (docs/bridge.md)."""
    import gc

    gc.collect()
    gc.freeze()  # what imports left behind is never garbage: keep it out of full collections
    gc.set_threshold(50_000, 20, 20)


def run(args: argparse.Namespace) -> int:
    from multa_broker.bridge import config

    cfg = config.load(args.config) if args.config else config.BridgeConfig()
    if args.print_config:
        sys.stdout.write(config.to_yaml(cfg))
        return 0
    from multa_broker.bridge.service import BridgeService

    service = BridgeService(cfg)
    if not args.check:
        _tune_gc()
    if args.check:
        clf = service.load_model()
        print(f"config ok; model {clf.name}: tasks {', '.join(clf.tasks)}, N={clf.n}")
        return 0
    return asyncio.run(_serve(service))
