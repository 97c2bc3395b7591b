"""The corpus builder behind ``multa dataset build``.

Walks every label source, extracts each capture's flows with the same
extractor ``multa flows`` and ``multa classify`` use, attaches the source's
labels, drops flows no source labels, splits by capture and writes one
:class:`FlowDataset`.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from multa_broker.capture import read_flows
from multa_broker.context import CONTEXT_SPEC
from multa_broker.dataset.format import CTX_DTYPE, FlowDataset, lab_source
from multa_broker.dataset.jsonl import JsonlLabels
from multa_broker.dataset.labelmap import LabelSource, Labels, builtin_sources, load_source
from multa_broker.dataset.ndpi import NdpiLabeller
from multa_broker.dataset.ndpireader import NdpiReader
from multa_broker.dataset.split import DEFAULT_RATIOS, assign_splits
from multa_broker.errors import MultaError
from multa_broker.flow import MAX_N, PROTO_INDEX, Flow, FlowKey, context_arrays
from multa_broker.taxonomy import MISSING, TASKS

log = logging.getLogger("multa.dataset")

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")
Labeller = Callable[[FlowKey], Labels]


@dataclass
class BuildConfig:
    data_dir: Path
    lab_dirs: list[Path] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    builtin: bool = True
    #: Names of label sources (built-in or given) to leave out.
    without: list[str] = field(default_factory=list)
    verify_checksums: bool = False
    seed: int = 1
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    #: At most this many flows with the same labels from one capture (0: no cap).
    max_per_capture_label: int = 300
    #: An earlier dataset file: its captures keep the splits it gave them (split.assign_splits).
    keep_splits: Path | None = None


@dataclass(frozen=True)
class CaptureJob:
    path: Path
    name: str  # unique id in the dataset, e.g. "ndpi/pcap/dns.pcap"
    source: str
    labeller: Labeller


@dataclass
class BuildReport:
    captures_read: int = 0
    flows_seen: int = 0
    flows_labelled: int = 0
    flows_capped: int = 0
    errors: list[str] = field(default_factory=list)


def _is_capture(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(CAPTURE_SUFFIXES)


def _rules_jobs(src: LabelSource, data_dir: Path) -> Iterator[CaptureJob]:
    root = (data_dir / src.root)
    if not root.is_dir():
        raise MultaError(f"{src.origin}: capture folder {root} does not exist")
    for path in sorted(p for p in root.rglob("*") if _is_capture(p)):
        rel = path.relative_to(root).as_posix()
        rules = src.rules_for(rel)
        if rules is None or src.excluded(rel):
            continue
        yield CaptureJob(path, f"{src.root}/{rel}", src.name, rules.label)


class _LazyNdpi:
    """Runs ndpiReader (or reads its cache) on first use, not while planning."""

    def __init__(self, src: LabelSource, reader: NdpiReader, capture: Path, rel: str) -> None:
        self._args = (src, reader, capture, rel)
        self._labeller: NdpiLabeller | None = None

    def __call__(self, key: FlowKey) -> Labels:
        if self._labeller is None:
            src, reader, capture, rel = self._args
            self._labeller = NdpiLabeller(src, reader.verdicts(capture), rel)
        return self._labeller(key)


def _ndpi_jobs(src: LabelSource, data_dir: Path, reader: NdpiReader) -> Iterator[CaptureJob]:
    """nDPI's corpus layout (``pcap/X`` with ``result/X.out``) or any capture folder.

    Captures without a result file get ndpiReader's verdicts (cached).
    """
    root = data_dir / src.root
    if not root.is_dir():
        raise MultaError(f"{src.origin}: capture folder {root} does not exist")
    results = root / "result"
    checked = False
    for path in sorted(p for p in root.rglob("*") if _is_capture(p)):
        rel = path.relative_to(root).as_posix()
        if src.excluded(rel):
            continue
        out = results / f"{path.name}.out"
        if rel == f"pcap/{path.name}" and out.is_file():
            labeller: Labeller = NdpiLabeller(src, out, rel)
        else:
            if not checked:
                try:
                    _ = reader.version  # fail now, with one line, if ndpiReader is missing
                except MultaError as e:
                    raise MultaError(f"{src.origin}: {e}; or leave this source out: --without {src.name}") from None
                checked = True
            labeller = _LazyNdpi(src, reader, path, rel)
        yield CaptureJob(path, f"{src.root}/{rel}", src.name, labeller)


def _arkime_jobs(src: LabelSource, data_dir: Path) -> Iterator[CaptureJob]:
    from multa_broker.dataset.arkime import ArkimeLabeller

    root = data_dir / src.root
    if not root.is_dir():
        raise MultaError(f"{src.origin}: capture folder {root} does not exist")
    for path in sorted(p for p in root.rglob("*") if _is_capture(p)):
        rel = path.relative_to(root).as_posix()
        test = path.with_name(path.name.rsplit(".", 1)[0] + ".test")
        if src.excluded(rel) or not test.is_file():
            continue
        yield CaptureJob(path, f"{src.root}/{rel}", src.name, ArkimeLabeller(src, test, rel))


def _zeek_jobs(src: LabelSource, data_dir: Path, verify_checksums: bool) -> Iterator[CaptureJob]:
    from multa_broker.dataset.zeeklogs import ZeekRunner, lazy_zeek_labeller

    root = data_dir / src.root
    if not root.is_dir():
        raise MultaError(f"{src.origin}: capture folder {root} does not exist")
    runner = ZeekRunner(verify_checksums=verify_checksums)
    runner.check()  # one clear line now if zeek is not on PATH
    for path in sorted(p for p in root.rglob("*") if _is_capture(p)):
        rel = path.relative_to(root).as_posix()
        if not src.excluded(rel):
            yield CaptureJob(path, f"{src.root}/{rel}", src.name, lazy_zeek_labeller(src, runner, path, rel))


def _lab_jobs(lab_dir: Path, source: str = "lab") -> Iterator[CaptureJob]:
    labels_file = lab_dir / "labels.jsonl"
    if not labels_file.is_file():
        raise MultaError(f"{lab_dir}: no labels.jsonl (is this a `multa lab run` output folder?)")
    table = JsonlLabels.load(labels_file)
    for cap in table.captures:
        path = lab_dir / cap
        if not path.is_file():
            raise MultaError(f"{labels_file}: capture {cap} is missing")
        yield CaptureJob(path, f"lab:{lab_dir.name}/{cap}", source, table.labeller(cap))


def plan(config: BuildConfig) -> list[CaptureJob]:
    """Every capture to read, with its labeller; fails early on a bad source."""
    sources = builtin_sources() if config.builtin else []
    sources += [load_source(p) for p in config.sources]
    known = {s.name for s in sources} | {"lab"}
    unknown = sorted(set(config.without) - known)
    if unknown:
        raise MultaError(f"--without {', '.join(unknown)}: no such label source (sources: {', '.join(sorted(known))})")
    reader = NdpiReader()
    jobs: list[CaptureJob] = []
    for src in sources:
        if src.name in config.without:
            continue
        if src.kind == "jsonl":
            jobs += _lab_jobs(config.data_dir / src.root, src.name)
        elif src.kind == "ndpi":
            jobs += _ndpi_jobs(src, config.data_dir, reader)
        elif src.kind == "arkime":
            jobs += _arkime_jobs(src, config.data_dir)
        elif src.kind == "zeek":
            jobs += _zeek_jobs(src, config.data_dir, config.verify_checksums)
        else:
            jobs += _rules_jobs(src, config.data_dir)
    if "lab" not in config.without:
        for lab in config.lab_dirs:
            jobs += _lab_jobs(lab)
    return jobs


LAB_ORIGIN = "multa traffic lab, generated"
LAB_LICENCE = "BSD-3-Clause (multa)"


def source_info(config: BuildConfig, jobs: Sequence[CaptureJob]) -> dict[str, dict[str, str]]:
    """{source id: {origin, licence}} for the data card, from the label-source YAMLs."""
    sources = (builtin_sources() if config.builtin else []) + [load_source(p) for p in config.sources]
    by_name = {s.name: s for s in sources}
    out: dict[str, dict[str, str]] = {}
    for job in jobs:
        sid = source_id(job)
        if sid in out:
            continue
        src = by_name.get(job.source)
        if job.source == "lab":
            out[sid] = {"origin": LAB_ORIGIN, "licence": LAB_LICENCE}
        else:
            out[sid] = {"origin": src.provenance if src else "", "licence": src.licence if src else ""}
    return out


def source_id(job: CaptureJob) -> str:
    """The data card's source of a capture: the label source, or ``lab/<family>``.

    A lab scenario family (the scenario name before its first ``-``:
    ``scan-syn-s2.pcap`` -> ``lab/scan``) counts as one source, since its
    captures share one implementation and one network.
    """
    if job.source == "lab":
        return lab_source(Path(job.name).name)
    return job.source


@dataclass
class _Rows:
    flows: list[Flow] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    capture: list[int] = field(default_factory=list)


def _label_row(labels: Labels) -> list[int]:
    return [TASKS[t].index(labels[t]) if t in labels else MISSING for t in TASKS]


def _read_job(job: CaptureJob, config: BuildConfig, rows: _Rows, cap_index: int,
              report: BuildReport) -> Counter:
    found: list[tuple[Flow, Labels]] = []
    try:
        for flow in read_flows(job.path, n=MAX_N, verify_checksums=config.verify_checksums):
            report.flows_seen += 1
            labels = job.labeller(flow.key)
            if labels:
                found.append((flow, labels))
    except MultaError as e:
        # Keep what was read before the damage; the error names the file.
        report.errors.append(str(e))
        log.warning("%s", e)
    classes: Counter = Counter()
    for flow, labels in _cap(found, config.max_per_capture_label, config.seed, report):
        rows.flows.append(flow)
        rows.labels.append(_label_row(labels))
        rows.capture.append(cap_index)
        classes.update(labels.items())
    return classes


def _cap(found: list[tuple[Flow, Labels]], cap: int, seed: int, report: BuildReport) -> list[tuple[Flow, Labels]]:
    """At most ``cap`` flows per label combination of one capture, a seeded sample in time order.

    A flood or a broadcast storm gives one capture hundreds of near-identical
    flows; uncapped, that capture would decide the class's whole split.
    """
    if cap <= 0:
        return found
    groups: dict[tuple, list[int]] = {}
    for i, (_flow, labels) in enumerate(found):
        groups.setdefault(tuple(sorted(labels.items())), []).append(i)
    keep: set[int] = set()
    rng = random.Random(seed)
    for idx in groups.values():
        keep.update(idx if len(idx) <= cap else rng.sample(idx, cap))
    report.flows_capped += len(found) - len(keep)
    return [found[i] for i in sorted(keep)]


def build(config: BuildConfig, progress: bool = True) -> tuple[FlowDataset, BuildReport]:
    jobs = plan(config)
    if not jobs:
        raise MultaError(f"no labelled captures found under {config.data_dir}")
    report = BuildReport()
    rows = _Rows()
    capture_classes: dict[str, Counter] = {}
    iterator = jobs
    if progress:
        from tqdm import tqdm
        iterator = tqdm(jobs, desc="captures", unit="file", leave=False)
    for i, job in enumerate(iterator):
        classes = _read_job(job, config, rows, i, report)
        report.captures_read += 1
        if classes:
            capture_classes[job.name] = classes
    report.flows_labelled = len(rows.flows)
    fixed = FlowDataset.load(config.keep_splits).capture_splits() if config.keep_splits else None
    splits = assign_splits(capture_classes, config.ratios, config.seed, fixed)
    names = [j.name for j in jobs]
    ds = _to_dataset(rows, names, splits)
    ds.meta.update({
        "seed": config.seed,
        "ratios": list(config.ratios),
        "splits_kept_from": config.keep_splits.name if config.keep_splits else None,
        "verify_checksums": config.verify_checksums,
        "max_per_capture_label": config.max_per_capture_label,
        "flows_capped": report.flows_capped,
        "sources": sorted({j.source for j in jobs}),
        "capture_sources": [source_id(j) for j in jobs],
        "source_info": source_info(config, jobs),
        "captures_with_labels": len(capture_classes),
        # Host context as the extractor computed it (over every connection of each capture).
        "context": CONTEXT_SPEC,
        "capture_sha": hashlib.sha256("\n".join(sorted(capture_classes)).encode()).hexdigest()[:16],
    })
    return ds, report


def _to_dataset(rows: _Rows, names: Sequence[str], splits: dict[str, int]) -> FlowDataset:
    f = len(rows.flows)
    sizes = np.zeros((f, MAX_N), np.float32)
    dirs = np.zeros((f, MAX_N), np.float32)
    iats = np.zeros((f, MAX_N), np.float32)
    lengths = np.zeros(f, np.int64)
    for r, flow in enumerate(rows.flows):
        k = min(MAX_N, flow.packets)
        sizes[r, :k] = flow.sizes[:k]
        dirs[r, :k] = flow.dirs[:k]
        iats[r, :k] = flow.iats[:k]
        lengths[r] = k
    capture = np.asarray(rows.capture, np.int32)
    ctx, has_ctx = context_arrays(rows.flows, CTX_DTYPE)
    return FlowDataset(
        sizes=sizes, dirs=dirs, iats=iats, lengths=lengths,
        proto=np.array([PROTO_INDEX[fl.key.proto] for fl in rows.flows], np.int64),
        orig_p=np.array([fl.key.orig_p for fl in rows.flows], np.int32),
        resp_p=np.array([fl.key.resp_p for fl in rows.flows], np.int32),
        labels=np.asarray(rows.labels, np.int16).reshape(f, len(TASKS)),
        split=np.array([splits[names[c]] for c in rows.capture], np.int8),
        capture=capture,
        keys=np.array([str(fl.key) for fl in rows.flows], dtype="U"),
        tasks={t: list(c) for t, c in TASKS.items()},
        captures=list(names),
        ctx=ctx, has_ctx=has_ctx,
    )
