"""Label source files: the documented YAML format users extend (docs/datasets.md).

A label source says, for each flow of some captures, what each task's label is.
Three kinds exist:

``rules``  -- captures matched by glob; per capture, an ordered list of flow
             rules (first match wins). Used for Zeek's traces, Stratosphere's
             captures and users' own pcaps.
``ndpi``   -- nDPI ``.out`` result files beside the captures; nDPI protocol
             names and categories map onto tasks (see ndpi.py).
``jsonl``  -- per-flow label files such as the traffic lab's ``labels.jsonl``.
``arkime`` -- Arkime's ``.test`` session files beside the captures; Arkime's
             protocol names map onto tasks (see arkime.py).
``zeek``   -- Zeek run over the captures; conn.log's ``service`` and the
             ssl/ssh logs map onto tasks (see zeeklogs.py).

A label left out (or null) is *missing*, never guessed.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from multa_broker.errors import MultaError
from multa_broker.flow import FlowKey
from multa_broker.taxonomy import TASKS

#: {task: class}; a None value means "explicitly missing" and overrides a default.
Labels = dict[str, "str | None"]
SOURCE_KINDS = ("rules", "ndpi", "jsonl", "arkime", "zeek")
_MATCH_KEYS = {"proto", "orig_h", "resp_h", "host", "orig_p", "resp_p", "port", "net"}


@dataclass(frozen=True)
class FlowRule:
    """Labels for flows whose key matches every given field.

    ``host``/``port`` match either side; ``net`` matches either side's address
    in a CIDR; list values match any element.
    """

    match: Mapping[str, Any]
    labels: Labels

    def matches(self, key: FlowKey) -> bool:
        for name, want in self.match.items():
            options = want if isinstance(want, list) else [want]
            if not any(_field_matches(name, opt, key) for opt in options):
                return False
        return True


def _field_matches(name: str, want: Any, key: FlowKey) -> bool:
    if name == "proto":
        return key.proto == want
    if name in ("orig_h", "resp_h", "orig_p", "resp_p"):
        return str(getattr(key, name)) == str(want)
    if name == "host":
        return str(want) in (key.orig_h, key.resp_h)
    if name == "port":
        return int(want) in (key.orig_p, key.resp_p)
    if name == "net":
        net = ipaddress.ip_network(str(want), strict=False)
        return any(_in_net(h, net) for h in (key.orig_h, key.resp_h))
    return False


def _in_net(host: str, net: ipaddress._BaseNetwork) -> bool:
    try:
        return ipaddress.ip_address(host) in net
    except ValueError:
        return False


@dataclass(frozen=True)
class CaptureRules:
    """Rules that apply to captures whose path (relative to the source root) matches ``glob``."""

    glob: str
    rules: tuple[FlowRule, ...]
    #: Labels for every flow of the capture that no rule matched (usually absent).
    default: Labels | None = None

    def label(self, key: FlowKey) -> Labels | None:
        for rule in self.rules:
            if rule.matches(key):
                return rule.labels
        return self.default


@dataclass
class LabelSource:
    """One parsed label-source YAML file."""

    name: str
    kind: str
    root: str
    origin: str
    captures: list[CaptureRules] = field(default_factory=list)
    #: ndpi: protocol -> labels, category -> labels, per-capture overrides.
    protocols: dict[str, Labels] = field(default_factory=dict)
    categories: dict[str, Labels] = field(default_factory=dict)
    defaults: Labels = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    #: Data-card facts: where the captures come from and under what licence.
    provenance: str = ""
    licence: str = ""
    #: ndpi: take only nDPI's DPI verdicts, not its guesses by port or address
    #: (a SYN flood to port 80 is not HTTP because of the port).
    dpi_only: bool = False
    #: ndpi/arkime/zeek: a flow a capture rule matches is labelled even when the
    #: labeller cannot name it (its other tasks stay missing): the SYNs of a
    #: scan or a flood carry no payload to name. On for every built-in nDPI source.
    rules_alone: bool = False
    #: arkime/zeek: protocol names whose sessions get no labels (encapsulations, proxies).
    skip: list[str] = field(default_factory=list)

    def rules_for(self, relpath: str) -> CaptureRules | None:
        for cr in self.captures:
            if fnmatch.fnmatch(relpath, cr.glob):
                return cr
        return None

    def excluded(self, relpath: str) -> bool:
        return any(fnmatch.fnmatch(relpath, g) for g in self.exclude)


def check_labels(labels: Any, where: str) -> Labels:
    """Validate a {task: class} mapping; null values stay as explicit "missing"."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise MultaError(f"{where}: labels must be a mapping of task to class")
    out: Labels = {}
    for task, cls in labels.items():
        if task not in TASKS:
            raise MultaError(f"{where}: unknown task {task!r} (tasks: {', '.join(TASKS)})")
        if cls is None:
            out[task] = None
            continue
        if cls not in TASKS[task]:
            raise MultaError(f"{where}: unknown class {cls!r} for task {task!r}")
        out[task] = str(cls)
    return out


def _check_match(match: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(match, Mapping):
        raise MultaError(f"{where}: 'match' must be a mapping")
    unknown = set(match) - _MATCH_KEYS
    if unknown:
        raise MultaError(f"{where}: unknown match key(s) {sorted(unknown)} (known: {sorted(_MATCH_KEYS)})")
    return match


def merged(*layers: Labels | None) -> Labels:
    """Later layers override earlier ones; None values end up removed (missing)."""
    out: Labels = {}
    for layer in layers:
        if layer:
            out.update(layer)
    return {t: c for t, c in out.items() if c is not None}


def parse_source(doc: Any, origin: str) -> LabelSource:
    """Build a LabelSource from a loaded YAML document; errors name ``origin``."""
    if not isinstance(doc, Mapping):
        raise MultaError(f"{origin}: a label source must be a YAML mapping")
    kind = doc.get("type")
    if kind not in SOURCE_KINDS:
        raise MultaError(f"{origin}: 'type' must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}")
    name = str(doc.get("name") or Path(origin).stem)
    unknown = set(doc) - _SOURCE_KEYS
    if unknown:
        raise MultaError(f"{origin}: unknown key(s) {sorted(unknown)} (known: {sorted(_SOURCE_KEYS)})")
    src = LabelSource(name=name, kind=kind, root=str(doc.get("root", ".")), origin=origin,
                      exclude=list(doc.get("exclude", [])),
                      provenance=str(doc.get("origin") or ""), licence=str(doc.get("licence") or ""),
                      dpi_only=bool(doc.get("dpi_only", False)), rules_alone=bool(doc.get("rules_alone", False)),
                      skip=[str(x) for x in doc.get("skip", []) or []])
    if doc.get("tables"):
        _inherit_tables(src, str(doc["tables"]), origin)
    for i, cap in enumerate(doc.get("captures", []) or []):
        where = f"{origin}: captures[{i}]"
        if not isinstance(cap, Mapping) or "glob" not in cap:
            raise MultaError(f"{where}: each entry needs a 'glob'")
        rules = tuple(
            FlowRule(_check_match(r.get("match", {}), f"{where}.rules[{j}]"),
                     check_labels(r.get("labels"), f"{where}.rules[{j}]"))
            for j, r in enumerate(cap.get("rules", []) or [])
        )
        default = check_labels(cap["default"], f"{where}.default") if "default" in cap else None
        src.captures.append(CaptureRules(str(cap["glob"]), rules, default))
    for key, attr in (("protocols", "protocols"), ("categories", "categories")):
        table = doc.get(key, {}) or {}
        if not isinstance(table, Mapping):
            raise MultaError(f"{origin}: '{key}' must be a mapping")
        getattr(src, attr).update({str(k): check_labels(v, f"{origin}: {key}.{k}") for k, v in table.items()})
    if "defaults" in doc:
        src.defaults = check_labels(doc.get("defaults"), f"{origin}: defaults")
    return src


_SOURCE_KEYS = {"name", "type", "root", "exclude", "captures", "protocols", "categories", "defaults",
                "origin", "licence", "dpi_only", "rules_alone", "tables", "skip"}


def _inherit_tables(src: LabelSource, name: str, origin: str) -> None:
    """``tables: ndpi``: start from a built-in source's protocol/category/default tables.

    The new corpora label service/encrypted/tunnel with exactly the mapping
    nDPI's own corpus uses, without copying its 200 lines; the file's own
    tables, parsed after this, override single entries.
    """
    # Parsed from its own file, not via builtin_sources(): a built-in that
    # inherits would otherwise parse itself again, without end.
    entry = resources.files("multa_broker.dataset") / "labels" / f"{name}.yaml"
    base = parse_source(yaml.safe_load(entry.read_text()), f"builtin:{name}.yaml") if entry.is_file() else None
    if base is None or base.kind != src.kind or base.name == src.name:
        raise MultaError(f"{origin}: 'tables: {name}' names no built-in {src.kind} source")
    src.protocols.update(base.protocols)
    src.categories.update(base.categories)
    src.defaults = dict(base.defaults)


def load_source(path: str | Path) -> LabelSource:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise MultaError(f"{path}: cannot read label source ({e.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MultaError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    return parse_source(doc, str(path))


def builtin_sources() -> list[LabelSource]:
    """The label sources shipped with multa for ../shared/data."""
    pkg = resources.files("multa_broker.dataset") / "labels"
    out = []
    for entry in sorted(pkg.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            out.append(parse_source(yaml.safe_load(entry.read_text()), f"builtin:{entry.name}"))
    return out
