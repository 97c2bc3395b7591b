"""``multa lab``: generate real labelled traffic in network namespaces.

    multa lab setup [--ci]                   install the Debian packages (apt-get)
    multa lab list                           scenarios and whether they can run here
    multa lab run --out DIR [--scenario NAME ...] [--seed S] [--repeat K] [--quick] [--resume]
    multa lab clean                          remove leftover lab namespaces (mlab-*)
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from pathlib import Path

from multa_broker.errors import MultaError
from multa_broker.resources import lab_setup_script

HELP = "generate labelled traffic in network namespaces"

log = logging.getLogger("multa.lab")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    p = sub.add_parser("run", help="run scenarios, write pcaps, labels.jsonl and manifest.json to --out")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="scenario or group (all, benign, tunnel, threat); repeatable; default all")
    p.add_argument("--seed", type=int, default=1, help="drives sizes, pauses, tool options and link rates (default 1)")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="run every scenario K times, with seeds SEED..SEED+K-1 (default 1)")
    p.add_argument("--quick", action="store_true", help="shrink counts and durations (CI-sized runs)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder (configs, keys)")
    p.add_argument("--resume", action="store_true",
                   help="keep the scenario runs an earlier, stopped run of the same --out finished "
                        "(listed in its outcomes.jsonl) and run only the others")
    sub.add_parser("list", help="list scenarios and whether each can run here")
    c = sub.add_parser("clean", help="remove leftover lab namespaces and their processes")
    c.add_argument("--prefix", default=None, help="namespace prefix (default: mlab-, every lab run)")
    s = sub.add_parser("setup", help="install the Debian packages the lab uses (apt-get, as root)")
    s.add_argument("--ci", action="store_true", help="only the packages of the CI small lab")


def run(args: argparse.Namespace) -> int:
    return {"run": _run, "list": _list, "clean": _clean, "setup": _setup}[args.lab_command](args)


def _run(args: argparse.Namespace) -> int:
    from multa_broker.lab import runner
    manifest = runner.run(args.out, args.scenario, seed=args.seed, scale=0.25 if args.quick else 1.0,
                          keep_work=args.keep_work, repeat=args.repeat, resume=args.resume)
    for s in manifest["scenarios"]:
        if s["status"] == "ran":
            print(f"{s['name']:15} s{s['seed']:<3} ran      {s['labelled']:6d} flows labelled ({s['unmatched']} unmatched, "
                  f"{s['packets']} packets, {s['packets_dropped']} dropped) in {s['seconds']}s")
        else:
            print(f"{s['name']:15} s{s['seed']:<3} {s['status']:8} {s['reason']}")
    print(f"\n{manifest['flows']} labelled flows in {args.out / 'labels.jsonl'}")
    for task, counts in manifest["counts"].items():
        print(f"  {task:10} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 1 if manifest["failed"] else 0


def _list(args: argparse.Namespace) -> int:
    from multa_broker.lab.runner import REGISTRY, UNAVAILABLE
    for name, spec in REGISTRY.items():
        missing = spec.missing()
        print(f"{name:15} {spec.kind:7} {'ok     ' if not missing else 'missing'} {spec.summary}"
              + (f"  [{missing}]" if missing else ""))
    for name, (kind, reason) in UNAVAILABLE.items():
        print(f"{name:15} {kind:7} skipped {reason}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from multa_broker.lab import NS_PREFIX
    from multa_broker.lab.network import clean
    gone = clean(args.prefix or NS_PREFIX)
    print(f"removed {len(gone)} lab namespace(s)" + (": " + ", ".join(gone) if gone else ""))
    return 0


def _setup(args: argparse.Namespace) -> int:
    script = lab_setup_script()
    if not script.is_file():
        raise MultaError(f"set-up script not found at {script} (run scripts/lab-setup.sh from a checkout)")
    return subprocess.run(["sh", str(script), *(["--ci"] if args.ci else [])]).returncode
