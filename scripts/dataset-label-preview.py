#!/usr/bin/env python3
"""Show what a label source says about each flow of its captures, to check a YAML by eye.

    .venv/bin/python scripts/dataset-label-preview.py --data DIR SOURCE.yaml|NAME [--glob GLOB] [--summary]

SOURCE is a label-source file or a built-in source's name. Prints one line per
flow (key, packets, labels), or with --summary the flow counts per capture and
label combination. Nothing is written.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections import Counter
from pathlib import Path

from multa_broker.capture import read_flows
from multa_broker.dataset.build import BuildConfig, plan
from multa_broker.dataset.labelmap import builtin_sources
from multa_broker.errors import MultaError
from multa_broker.flow import MAX_N


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--glob", default="*", help="only captures whose dataset name matches")
    ap.add_argument("--summary", action="store_true")
    args = ap.parse_args()
    names = {s.name for s in builtin_sources()}
    if args.source in names:
        config = BuildConfig(Path(args.data), without=sorted(names - {args.source}))
    else:
        config = BuildConfig(Path(args.data), sources=[Path(args.source)], builtin=False)
    for job in plan(config):
        if not fnmatch.fnmatch(job.name, args.glob):
            continue
        counts: Counter = Counter()
        try:
            for flow in read_flows(job.path, n=MAX_N):
                labels = job.labeller(flow.key)
                text = ",".join(f"{t}={c}" for t, c in sorted(labels.items())) or "-"
                if args.summary:
                    counts[text] += 1
                else:
                    print(f"{job.name}\t{flow.key}\t{flow.packets}\t{text}")
        except MultaError as e:  # as `multa dataset build` does: keep what was read, name the file
            print(f"# {e}", file=sys.stderr)
        for text, n in counts.most_common():
            print(f"{job.name}\t{n}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
