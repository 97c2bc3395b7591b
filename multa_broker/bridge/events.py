"""The two Multa events as the bridge meets them: flows decoded, results encoded.

``Multa::flows(node: string, flows: vector of Multa::Flow)`` comes in, from
either transport, through one decoder; ``Multa::results(results: vector of
Multa::Result)`` goes out as Broker JSON text (WebSocket) or :mod:`codec`
values (native). Field order is :data:`multa_broker.protocol.FLOW_FIELDS` /
``RESULT_FIELDS``. Encoding flows as Zeek does is for tests and benchmarks
only (:mod:`multa_broker.bench.fakezeek`). ``Multa::packed_flows``, the packed
encoding, is unpacked in :mod:`packed`, which builds on the checks here.

These are the bridge's hot path, so they are written against the contract's
exact shape instead of going through the generic :mod:`codec`: a flow record
is checked field by field (Broker type first, then :func:`multa_broker.flow.validate`),
and results are rendered straight to JSON text. A bad flow record raises
:class:`FlowError` for that record only; a message that is not a well-formed
``Multa::flows`` call raises :class:`codec.CodecError` for the whole message.
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from multa_broker import context
from multa_broker.bridge import codec, wire
from multa_broker.flow import MAX_N, MAX_SIZE, MIN_SIZE, PROTO_INDEX, Flow, FlowError, FlowKey, validate
from multa_broker.protocol import (FLOW_FIELDS, FLOW_FIELDS_V1, FLOWS_EVENT, PACKED_RESULT_VERSION,
                                   PACKED_RESULTS_EVENT, RESULTS_EVENT, Result, pack_results)

_N_FLOW_FIELDS = len(FLOW_FIELDS)
_N_FLOW_FIELDS_V1 = len(FLOW_FIELDS_V1)
#: Contract version by a record's number of fields.
_VERSION_BY_FIELDS = {_N_FLOW_FIELDS_V1: 1, _N_FLOW_FIELDS: 2}
#: A Broker ``count`` is unsigned 64-bit (docs/protocol.md, section 4).
_MAX_COUNT = 2**64 - 1
#: What one record's checks may raise besides FlowError; each drops that record alone.
_RECORD_ERRORS = (FlowError, codec.CodecError, ValueError, TypeError, OverflowError, AttributeError,
                  IndexError, KeyError)


def _timestamp(text: Any) -> float:
    try:
        return codec.parse_timestamp(text).timestamp()
    except (codec.CodecError, OverflowError, ValueError) as e:
        raise FlowError(f"field ts: {e}"[:160]) from None


class ContextFlowError(FlowError):
    """A flow record whose ``ctx`` field breaks the host-context definition (:func:`context.validate`)."""


class PackingFlowError(FlowError):
    """A ``Multa::PackedFlow`` whose ``packed`` string breaks the packed encoding."""


@dataclass(slots=True)
class FlowsMessage:
    """One ``Multa::flows`` call: the sending node, its valid flows, and why the others failed."""

    node: str
    flows: list[Flow] = field(default_factory=list)
    #: One line per rejected flow record (the record's uid when readable).
    rejected: list[str] = field(default_factory=list)
    #: How many of ``rejected`` failed on their host context alone (a ContextFlowError).
    rejected_context: int = 0
    #: How many of ``rejected`` had a malformed packed string (a PackingFlowError).
    rejected_packing: int = 0
    #: How the flows travelled: "typed" (``Multa::flows``) or "packed" (``Multa::packed_flows``).
    encoding: str = "typed"
    #: Flow records received per contract version (1, 2; 0: a record of neither shape).
    versions: dict[int, int] = field(default_factory=dict)
    #: The node reads ``Multa::packed_results`` (it sent packed flows of version 2 or later).
    packed_results: bool = False


# ------------------------------------------------------------ flows in
#
# One decoder for every way a ``Multa::flows`` call arrives: flow_from_json turns
# one record into a validated Flow and _flows runs it over a call's records, so
# every transport rejects the same flows with the same reasons. A record is a
# tree of wire.Value (any parser; the native transport converts Broker's values
# with wire.from_codec), or a wire.FlowsWire record whose Broker tags msgspec
# already checked while parsing; _field and _seq skip only those checks.

# Addresses and ports repeat across flows; remembering the good ones saves
# most of their parsing. Both caches are cleared when they grow past a bound.
_ADDR_OK: dict[str, None] = {}
_PORTS: dict[str, tuple[int, str]] = {}
_CACHE_MAX = 65536
#: The tagged structs of wire.FlowsWire and FlowsWire1 (msgspec checked their tags).
_TYPED = frozenset(getattr(wire, n) for n in ("_S", "_A", "_P", "_T", "_VC", "_VB", "_N", "_Rec", "_Rec2")
                   if hasattr(wire, n))
_TYPED_NONE = getattr(wire, "_N", None)
_N_CTX = context.N_FEATURES
_MAX_CTX = context.MAX_ENTRIES


def _field(v: Any, dtype: str, name: str) -> Any:
    if v.__class__ is not wire.Value:
        # A typed struct from wire.FlowsWire: msgspec already checked its tag.
        if v.__class__ in _TYPED:
            return v.data
        raise FlowError(f"field {name} must be {dtype}, got {type(v).__name__}")
    if v.t != dtype:
        raise FlowError(f"field {name} must be {dtype}, got {v.t or 'no type'}")
    return v.data


def _seq(v: Any, dtype: str, pytype: type, name: str, max_n: int, typed: bool) -> list[Any]:
    items = v.data if typed else _field(v, "vector", name)
    if items.__class__ is not list:
        raise FlowError(f"field {name} is not a JSON array")
    if len(items) > max_n:
        # Checked before touching the elements: an oversized vector costs nothing.
        raise FlowError(f"field {name} has {len(items)} elements, more than {max_n}")
    if typed:
        values = [e.data for e in items]  # msgspec checked every element
    else:
        try:
            values = [e.data for e in items if e.t == dtype]
        except AttributeError:
            raise FlowError(f"field {name} holds something that is not a Broker value") from None
        # map(type) keeps the per-element type check in C (bool is not int here).
        if len(values) != len(items) or list(map(type, values)).count(pytype) != len(values):
            raise FlowError(f"field {name} must be a vector of {dtype}")
    if dtype == "count" and values and max(values) > _MAX_COUNT:
        raise FlowError(f"field {name}: count {max(values)} outside 0..2**64-1"[:120])
    return values


def _port(v: Any, name: str) -> tuple[int, str]:
    text = _field(v, "port", name)
    p = _PORTS.get(text) if text.__class__ is str else None
    if p is None:
        try:
            port = codec.parse_port(text)
        except codec.CodecError as e:
            raise FlowError(f"field {name}: {e}") from None
        p = (port.number, port.proto)
        if len(_PORTS) >= _CACHE_MAX:
            _PORTS.clear()
        _PORTS[text] = p
    return p


def _addr(v: Any, name: str) -> str:
    text = _field(v, "address", name)
    if text.__class__ is not str or text not in _ADDR_OK:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise FlowError(f"field {name}: bad address {text!r}"[:120]) from None
        if len(_ADDR_OK) >= _CACHE_MAX:
            _ADDR_OK.clear()
        _ADDR_OK[text] = None
    return text


def _ctx(v: Any, typed: bool) -> tuple[int, ...] | None:
    """The ``ctx`` field: None for Broker ``none``, else a valid host context; ContextFlowError if not."""
    if typed:
        if v.__class__ is _TYPED_NONE:
            return None
        items = v.data  # a vector of count: msgspec checked every element
        if len(items) != _N_CTX:
            raise ContextFlowError(f"field ctx has {len(items)} numbers, not {_N_CTX}")
        values = tuple([e.data for e in items])
        if max(values) <= _MAX_CTX:
            return values  # what context.validate checks: msgspec did the rest (ints >= 0)
    else:
        if v.__class__ is not wire.Value:
            raise ContextFlowError(f"field ctx must be a vector of count or none, got {type(v).__name__}")
        if v.t == "none":
            if v.data is not None and v.data != {}:
                raise ContextFlowError("field ctx: none with data")
            return None
        if v.t != "vector" or v.data.__class__ is not list:
            raise ContextFlowError(f"field ctx must be a vector of count or none, got {v.t or 'no type'}")
        items = v.data
        if len(items) != _N_CTX:
            # Checked before touching the elements: an oversized vector costs nothing.
            raise ContextFlowError(f"field ctx has {len(items)} numbers, not {_N_CTX}")
        try:
            values = tuple([e.data for e in items if e.t == "count"])
        except AttributeError:
            raise ContextFlowError("field ctx holds something that is not a Broker value") from None
        if len(values) != _N_CTX:
            raise ContextFlowError("field ctx must be a vector of count")
    try:
        return context.validate(values)
    except context.ContextError as e:
        raise ContextFlowError(f"field ctx: {e}"[:200]) from None


def _validate(flow: Flow, max_n: int) -> None:
    """:func:`multa_broker.flow.validate` (before ``ctx`` is set), its common case done with
    C-level min/max instead of a Python loop per packet; validate() itself says what is wrong."""
    sizes, iats, k = flow.sizes, flow.iats, flow.key
    if (sizes and len(sizes) <= max_n and len(sizes) == len(flow.dirs) == len(iats) and iats[0] == 0
            and min(iats) >= 0 and min(sizes) >= MIN_SIZE and max(sizes) <= MAX_SIZE and k.proto in PROTO_INDEX
            and 0 <= k.orig_p <= 65535 and 0 <= k.resp_p <= 65535 and math.isfinite(k.ts)):
        return
    validate(flow, max_n)


def _flow_key(fields: Any, typed: bool) -> FlowKey:
    """A flow's key from a record's first six fields (uid, orig_h, orig_p, resp_h, resp_p,
    ts), which typed and packed records share; FlowError says what is wrong."""
    orig_h = _addr(fields[1], "orig_h")
    orig_p, orig_proto = _port(fields[2], "orig_p")
    resp_h = _addr(fields[3], "resp_h")
    resp_p, proto = _port(fields[4], "resp_p")
    if orig_proto != proto:
        raise FlowError(f"ports disagree on the protocol ({orig_proto} vs {proto})")
    ts = _timestamp(fields[5].data if typed else _field(fields[5], "timestamp", "ts"))
    return FlowKey(proto, orig_h, orig_p, resp_h, resp_p, ts)


def flow_from_json(rec: Any, max_n: int = MAX_N) -> Flow:
    """One ``Multa::Flow`` record (a Broker JSON vector as :class:`wire.Value`, or a typed
    :data:`wire.FlowsWire`/``FlowsWire1`` record) as a validated Flow; FlowError says what
    is wrong (ContextFlowError when only its host context is).

    Records of contract version 2 (ten fields, ``ctx`` last) and of version 1 (the first
    nine, from an older Zeek package: ``ctx`` None) are both read.
    """
    typed = rec.__class__ in _TYPED
    if typed:
        fields = rec.data  # a tuple of exactly the nine or ten fields
        uid = fields[0].data
    else:
        fields = _field(rec, "vector", "flow")
        if fields.__class__ is not list or len(fields) not in _VERSION_BY_FIELDS:
            n = len(fields) if fields.__class__ is list else "no"
            raise FlowError(f"flow record has {n} fields, expected {_N_FLOW_FIELDS} "
                            f"(or {_N_FLOW_FIELDS_V1}, contract version 1)")
        uid = _field(fields[0], "string", "uid")
    if uid.__class__ is not str or not uid:
        raise FlowError("field uid must be a non-empty string")
    try:
        flow = Flow(
            _flow_key(fields, typed),
            _seq(fields[6], "count", int, "sizes", max_n, typed),
            _seq(fields[7], "boolean", bool, "dirs", max_n, typed),
            _seq(fields[8], "count", int, "iats", max_n, typed),
            uid,
        )
        _validate(flow, max_n)
        if len(fields) == _N_FLOW_FIELDS:
            # After the packets: a record bad in both is counted as invalid, not for its context.
            flow.ctx = _ctx(fields[9], typed)
    except ContextFlowError as e:
        raise ContextFlowError(f"flow {uid}: {e}"[:300]) from None
    except FlowError as e:
        raise FlowError(f"flow {uid}: {e}"[:300]) from None
    return flow


def _record_version(rec: Any) -> int:
    """A generic record's contract version by its number of fields (0: neither)."""
    try:
        data = rec.data
        return _VERSION_BY_FIELDS.get(len(data), 0) if data.__class__ is list and rec.t == "vector" else 0
    except (AttributeError, TypeError):
        return 0


def _flows(node: str, records: Any, max_n: int, version: int = 0) -> FlowsMessage:
    """``version``: the contract version of every record when the parser already knows it."""
    msg = FlowsMessage(node)
    if version:
        msg.versions[version] = len(records)
    else:
        versions = msg.versions
        records = list(records)
        for rec in records:
            v = _record_version(rec)
            versions[v] = versions.get(v, 0) + 1
    return decode_each(msg, lambda rec: flow_from_json(rec, max_n), records, "flow record")


def decode_each(msg: FlowsMessage, decode: Callable[[Any], Flow], records: Iterable[Any], what: str) -> FlowsMessage:
    """Each record through ``decode`` into ``msg.flows``; one that fails goes to ``msg.rejected``
    with its reason (counted in ``rejected_packing`` / ``rejected_context`` by kind) and
    does not stop the others. The one loop of the typed and the packed decoders, so both
    reject alike; ``what`` names an unforeseen failure's record ("flow record")."""
    ok, rejected = msg.flows, msg.rejected
    for rec in records:
        try:
            ok.append(decode(rec))
        except PackingFlowError as e:
            rejected.append(str(e))
            msg.rejected_packing += 1
        except ContextFlowError as e:
            rejected.append(str(e))
            msg.rejected_context += 1
        except FlowError as e:
            rejected.append(str(e))
        except _RECORD_ERRORS as e:  # a shape no check foresaw: this record only
            rejected.append(f"unreadable {what}: {e!r}"[:300])
    return msg


def flows_from_json(args: Any, max_n: int = MAX_N) -> FlowsMessage:
    """The arguments of ``Multa::flows`` as Broker JSON Values (``[node, [flow, ...]]``)."""
    if args.__class__ is not list or len(args) != 2:
        raise codec.CodecError(f"{FLOWS_EVENT} needs 2 arguments (node, flows)")
    node, flows = args
    if node.__class__ is not wire.Value or node.t != "string" or node.data.__class__ is not str:
        raise codec.CodecError(f"{FLOWS_EVENT}: argument node must be a string")
    if flows.__class__ is not wire.Value or flows.t != "vector" or flows.data.__class__ is not list:
        raise codec.CodecError(f"{FLOWS_EVENT}: argument flows must be a vector")
    return _flows(node.data, flows.data, max_n)


def flows_from_wire(m: Any, max_n: int = MAX_N) -> FlowsMessage:
    """The flows of a :data:`wire.FlowsWire` (or ``FlowsWire1``) message: :func:`flows_from_json`'s
    decoder without the checks msgspec did while parsing (tests pin that both give the same)."""
    node, flows = m.data[2].data[1].data
    return _flows(node.data, flows.data, max_n, 1 if m.__class__ is _WIRE_V1 else 2)


_WIRE_V1 = getattr(wire, "FlowsWire1", None)


# ------------------------------------------------------------ results


def check_result(r: Result) -> None:
    """Raise ValueError unless ``r`` can become a ``Multa::Result`` Zeek accepts."""
    if not (len(r.tasks) == len(r.labels) == len(r.scores)):
        raise ValueError(f"result {r.uid}: tasks/labels/scores lengths differ")
    for s in r.scores:
        if not math.isfinite(s):
            raise ValueError(f"result {r.uid}: score {s} is not finite")


_STR_CACHE: dict[str, str] = {}
_VEC_CACHE: dict[tuple[str, ...], str] = {}
_REALS_FMT: dict[int, str] = {}
_CACHE_LIMIT = 4096


def _jstr(s: str) -> str:
    """``{"@data-type":"string","data":...}`` text; labels/tasks/model repeat, so cache them."""
    text = _STR_CACHE.get(s)
    if text is None:
        text = '{"@data-type":"string","data":' + json.dumps(s) + "}"
        if len(_STR_CACHE) < _CACHE_LIMIT:
            _STR_CACHE[s] = text
    return text


def _jstrs(items: tuple[str, ...]) -> str:
    """A vector of string; the same task and label tuples come back all the time."""
    text = _VEC_CACHE.get(items)
    if text is None:
        text = '{"@data-type":"vector","data":[' + ",".join(_jstr(t) for t in items) + "]}"
        if len(_VEC_CACHE) < _CACHE_LIMIT:
            _VEC_CACHE[items] = text
    return text


def _jreals(scores: tuple[float, ...]) -> str:
    # Six decimals like Zeek/Broker's own "%f"; always has a decimal point, so
    # Broker reads a real (a bare "1" would be an integer and fail the event).
    fmt = _REALS_FMT.get(len(scores))
    if fmt is None:
        fmt = _REALS_FMT[len(scores)] = ('{"@data-type":"vector","data":['
                                         + ",".join(['{"@data-type":"real","data":%.6f}'] * len(scores)) + "]}")
    return fmt % scores


def _juid(uid: str) -> str:
    # Zeek uids are letters and digits: no escaping needed, skip json.dumps.
    return ('{"@data-type":"string","data":"' + uid + '"}') if uid.isalnum() and uid.isascii() \
        else '{"@data-type":"string","data":' + json.dumps(uid) + "}"


def result_json_text(r: Result) -> str:
    """One ``Multa::Result`` record as Broker JSON text."""
    return ('{"@data-type":"vector","data":[' + _juid(r.uid) + "," + _jstr(r.model) + ","
            + _jstrs(r.tasks) + "," + _jstrs(r.labels) + "," + _jreals(tuple(r.scores)) + "]}")


def _event_message_text(topic: str, event: str, args: str) -> str:
    """A complete WebSocket data-message carrying Zeek event ``event``; ``args`` is its
    arguments' Broker JSON values, comma-separated."""
    return (
        '{"type":"data-message","topic":' + json.dumps(topic) + ","
        '"@data-type":"vector","data":['
        '{"@data-type":"count","data":1},{"@data-type":"count","data":1},'
        '{"@data-type":"vector","data":[' + _jstr(event) + ","
        '{"@data-type":"vector","data":[' + args + "]}]}]}"
    )


def results_message_text(topic: str, results: Iterable[Result]) -> str:
    """A complete WebSocket data-message carrying ``Multa::results(results)``."""
    body = ",".join(result_json_text(r) for r in results)
    return _event_message_text(topic, RESULTS_EVENT, '{"@data-type":"vector","data":[' + body + "]}")


def packed_results_message_text(topic: str, results: Sequence[Result]) -> str:
    """A complete WebSocket data-message carrying ``Multa::packed_results(version, text)``:
    two Broker values for the whole batch instead of about 18 per result."""
    return _event_message_text(topic, PACKED_RESULTS_EVENT,
                               '{"@data-type":"count","data":' + str(PACKED_RESULT_VERSION) + "},"
                               '{"@data-type":"string","data":' + json.dumps(pack_results(results)) + "}")


def result_values(r: Result) -> tuple[Any, ...]:
    """One ``Multa::Result`` record in :mod:`codec` Python values."""
    return (r.uid, r.model, tuple(r.tasks), tuple(r.labels), tuple(round(float(s), 6) for s in r.scores))
