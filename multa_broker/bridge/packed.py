"""``Multa::packed_flows`` decoded: the packed flow encoding (docs/protocol.md, "Multa::PackedFlow").

Each ``Multa::PackedFlow`` is the first six fields of a ``Multa::Flow`` and one string
holding its sequences and host context, ``[sizes]|[dirs]|[iats]`` and, with context,
``|[ctx]``. Unpacking that string is a concept of its own, so it lives here rather
than in :mod:`events`, whose field checks, errors and :class:`events.FlowsMessage` it
reuses: a packed record is rejected for the same reasons, with the same counters, as
a typed one. :func:`flows_parser` sits here because it dispatches to both decoders
(this module imports :mod:`events`, never the other way round).
"""

from __future__ import annotations

from typing import Annotated, Any

from multa_broker import context
from multa_broker.bridge import codec, events, wire
from multa_broker.bridge.events import (_MAX_COUNT, ContextFlowError, FlowsMessage, PackingFlowError, _field,
                                        _flow_key, _validate, decode_each)
from multa_broker.flow import MAX_N, Flow, FlowError
from multa_broker.protocol import (FLOWS_EVENT, MAX_PACKED_CHARS, PACKED_FLOW_FIELDS, PACKED_FLOW_VERSION,
                                   PACKED_FLOW_VERSIONS, PACKED_FLOWS_EVENT, PACKED_RESULTS_SINCE)

_N_CTX = context.N_FEATURES
_MAX_CTX = context.MAX_ENTRIES

# Multa::packed_flows(node, version, flows): each Multa::PackedFlow is the first six
# fields of a Multa::Flow, then one string, "[sizes]|[dirs]|[iats]" and, with host
# context, "|[ctx]" (protocol.pack_sequences). The string is read with str.split and
# int() over ASCII digits checked first: no per-number JSON object, no regex.

_N_PACKED_FIELDS = len(PACKED_FLOW_FIELDS)
_TYPED_PACKED = frozenset(getattr(wire, n) for n in ("_PRec",) if hasattr(wire, n))


def _packed_error(name: str, text: str, what: str) -> PackingFlowError:
    return PackingFlowError(f"packed {name} {what}: {text[:40]!r}")


def _unpack_counts(text: str, name: str, max_n: int) -> list[int]:
    """A section of counts, "[60, 52]": parsed in C by msgspec (a JSON array of unsigned 64-bit
    numbers, which is what Zeek's rendering is), else or on failure by :func:`_unpack_counts_py`,
    which also says what is wrong."""
    if _COUNTS is not None:
        try:
            values = _COUNTS.decode(text)
        except _MSGSPEC_ERRORS:
            values = None
        if values and len(values) <= max_n and max(values) <= _MAX_COUNT:
            return values
    return _unpack_counts_py(text, name, max_n)


def _unpack_bools(text: str, max_n: int) -> list[bool]:
    """The dirs section, "[T, F]": as JSON booleans in C where the text is exactly n one-letter
    elements (3n characters), else by :func:`_unpack_bools_py`."""
    if _BOOLS is not None:
        try:
            values = _BOOLS.decode(text.replace("T", "true").replace("F", "false"))
        except _MSGSPEC_ERRORS:
            values = None
        if values and len(values) <= max_n and len(text) == 3 * len(values):
            return values
    return _unpack_bools_py(text, max_n)


if wire.msgspec is not None:
    _COUNTS = wire.msgspec.json.Decoder(list[Annotated[int, wire.msgspec.Meta(ge=0)]])
    _BOOLS = wire.msgspec.json.Decoder(list[bool])
    _MSGSPEC_ERRORS = (wire.msgspec.DecodeError, wire.msgspec.ValidationError)
else:  # pragma: no cover - msgspec is a dependency; the pure-Python path is tested directly
    _COUNTS = _BOOLS = None
    _MSGSPEC_ERRORS = ()


def _unpack_counts_py(text: str, name: str, max_n: int) -> list[int]:
    if len(text) < 3 or text[0] != "[" or text[-1] != "]":
        raise _packed_error(name, text, "is not [n, n, ...]")
    inner = text[1:-1]
    if inner.count(", ") >= max_n:
        raise _packed_error(name, text, f"has {inner.count(', ') + 1} numbers, more than {max_n}")
    if not inner.replace(", ", "").isdigit() or not inner.isascii():
        what = "holds a negative number" if "-" in inner else "holds something other than decimal digits"
        raise _packed_error(name, text, what)
    try:
        values = list(map(int, inner.split(", ")))
    except ValueError:
        raise _packed_error(name, text, "has an empty element") from None
    if max(values) > _MAX_COUNT:
        raise _packed_error(name, text, "holds a number outside 0..2**64-1")
    return values


def _unpack_bools_py(text: str, max_n: int) -> list[bool]:
    if len(text) < 3 or text[0] != "[" or text[-1] != "]":
        raise _packed_error("dirs", text, "is not [T, F, ...]")
    items = text[1:-1].split(", ")
    if len(items) > max_n:
        raise _packed_error("dirs", text, f"has {len(items)} elements, more than {max_n}")
    n_true = items.count("T")
    if n_true + items.count("F") != len(items):
        raise _packed_error("dirs", text, "holds something other than T and F")
    return [x == "T" for x in items]


def _unpack(text: Any, max_n: int) -> tuple[list[int], list[bool], list[int], list[int] | None]:
    """The packed string's sequences and raw ctx numbers; PackingFlowError if malformed."""
    if text.__class__ is not str:
        raise PackingFlowError(f"field packed must be a string, got {type(text).__name__}")
    if len(text) > MAX_PACKED_CHARS:
        raise PackingFlowError(f"field packed has {len(text)} characters, more than {MAX_PACKED_CHARS}")
    parts = text.split("|")
    if len(parts) != 3 and len(parts) != 4:
        raise PackingFlowError(f"field packed has {len(parts)} sections, expected 3 (sizes|dirs|iats) "
                               f"or 4 (and ctx): {text[:40]!r}")
    sizes = _unpack_counts(parts[0], "sizes", max_n)
    dirs = _unpack_bools(parts[1], max_n)
    iats = _unpack_counts(parts[2], "iats", max_n)
    if not len(sizes) == len(dirs) == len(iats):
        raise PackingFlowError(f"packed sequences differ in length: {len(sizes)} sizes, {len(dirs)} dirs, "
                               f"{len(iats)} iats")
    ctx = _unpack_counts(parts[3], "ctx", max(_N_CTX, max_n)) if len(parts) == 4 else None
    return sizes, dirs, iats, ctx


def _packed_ctx(values: list[int] | None) -> tuple[int, ...] | None:
    if values is None:
        return None
    if len(values) != _N_CTX:
        raise ContextFlowError(f"field ctx has {len(values)} numbers, not {_N_CTX}")
    ctx = tuple(values)
    if max(ctx) <= _MAX_CTX:
        return ctx  # what context.validate checks beyond the packing (ints >= 0)
    try:
        return context.validate(ctx)
    except context.ContextError as e:
        raise ContextFlowError(f"field ctx: {e}"[:200]) from None


def unpack_sequences(text: Any, max_n: int = MAX_N) -> tuple[list[int], list[bool], list[int], tuple[int, ...] | None]:
    """``sizes, dirs, iats, ctx`` from a packed string (version 1, :func:`protocol.pack_sequences`).

    Raises :class:`PackingFlowError` for a malformed string (not a string, longer than
    :data:`protocol.MAX_PACKED_CHARS`, not 3 or 4 sections, a section that is not a
    bracketed list of unsigned decimal numbers or T/F, more than ``max_n`` packets,
    sequences of different lengths) and :class:`ContextFlowError` for a ``ctx`` that
    breaks the host-context definition (not six counts, a count over 1000). The
    packets' own rules (:func:`multa_broker.flow.validate`) are the caller's.
    """
    sizes, dirs, iats, ctx = _unpack(text, max_n)
    return sizes, dirs, iats, _packed_ctx(ctx)


def flow_from_packed(rec: Any, max_n: int = MAX_N, version: int = PACKED_FLOW_VERSION,
                     seqs: Any = None) -> Flow:
    """One ``Multa::PackedFlow`` record (Broker JSON :class:`wire.Value` or a typed
    :data:`wire.PackedFlowsWire` record) as a validated Flow; FlowError says what is wrong
    (PackingFlowError for the packed string, ContextFlowError for its host context)."""
    typed = rec.__class__ in _TYPED_PACKED
    if typed:
        fields = rec.data
        uid = fields[0].data
    else:
        fields = _field(rec, "vector", "flow")
        if fields.__class__ is not list or len(fields) != _N_PACKED_FIELDS:
            n = len(fields) if fields.__class__ is list else "no"
            raise FlowError(f"packed flow record has {n} fields, expected {_N_PACKED_FIELDS}")
        uid = _field(fields[0], "string", "uid")
    if uid.__class__ is not str or not uid:
        raise FlowError("field uid must be a non-empty string")
    try:
        if version not in PACKED_FLOW_VERSIONS:
            raise PackingFlowError(f"packed encoding version {version}; this bridge reads "
                                   f"{', '.join(map(str, sorted(PACKED_FLOW_VERSIONS)))}")
        key = _flow_key(fields, typed)
        # seqs: this record's packed string already unpacked and checked by _batch_unpack.
        sizes, dirs, iats, ctx = seqs or _unpack(fields[6].data if typed else _field(fields[6], "string", "packed"),
                                                 max_n)
        flow = Flow(key, sizes, dirs, iats, uid)
        _validate(flow, max_n)
        # After the packets, as for typed records: a record bad in both is counted as invalid.
        flow.ctx = _packed_ctx(ctx)
    except ContextFlowError as e:
        raise ContextFlowError(f"flow {uid}: {e}"[:300]) from None
    except FlowError as e:
        raise e.__class__(f"flow {uid}: {e}"[:300]) from None
    return flow


if wire.msgspec is not None:
    _ROWS = wire.msgspec.json.Decoder(list[tuple[list[Annotated[int, wire.msgspec.Meta(ge=0)]], list[bool],
                                                 list[Annotated[int, wire.msgspec.Meta(ge=0)]],
                                                 list[Annotated[int, wire.msgspec.Meta(ge=0)]]]])
else:  # pragma: no cover
    _ROWS = None


def _batch_unpack(texts: list[Any], max_n: int) -> list[Any] | None:
    """Every packed string of a message unpacked in one msgspec call: one JSON document
    ``[[sizes,dirs,iats,ctx],...]`` made with C-level string operations. Per string, the
    sequences and ctx numbers where they pass :func:`_unpack`'s checks, else None (that
    record then goes through :func:`_unpack`, which says what is wrong). None for the whole
    message where the document does not parse: then every record goes through _unpack."""
    if _ROWS is None:
        return None
    try:
        has_ctx = [t.count("|") == 3 for t in texts]
        doc = "[[" + "],[".join([t if c else t + "|[]" for t, c in zip(texts, has_ctx)]) + "]]"
        if len(doc) > (MAX_PACKED_CHARS + 8) * len(texts) or doc.upper() != doc:
            return None  # too long, or lower-case letters ("true"): not Zeek's rendering
        rows = _ROWS.decode(doc.replace("|", ",").replace("T", "true").replace("F", "false"))
    except (_MSGSPEC_ERRORS + (AttributeError, TypeError)):
        return None
    if len(rows) != len(texts):
        return None
    out: list[Any] = []
    for t, c, (sizes, dirs, iats, ctx) in zip(texts, has_ctx, rows):
        n = len(sizes)
        if (n and n <= max_n and n == len(dirs) == len(iats) and len(t) <= MAX_PACKED_CHARS
                and max(iats) <= _MAX_COUNT and (len(ctx) == _N_CTX if c else True)):
            out.append((sizes, dirs, iats, ctx if c else None))
        else:
            out.append(None)
    return out


def _packed_flows(node: str, version: Any, records: Any, max_n: int, texts: list[Any] | None = None) -> FlowsMessage:
    """``texts``: the records' packed strings, where the parser already knows them (typed records)."""
    msg = FlowsMessage(node, encoding="packed",
                       packed_results=version in PACKED_FLOW_VERSIONS and version >= PACKED_RESULTS_SINCE)
    msg.versions[2] = len(records)  # the contents of contract version 2 (ctx optional)
    unpacked = _batch_unpack(texts, max_n) if texts else None
    if unpacked:
        # Each record with its packed string already unpacked (None: _unpack says what is wrong).
        return decode_each(msg, lambda pair: flow_from_packed(pair[0], max_n, version, pair[1]),
                           zip(records, unpacked), "packed flow record")
    return decode_each(msg, lambda rec: flow_from_packed(rec, max_n, version), records, "packed flow record")


def packed_flows_from_json(args: Any, max_n: int = MAX_N) -> FlowsMessage:
    """The arguments of ``Multa::packed_flows`` as Broker JSON Values (``[node, version, [flow, ...]]``)."""
    if args.__class__ is not list or len(args) != 3:
        raise codec.CodecError(f"{PACKED_FLOWS_EVENT} needs 3 arguments (node, version, flows)")
    node, version, flows = args
    if node.__class__ is not wire.Value or node.t != "string" or node.data.__class__ is not str:
        raise codec.CodecError(f"{PACKED_FLOWS_EVENT}: argument node must be a string")
    if (version.__class__ is not wire.Value or version.t != "count" or version.data.__class__ is not int
            or version.data < 0):
        raise codec.CodecError(f"{PACKED_FLOWS_EVENT}: argument version must be a count")
    if flows.__class__ is not wire.Value or flows.t != "vector" or flows.data.__class__ is not list:
        raise codec.CodecError(f"{PACKED_FLOWS_EVENT}: argument flows must be a vector")
    return _packed_flows(node.data, version.data, flows.data, max_n)


def packed_flows_from_wire(m: Any, max_n: int = MAX_N) -> FlowsMessage:
    """The flows of a :data:`wire.PackedFlowsWire` message (msgspec checked its Broker tags)."""
    node, version, flows = m.data[2].data[1].data
    records = flows.data
    return _packed_flows(node.data, version.data, records, max_n, [r.data[6].data for r in records])


def flows_parser(name: str) -> Any:
    """The parser of a flows event's generic (Value) arguments by event name, typed
    (:func:`events.flows_from_json`) or packed; None for other events."""
    return {FLOWS_EVENT: events.flows_from_json, PACKED_FLOWS_EVENT: packed_flows_from_json}.get(name)
