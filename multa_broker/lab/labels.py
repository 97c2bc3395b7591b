"""Flow labels from scenario rules, written as ``labels.jsonl`` for the corpus builder.

A scenario knows which host ran which tool against which service, so it
states rules ("flows between atk and anything are scans", "TCP to srv:80 is
benign HTTP"). The capture is then read with the same extractor the corpus
builder uses, and each flow takes the labels of the first rule it matches.
A flow no rule matches is not written (it is counted in the manifest).

Format of one line (keep exactly; the corpus builder reads it)::

    {"capture": "http.pcap", "proto": "tcp", "orig_h": "10.77.0.20", "orig_p": 40312,
     "resp_h": "10.77.0.10", "resp_p": 80, "ts": 1764231234.123456,
     "service": "http", "encrypted": "cleartext", "tunnel": "none", "threat": "benign",
     "scenario": "http"}
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from multa_broker.errors import MultaError
from multa_broker.flow import DEFAULT_N, Flow, FlowKey
from multa_broker.taxonomy import TASKS, class_index

ALL_PROTOS = frozenset({"tcp", "udp", "icmp"})
LABEL_FIELDS = ("capture", "proto", "orig_h", "orig_p", "resp_h", "resp_p", "ts",
                "service", "encrypted", "tunnel", "threat", "scenario")


@dataclass(frozen=True)
class Labels:
    """One flow's four task labels; None where the lab cannot know (never guessed)."""

    service: str | None
    encrypted: str | None
    tunnel: str | None
    threat: str | None

    def __post_init__(self) -> None:
        for task in TASKS:
            value = getattr(self, task)
            if value is not None:
                class_index(task, value)  # ValueError names the bad class

    def as_dict(self) -> dict[str, str | None]:
        return {task: getattr(self, task) for task in TASKS}


@dataclass(frozen=True)
class Rule:
    """Flows between ``client`` and ``server`` (either may be None: any lab host).

    ``ports`` are the server side's ports (None: any; ICMP flows only match
    port-less rules). The match ignores which side the extractor took as
    originator, so FTP active-mode data and ICMP errors sent by the server
    still match.
    """

    labels: Labels
    server: str | None = None
    ports: frozenset[int] | None = None
    client: str | None = None
    protos: frozenset[str] = ALL_PROTOS
    what: str = ""

    def _side(self, c_h: str, s_h: str, s_p: int, proto: str) -> bool:
        if self.server is not None and s_h != self.server:
            return False
        if self.client is not None and c_h != self.client:
            return False
        if self.ports is not None and (proto == "icmp" or s_p not in self.ports):
            return False
        return True

    def matches(self, key: FlowKey) -> bool:
        if key.proto not in self.protos:
            return False
        return (self._side(key.orig_h, key.resp_h, key.resp_p, key.proto)
                or self._side(key.resp_h, key.orig_h, key.orig_p, key.proto))


def ports(*items: int | range) -> frozenset[int]:
    out: set[int] = set()
    for it in items:
        out.update(it if isinstance(it, range) else (it,))
    return frozenset(out)


@dataclass
class Labelled:
    key: FlowKey
    labels: Labels
    rule: Rule


@dataclass
class LabelOutcome:
    labelled: list[Labelled] = field(default_factory=list)
    unmatched: list[FlowKey] = field(default_factory=list)


def read_capture_flows(pcap: Path) -> list[Flow]:
    """Flows of a lab capture, read by the corpus builder's extractor."""
    try:
        from multa_broker.capture import read_flows
    except ImportError as e:
        raise MultaError(f"cannot label {pcap}: the flow extractor multa_broker.capture is not available ({e})") from None
    return list(read_flows(pcap, n=DEFAULT_N, verify_checksums=False))


def label(flows: Iterable[Flow], rules: Sequence[Rule]) -> LabelOutcome:
    out = LabelOutcome()
    for flow in flows:
        for rule in rules:
            if rule.matches(flow.key):
                out.labelled.append(Labelled(flow.key, rule.labels, rule))
                break
        else:
            out.unmatched.append(flow.key)
    return out


def record(capture: str, scenario: str, item: Labelled) -> dict[str, Any]:
    k = item.key
    obj: dict[str, Any] = {
        "capture": capture, "proto": k.proto, "orig_h": k.orig_h, "orig_p": k.orig_p,
        "resp_h": k.resp_h, "resp_p": k.resp_p, "ts": round(k.ts, 6),
    }
    obj.update(item.labels.as_dict())
    obj["scenario"] = scenario
    return obj


def write(path: Path, records: Iterable[dict[str, Any]], append: bool = True) -> int:
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for obj in records:
            f.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
            n += 1
    return n


def read(path: Path) -> list[dict[str, Any]]:
    """Read a labels.jsonl, checking every line has exactly the documented fields."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MultaError(f"{path}:{i}: not JSON ({e.msg})") from None
            if tuple(obj) != LABEL_FIELDS:
                raise MultaError(f"{path}:{i}: fields {list(obj)} differ from {list(LABEL_FIELDS)}")
            out.append(obj)
    return out


def counts(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Flows per label per task; a missing label counts as "null"."""
    c: dict[str, Counter] = {task: Counter() for task in TASKS}
    for obj in records:
        for task in TASKS:
            c[task][obj[task] if obj[task] is not None else "null"] += 1
    return {task: dict(sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))) for task, cnt in c.items()}
