"""``multa bench flows [PATHS...]``: offline extractor throughput in packets per second.

Reads every capture end to end (file reading, decoding, connection tracking,
flow assembly) pinned to one core, several times, and prints the median rate
with checksum verification off (the default) and on. Rates are packets per
CPU-second of this process (``time.process_time``), so that other work on a
shared machine does not distort them; wall-clock seconds are printed beside.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from multa_broker.errors import CaptureError, MultaError
from multa_broker.flow import DEFAULT_N
from multa_broker.resources import CORPUS_ENV, capture_corpus

#: The default captures, inside the capture corpus ($MULTA_DATA).
DEFAULT_CORPUS = "ndpi/pcap"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help=f"capture files or directories (default: ${CORPUS_ENV}/{DEFAULT_CORPUS})")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per setting (default 5); the median is reported")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"packets per flow (default {DEFAULT_N})")
    parser.add_argument("--cpu", type=int, default=None,
                        help="pin the process to this CPU (default: the first CPU it may run on)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")


def resolve_paths(paths: list[str]) -> list[Path]:
    """Capture files under ``paths`` (default corpus when empty), sorted."""
    if not paths:
        corpus = capture_corpus()
        if corpus is None:
            raise MultaError(f"no captures: give PATHS, or set {CORPUS_ENV} to the capture corpus "
                             f"(its {DEFAULT_CORPUS} is the default)")
        if not (corpus / DEFAULT_CORPUS).is_dir():
            raise MultaError(f"default captures {corpus / DEFAULT_CORPUS} not found (${CORPUS_ENV}); give PATHS")
        paths = [str(corpus / DEFAULT_CORPUS)]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise MultaError(f"{p}: no such file or directory")
    if not files:
        raise MultaError("no capture files found")
    return files


def _one_pass(files: list[Path], n: int, verify: bool) -> tuple[int, float, float]:
    from multa_broker.capture.files import read_connections

    flows = 0
    w0, t0 = time.perf_counter(), time.process_time()
    for f in files:
        try:
            for _ in read_connections(f, n=n, verify_checksums=verify):
                flows += 1
        except CaptureError:
            pass
    dt = time.process_time() - t0
    wall = time.perf_counter() - w0
    return flows, dt, wall


def count_packets(files: list[Path]) -> int:
    """Frames in the captures (counted outside the timed runs)."""
    from multa_broker.capture.reader import open_capture

    total = 0
    for f in files:
        try:
            for _ in open_capture(f):
                total += 1
        except CaptureError:
            pass
    return total


def _pin(cpu: int | None) -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    target = cpu if cpu is not None else allowed[0]
    try:
        os.sched_setaffinity(0, {target})
    except OSError as e:
        raise MultaError(f"cannot pin to CPU {target}: {e}") from None
    return target


def run(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise MultaError("--repeat must be at least 1")
    files = resolve_paths(args.paths)
    cpu = _pin(args.cpu)
    packets = count_packets(files)
    results = {}
    for verify in (False, True):
        _one_pass(files, args.n, verify)  # warm the page cache and imports
        rates, secs, walls = [], [], []
        flows = 0
        for _ in range(args.repeat):
            flows, dt, wall = _one_pass(files, args.n, verify)
            rates.append(packets / dt if dt > 0 else float("inf"))
            secs.append(dt)
            walls.append(wall)
        results["verify" if verify else "plain"] = {
            "verify_checksums": verify, "files": len(files), "packets": packets, "flows": flows,
            "median_pkts_per_s": statistics.median(rates), "min_pkts_per_s": min(rates),
            "max_pkts_per_s": max(rates), "median_cpu_seconds": statistics.median(secs),
            "median_wall_seconds": statistics.median(walls), "runs": args.repeat,
        }
    plain, ver = results["plain"], results["verify"]
    summary = {"cpu": cpu, "python": sys.version.split()[0], "n": args.n, "results": results,
               "verify_over_plain": ver["median_pkts_per_s"] / plain["median_pkts_per_s"]}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"multa bench flows: {plain['files']} captures, {plain['packets']:,} packets, "
          f"{plain['flows']:,} flows (n={args.n}), {args.repeat} runs each, CPU {cpu}, Python {summary['python']}")
    print(f"{'checksums':<12}{'median pkt/s':>14}{'min':>12}{'max':>12}{'cpu s':>9}{'wall s':>9}")
    for name, r in (("ignored", plain), ("verified", ver)):
        print(f"{name:<12}{r['median_pkts_per_s']:>14,.0f}{r['min_pkts_per_s']:>12,.0f}"
              f"{r['max_pkts_per_s']:>12,.0f}{r['median_cpu_seconds']:>9.3f}{r['median_wall_seconds']:>9.3f}")
    print("(packets per CPU-second of one pinned core; median of the runs)")
    print(f"verified / ignored: {summary['verify_over_plain']:.2f}x")
    return 0
