"""Concatenate Ethernet captures into one benchmark trace.

Reads every pcap/pcapng under the given folders (recursively), keeps the
Ethernet ones, and writes their packets back to back: each capture is
shifted in time to start one second after the previous one ended, so
connections from different captures never overlap. ``--repeat`` writes the
whole set several times (each copy later in time) for a longer run.

usage: merge-traces.py OUT.pcap DIR [DIR...] [--repeat K]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dpkt


def packets(path: Path):
    with path.open("rb") as fh:
        try:
            reader = dpkt.pcapng.Reader(fh) if path.suffix == ".pcapng" else dpkt.pcap.Reader(fh)
        except (ValueError, dpkt.dpkt.Error) as exc:
            print(f"skip {path}: {exc}", file=sys.stderr)
            return
        if reader.datalink() != dpkt.pcap.DLT_EN10MB:
            return
        try:
            for ts, buf in reader:
                yield float(ts), buf
        except (ValueError, dpkt.dpkt.Error) as exc:
            print(f"truncated {path}: {exc}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    files = sorted(p for d in args.dirs for p in Path(d).rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))
    clock = 1_600_000_000.0
    n = 0
    with open(args.out, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB, nano=False)
        for _ in range(args.repeat):
            for path in files:
                pkts = list(packets(path))
                if not pkts:
                    continue
                first = min(ts for ts, _ in pkts)
                if max(ts for ts, _ in pkts) - first > 86400:
                    print(f"skip {path}: spans more than a day", file=sys.stderr)
                    continue
                last = clock
                for ts, buf in pkts:
                    t = clock + (ts - first)
                    writer.writepkt(buf, t)
                    last = max(last, t)
                    n += 1
                clock = last + 1.0
    print(f"{n} packets from {len(files)} files x {args.repeat} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
