"""``multa flows CAPTURE...``: print the flows of captures as JSON lines."""

from __future__ import annotations

import argparse
import json
import sys

from multa_broker.errors import CaptureError, MultaError
from multa_broker.flow import DEFAULT_N, MAX_N

HELP = "extract first-N packet sequences from captures (JSON lines)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap, pcapng or gzip'd capture files")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"packets per flow (default {DEFAULT_N}, at most {MAX_N})")
    parser.add_argument("--verify-checksums", action="store_true",
                        help="leave out packets with bad IP/TCP/UDP/ICMP checksums, as zeek without -C does "
                             "(default: count them, as zeek -C)")
    parser.add_argument("--min-packets", type=int, default=1, metavar="K",
                        help="only connections with at least K counted packets (default 1)")
    parser.add_argument("--counts", action="store_true",
                        help="add the connection's full orig/resp packet and IP-byte counts to each line")


def run(args: argparse.Namespace) -> int:
    from multa_broker.capture import read_many

    if not 1 <= args.n <= MAX_N:
        raise MultaError(f"--n must be between 1 and {MAX_N}")
    if args.min_packets < 1:
        raise MultaError("--min-packets must be at least 1")
    failed: list[str] = []

    def report(e: CaptureError) -> None:
        failed.append(str(e))
        print(f"multa flows: error: {e}", file=sys.stderr)

    out = sys.stdout
    for rec in read_many(args.captures, n=args.n, verify_checksums=args.verify_checksums,
                         min_packets=args.min_packets, on_error=report):
        obj = rec.to_json() if args.counts else rec.flow.to_json()
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
    out.flush()
    if failed:
        print(f"multa flows: {len(failed)} of {len(args.captures)} captures failed", file=sys.stderr)
        return 1
    return 0
