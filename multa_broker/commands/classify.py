"""``multa classify CAPTURE...``: classify every flow in captures with a stored model.

Flows come from the same extractor as ``multa flows`` and the dataset
builder (``multa_broker.capture.read_flows``), are encoded with
``multa_broker.flow.encode`` and run through the verified TorchScript model.
A capture that cannot be read gets a one-line error naming it; the flows
read from it before the damage and the other captures are still classified,
and the exit status is 1. An output that cannot be written is a one-line
error naming it; a closed pipe (``| head``) ends quietly with status 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

HELP = "classify the flows in captures with a stored model"

log = logging.getLogger("multa.classify")

#: Flows classified per model call.
BATCH = 512


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("captures", nargs="+", type=Path, metavar="CAPTURE", help="pcap/pcapng files")
    parser.add_argument("--model", default="default",
                        help="model_store/<name>/<version> dir, a model.pt, or 'default' (the default)")
    parser.add_argument("--format", choices=("jsonl", "table"), default="jsonl", help="output (default jsonl)")
    parser.add_argument("--n", type=int, help="packets per flow to extract (default: the model's N)")
    parser.add_argument("--verify-checksums", action="store_true",
                        help="drop packets with bad IP/TCP/UDP/ICMP checksums, like zeek without -C")
    parser.add_argument("--threshold", default=None,
                        help="open-set thresholds, e.g. service=0.6,threat=0.8 or 0.5 for all tasks "
                             "(default: the model's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")


def _batches(flows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for f in flows:
        batch.append(f)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def flow_record(flow: Any, verdict: Any, capture: str) -> dict[str, Any]:
    k = flow.key
    return {
        "proto": k.proto, "orig_h": k.orig_h, "orig_p": k.orig_p, "resp_h": k.resp_h, "resp_p": k.resp_p,
        "ts": round(k.ts, 6), "packets": flow.packets, "capture": capture, "model": verdict.model,
        "results": {t: {"label": verdict.labels[t], "score": round(verdict.scores[t], 4)} for t in verdict.labels},
    }


class _Table:
    """Fixed-width rows: one line per flow, label(score) per task."""

    def __init__(self, out: Any, tasks: Sequence[str]) -> None:
        self.out, self.tasks = out, tasks
        head = f"{'ts':>17} {'proto':5} {'orig':>21} {'resp':>21} {'pkts':>4} " + " ".join(f"{t:>20}" for t in tasks)
        out.write(head + "\n")

    def write(self, rec: dict[str, Any]) -> None:
        cells = " ".join(f"{r['label'] + ' ' + format(r['score'], '.2f'):>20}" for r in
                         (rec["results"][t] for t in self.tasks))
        self.out.write(f"{rec['ts']:17.6f} {rec['proto']:5} {rec['orig_h'] + ':' + str(rec['orig_p']):>21} "
                       f"{rec['resp_h'] + ':' + str(rec['resp_p']):>21} {rec['packets']:>4} {cells}\n")


class _Output:
    """Where results go; a write error names the output, not the capture being read."""

    def __init__(self, path: Path | None) -> None:
        from multa_broker.errors import MultaError

        self.path = path
        if path is None:
            self.f: TextIO = sys.stdout
            return
        try:
            self.f = open(path, "w")
        except OSError as e:
            raise MultaError(f"{path}: cannot write the output: {e.strerror or e}") from None

    def write(self, text: str) -> None:
        try:
            self.f.write(text)
        except BrokenPipeError:
            raise  # the reader went away (| head): the CLI ends quietly, as multa flows does
        except OSError as e:
            from multa_broker.errors import MultaError

            raise MultaError(f"{self.path or 'stdout'}: cannot write the output: {e.strerror or e}") from None

    def close(self) -> None:
        if self.f is not sys.stdout:
            try:
                self.f.close()
            except OSError as e:
                from multa_broker.errors import MultaError

                raise MultaError(f"{self.path}: cannot write the output: {e.strerror or e}") from None
        else:
            self.f.flush()


def _until_error(flows: Iterable[Any], errors: list[Exception]) -> Iterator[Any]:
    """``flows`` until the capture's reader fails; the failure goes to ``errors``, so the flows
    read before it are still classified (a capture cut short keeps what it had)."""
    from multa_broker.errors import MultaError

    try:
        yield from flows
    except BrokenPipeError:
        raise
    except (MultaError, OSError) as e:
        errors.append(e)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from multa_broker.capture import read_flows
    from multa_broker.errors import MultaError
    from multa_broker.flow import MAX_N
    from multa_broker.inference import Classifier

    clf = Classifier.load(args.model, thresholds=args.threshold, threads=args.threads)
    n = args.n or clf.n
    if not 1 <= n <= MAX_N:
        raise MultaError(f"--n must be within 1..{MAX_N}")
    out = _Output(args.output)
    table = _Table(out, clf.tasks) if args.format == "table" else None
    failed = 0
    total = 0
    try:
        bar = tqdm(desc="classify", unit="flow", file=sys.stderr, disable=True if args.no_progress else None,
                   dynamic_ncols=True)
        for path in args.captures:
            bar.set_postfix_str(path.name)
            errors: list[Exception] = []
            flows = _until_error(read_flows(path, n=n, verify_checksums=args.verify_checksums), errors)
            for batch in _batches(flows, BATCH):
                for flow, verdict in zip(batch, clf.classify(batch)):
                    rec = flow_record(flow, verdict, str(path))
                    if table:
                        table.write(rec)
                    else:
                        out.write(json.dumps(rec) + "\n")
                total += len(batch)
                bar.update(len(batch))
            for e in errors:
                failed += 1
                msg = str(e) if str(path) in str(e) else f"{path}: {e}"
                print(f"multa classify: error: {msg}", file=sys.stderr)
        bar.close()
    finally:
        out.close()
    log.info("classified %d flows from %d captures with %s (%d unreadable)", total,
             len(args.captures) - failed, clf.name, failed)
    return 1 if failed else 0
