"""The wire contract between the Zeek package and the bridge (docs/protocol.md).

Zeek -> bridge: event ``Multa::flows(node: string, flows: vector of Multa::Flow)``
on ``Multa::flow_topic`` (default ``multa/flows``).

Bridge -> Zeek: event ``Multa::results(results: vector of Multa::Result)`` on
``Multa::result_topic`` (default ``multa/results``) or the sending node's topic.

Or, with ``Multa::flow_encoding = Multa::PACKED`` (the package's default), the
compact encoding: event ``Multa::packed_flows(node: string, version: count,
flows: vector of Multa::PackedFlow)``, each flow's sequences and host context
packed into one string (:data:`PACKED_FLOW_VERSION`, :func:`pack_sequences`).
Packed flows of version 2 are answered packed too: event
``Multa::packed_results(version: count, results: string)``, the results as one
JSON text that Zeek reads with ``from_json`` (:func:`pack_results`).

Records travel as vectors of their fields in declaration order; the field
tuples below are that order and must match ``zeek_scripts/main.zeek``.
Tests on both sides pin it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import msgspec

_JSON_ENCODE = msgspec.json.Encoder().encode

FLOWS_EVENT = "Multa::flows"
#: The compact encoding of the same flows (docs/protocol.md, section 1.1).
PACKED_FLOWS_EVENT = "Multa::packed_flows"
RESULTS_EVENT = "Multa::results"
#: The compact encoding of the same results (docs/protocol.md, section 1.2).
PACKED_RESULTS_EVENT = "Multa::packed_results"
DEFAULT_FLOW_TOPIC = "multa/flows"
DEFAULT_RESULT_TOPIC = "multa/results"
#: Prefix of per-node result topics: results for node X go to ``multa/results/X``
#: when the bridge is set to answer the sending node.
NODE_RESULT_TOPIC_PREFIX = "multa/results/"

#: Version of the flow contract: 2 added ``ctx`` (host context, :mod:`multa_broker.context`).
#: The bridge also accepts version 1 flows (the first nine fields) from older packages.
FLOW_CONTRACT_VERSION = 2

#: ``Multa::Flow`` fields of contract version 1 and their Zeek/Broker types, in declaration order.
FLOW_FIELDS_V1: tuple[tuple[str, str], ...] = (
    ("uid", "string"),
    ("orig_h", "addr"),
    ("orig_p", "port"),
    ("resp_h", "addr"),
    ("resp_p", "port"),
    ("ts", "time"),
    ("sizes", "vector of count"),
    ("dirs", "vector of bool"),
    ("iats", "vector of count"),
)

#: ``Multa::Flow`` fields now: version 1's, then the host context (``&optional``: absent
#: where the package computes none, which travels as Broker's ``none``).
FLOW_FIELDS: tuple[tuple[str, str], ...] = FLOW_FIELDS_V1 + (("ctx", "vector of count"),)

#: Version of the packed encoding (``Multa::packed_flows``' second argument): 1 is
#: ``[sizes]|[dirs]|[iats]`` and, where the flow has host context, ``|[ctx]``, each
#: vector as Zeek renders it (``cat_sep("|", "", f$sizes, f$dirs, f$iats, f$ctx)``):
#: counts in decimal, booleans ``T``/``F``, elements separated by ", ".
#: Version 2 packs the same way and says that the node reads ``Multa::packed_results``:
#: the bridge answers packed flows of version 2 packed, and those of version 1 (an older
#: package) with ``Multa::results``.
PACKED_FLOW_VERSION = 2
#: The packed flow versions the bridge reads.
PACKED_FLOW_VERSIONS = frozenset({1, 2})
#: The first packed flow version whose node reads ``Multa::packed_results``.
PACKED_RESULTS_SINCE = 2

#: Version of ``Multa::packed_results``' JSON text (its first argument): 1 is a JSON
#: array of objects with the ``Multa::Result`` field names as keys (:func:`pack_results`).
PACKED_RESULT_VERSION = 1

#: ``Multa::PackedFlow`` fields: version 2's first six, then ``packed``, the string
#: of :func:`pack_sequences` (the sequences, and ``ctx`` where present).
PACKED_FLOW_FIELDS: tuple[tuple[str, str], ...] = FLOW_FIELDS_V1[:6] + (("packed", "string"),)

#: Longest ``packed`` string the bridge reads: 64 packets of the longest numbers
#: (5-digit sizes, 20-digit gaps) and ctx fit in 2,100 characters.
MAX_PACKED_CHARS = 4096

#: ``Multa::Result`` fields and their types, in declaration order.
RESULT_FIELDS: tuple[tuple[str, str], ...] = (
    ("uid", "string"),
    ("model", "string"),
    ("tasks", "vector of string"),
    ("labels", "vector of string"),
    ("scores", "vector of double"),
)


class Port(NamedTuple):
    """A Zeek ``port``: number plus transport protocol ("tcp", "udp", "icmp", "unknown")."""

    number: int
    proto: str

    def __str__(self) -> str:
        return f"{self.number}/{self.proto}"


@dataclass(frozen=True, slots=True)
class Result:
    """One ``Multa::Result`` record: a flow's verdicts, one label and score per task."""

    uid: str
    model: str
    tasks: tuple[str, ...]
    labels: tuple[str, ...]
    scores: tuple[float, ...]


def _render(values: object) -> str:
    return "[" + ", ".join("T" if v is True else "F" if v is False else str(int(v)) for v in values) + "]"


def pack_sequences(sizes: Sequence[int], dirs: Sequence[bool], iats: Sequence[int],
                   ctx: Sequence[int] | None = None) -> str:
    """A flow's sequences (and host context) in the packed encoding, version 1, exactly as
    Zeek writes them: ``[60, 52]|[T, F]|[0, 310]`` or ``...|[4, 2, 3, 0, 0, 0]``."""
    parts = [_render(sizes), _render([bool(d) for d in dirs]), _render(iats)]
    if ctx is not None:
        parts.append(_render(ctx))
    return "|".join(parts)


def pack_results(results: Sequence[Result]) -> str:
    """Results in the packed encoding, version 1: one JSON array of objects keyed by the
    ``Multa::Result`` field names, which Zeek turns into a ``vector of Multa::Result`` with
    ``from_json`` in C++ (``[{"uid":"C1","model":"m/1","tasks":["service"],"labels":["tls"],
    "scores":[0.981234]}]``). Scores are written as the typed encoding writes them, with six
    decimals ("%.6f"), so both encodings give Zeek the same numbers and multa.log the same text.
    Model, task and label strings repeat from result to result: their JSON is rendered once."""
    return "[" + ",".join([_packed_result(r) for r in results]) + "]"


def _packed_result(r: Result) -> str:
    head = _HEADS.get((r.model, r.tasks))
    if head is None:
        head = _cached(_HEADS, (r.model, r.tasks), ',"model":' + _json(r.model) + ',"tasks":['
                       + ",".join(map(_json, r.tasks)) + '],"labels":[')
    labels = _LABELS.get(r.labels)
    if labels is None:
        labels = _cached(_LABELS, r.labels, ",".join(map(_json, r.labels)) + '],"scores":[')
    fmt = _SCORES_FMT.get(len(r.scores))
    if fmt is None:
        fmt = _cached(_SCORES_FMT, len(r.scores), ",".join(["%.6f"] * len(r.scores)) + "]}")
    # Zeek uids are letters and digits: no escaping needed.
    uid = '{"uid":"' + r.uid + '"' if r.uid.isalnum() and r.uid.isascii() else '{"uid":' + _json(r.uid)
    return uid + head + labels + fmt % tuple(r.scores)


def _json(text: str) -> str:
    return _JSON_ENCODE(text).decode()


def _cached(cache: dict, key: object, value: str) -> str:
    if len(cache) >= 4096:  # labels are few; a bound all the same
        cache.clear()
    cache[key] = value
    return value


_HEADS: dict[tuple[str, tuple[str, ...]], str] = {}
_LABELS: dict[tuple[str, ...], str] = {}
_SCORES_FMT: dict[int, str] = {}
