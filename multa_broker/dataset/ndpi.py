"""Labels from nDPI's per-flow ``.out`` result files.

nDPI prints one line per flow, e.g.::

    1  TCP 192.168.2.126:45380 <-> 161.117.13.29:80 [proto: 7.295/HTTP.1kxun]...[ClearText]...[cat: Streaming/17]...

The protocol is ``Master.App``: the master names the wire protocol (HTTP,
TLS, QUIC, DNS, ...), the app what runs inside it. Following our class
conventions the service comes from the master ("apps carried inside TLS are
tls"); full ``Master.App`` entries may override (e.g. ``TLS.Tor`` -> tunnel
tor). ``[Encrypted]``/``[ClearText]`` give the encrypted task directly.
``Unknown`` flows get no labels at all.

The same lines come from nDPI's test result files and from ``ndpiReader -i
CAPTURE -v 2`` (ndpireader.py runs it for captures without result files).
nDPI 4.2's reader prints the same ``[proto: N.M/Master.App]``, ``[Encrypted]``
and ``[cat: C/N]`` fields; some protocol names differ from newer nDPI's (e.g.
4.2's ``IPsec`` and ``Skype_Teams``), so the tables list both spellings.
``[Confidence: ...]`` says how nDPI decided: by DPI, or guessed ("Match by
port", "Match by IP"); a source with ``dpi_only`` keeps only DPI verdicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from multa_broker.dataset.labelmap import LabelSource, Labels, merged
from multa_broker.flow import FlowKey

_LINE = re.compile(
    r"^\t\d+\t(?P<proto>TCP|UDP|ICMP|ICMPV6) (?P<a>\S+) (?:<->|->) (?P<b>\S+) (?P<rest>\[.*)$"
)
_PROTO = re.compile(r"\[proto: [0-9.]+/(?P<name>[^\]]+)\]")
_CAT = re.compile(r"\[cat: (?P<cat>[^/\]]+)/")
_CONF = re.compile(r"\[Confidence: (?P<conf>[^\]]+)\]")


@dataclass(frozen=True, slots=True)
class NdpiFlow:
    proto: str  # tcp, udp, icmp
    a: tuple[str, int]
    b: tuple[str, int]
    protocol: str  # "Master" or "Master.App"
    category: str | None
    encrypted: bool | None
    #: "DPI", "DPI (cache)", "Match by port", ...; None where the line has none.
    confidence: str | None = None

    @property
    def guessed(self) -> bool:
        """nDPI named the flow from its port or address, not from its payload."""
        return self.confidence is not None and not self.confidence.startswith("DPI")

    @property
    def master(self) -> str:
        return self.protocol.split(".", 1)[0]


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def parse_out(path: str | Path) -> list[NdpiFlow]:
    """Parse the flow lines of one nDPI ``.out`` file (other lines are summaries)."""
    flows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            rest = m["rest"]
            pm = _PROTO.search(rest)
            if not pm:
                continue
            cm = _CAT.search(rest)
            conf = _CONF.search(rest)
            enc = True if "[Encrypted]" in rest else False if "[ClearText]" in rest else None
            proto = {"TCP": "tcp", "UDP": "udp"}.get(m["proto"], "icmp")
            flows.append(NdpiFlow(proto, _endpoint(m["a"]), _endpoint(m["b"]), pm["name"],
                                  cm["cat"] if cm else None, enc, conf["conf"] if conf else None))
    return flows


def flow_index_key(proto: str, a: tuple[str, int], b: tuple[str, int]) -> tuple:
    """Direction-free key; ICMP matches on addresses only (nDPI prints port 0)."""
    if proto == "icmp":
        return (proto, frozenset((a[0], b[0])))
    return (proto, frozenset((a, b)))


def key_of(k: FlowKey) -> tuple:
    return flow_index_key(k.proto, (k.orig_h, k.orig_p), (k.resp_h, k.resp_p))


def labels_for(source: LabelSource, nf: NdpiFlow) -> Labels:
    """Map one nDPI verdict onto our tasks, per the source's tables."""
    if nf.master == "Unknown" or (source.dpi_only and nf.guessed):
        return {}
    enc = None if nf.encrypted is None else ("encrypted" if nf.encrypted else "cleartext")
    return merged(
        source.defaults,
        {"encrypted": enc},
        source.categories.get(nf.category or ""),
        source.protocols.get(nf.master, {"service": "other"}),
        source.protocols.get(nf.protocol) if nf.protocol != nf.master else None,
    )


class NdpiLabeller:
    """Labels the flows of one capture from its ``.out`` file (or ndpiReader's output)."""

    def __init__(self, source: LabelSource, out_file: str | Path, relpath: str) -> None:
        self._index: dict[tuple, Labels] = {}
        for nf in parse_out(out_file):
            labels = labels_for(source, nf)
            if labels:
                self._index.setdefault(flow_index_key(nf.proto, nf.a, nf.b), labels)
        self._overrides = source.rules_for(relpath)
        self._rules_alone = source.rules_alone

    def __call__(self, key: FlowKey) -> Labels:
        base = self._index.get(key_of(key))
        extra = self._overrides.label(key) if self._overrides else None
        if base is None and not (self._rules_alone and extra):
            return {}
        return merged(base, extra)
