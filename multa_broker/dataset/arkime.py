"""Labels from Arkime's ``.test`` session files.

Arkime's test suite keeps, beside each capture ``X.pcap``, the sessions Arkime
parsed from it in ``X.test`` (JSON): ``sessions3[].body`` with ``source`` and
``destination`` (``ip``, ``port``), ``ipProtocol``, ``firstPacket`` (ms) and
``protocol``, a list of Arkime's protocol names, transport included
(``["http", "tcp"]``, ``["ntlm", "smb", "tcp"]``).

That is an independent labeller of services: each name in the session's list
maps through the source's ``protocols`` table; names the table maps to
nothing (``tcp``, ``udp``, test markers) are ignored; where the mapped names
disagree on a task, that task stays missing. A session with a name in
``skip`` (encapsulations such as ``gre``/``gtp``/``vxlan`` and proxies such as
``socks``) gets no labels: its endpoints are not the flow's own.
Flows join on the 5-tuple without regard to direction and, where one repeats,
the session whose first packet is nearest the flow's (within a second).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multa_broker.dataset.labelmap import LabelSource, Labels, merged
from multa_broker.errors import MultaError
from multa_broker.flow import FlowKey

TS_TOLERANCE = 1.0
_IP_PROTO = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}


@dataclass(frozen=True, slots=True)
class ArkimeSession:
    proto: str  # tcp, udp, icmp
    a: tuple[str, int]
    b: tuple[str, int]
    ts: float  # first packet, seconds
    protocols: tuple[str, ...]


def parse_test(path: str | Path) -> list[ArkimeSession]:
    """The sessions of one ``.test`` file (sessions of other IP protocols left out)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise MultaError(f"{path}: cannot read Arkime test file ({e.strerror})") from None
    except ValueError as e:
        raise MultaError(f"{path}: not JSON ({e})") from None
    out = []
    for i, entry in enumerate(doc.get("sessions3", []) if isinstance(doc, dict) else []):
        body: Any = entry.get("body", {}) if isinstance(entry, dict) else {}
        proto = _IP_PROTO.get(body.get("ipProtocol"))
        if proto is None:
            continue  # SCTP, ESP, ...: the extractor makes no such flows
        try:
            src, dst = body["source"], body["destination"]
            a = (str(src["ip"]), int(src.get("port", 0) or 0))
            b = (str(dst["ip"]), int(dst.get("port", 0) or 0))
            ts = float(body["firstPacket"]) / 1000.0
        except (KeyError, TypeError, ValueError) as e:
            raise MultaError(f"{path}: sessions3[{i}] lacks endpoints or firstPacket ({e})") from None
        out.append(ArkimeSession(proto, a, b, ts, tuple(str(p) for p in body.get("protocol", []))))
    return out


def _key(proto: str, a: tuple[str, int], b: tuple[str, int]) -> tuple:
    # ICMP: Arkime has no ports for it, and ours are type/counterpart.
    if proto == "icmp":
        return (proto, frozenset((a[0], b[0])))
    return (proto, frozenset((a, b)))


def labels_for(source: LabelSource, session: ArkimeSession) -> Labels:
    """Map a session's protocol names onto tasks; disagreeing tasks stay missing."""
    names = set(session.protocols)
    if names & set(source.skip):
        return {}
    out: dict[str, str | None] = {}
    for name in sorted(names):
        for task, cls in (source.protocols.get(name) or {}).items():
            if cls is None:
                continue
            if task in out and out[task] != cls:
                out[task] = None  # two protocol names say different things
            elif task not in out:
                out[task] = cls
    return merged(source.defaults if out else None, out)


class ArkimeLabeller:
    """Labels the flows of one capture from its ``.test`` file, plus the source's capture rules."""

    def __init__(self, source: LabelSource, test_file: str | Path, relpath: str) -> None:
        self._index: dict[tuple, list[tuple[float, Labels]]] = {}
        for s in parse_test(test_file):
            labels = labels_for(source, s)
            if labels:
                self._index.setdefault(_key(s.proto, s.a, s.b), []).append((s.ts, labels))
        self._overrides = source.rules_for(relpath)
        self._rules_alone = source.rules_alone

    def __call__(self, key: FlowKey) -> Labels:
        cands = self._index.get(_key(key.proto, (key.orig_h, key.orig_p), (key.resp_h, key.resp_p)))
        base = None
        if cands:
            ts, labels = min(cands, key=lambda c: abs(c[0] - key.ts))
            base = labels if abs(ts - key.ts) <= TS_TOLERANCE else None
        extra = self._overrides.label(key) if self._overrides else None
        if base is None and not (self._rules_alone and extra):
            return {}
        return merged(base, extra)
