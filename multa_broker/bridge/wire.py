"""Reading Broker WebSocket messages (JSON API v1) fast.

A message is one of (Broker doc/web-socket.rst):

* ``{"type":"ack","endpoint":E,"version":V}`` -- the handshake reply;
* ``{"type":"data-message","topic":T,"@data-type":..,"data":..}`` -- a published value;
* ``{"type":"error","code":C,"context":X}`` -- the server dropped something we sent.

Parsing 20,000 flows/s of Broker JSON (about 2.8 KB per 20-packet flow) with
``json.loads`` costs a whole core: every element becomes a two-key dict. With
msgspec decoding straight into :class:`Value` structs the same text parses
about 5x faster (numbers in docs/bridge.md), so msgspec is used when it is
installed; otherwise ``json`` with an object hook builds the same shapes, so
the rest of the bridge never knows which one ran.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from typing import Any, Union

from multa_broker.bridge import codec
from multa_broker.bridge.codec import EVENT_TYPE, EVENT_VERSION, CodecError
from multa_broker.protocol import Port

log = logging.getLogger("multa.bridge.wire")

try:
    import msgspec
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    msgspec = None


class MessageError(ValueError):
    """A WebSocket message that is not valid Broker JSON."""


class TooDeep(MessageError):
    """A message nested deeper than :data:`MAX_DEPTH` (refused before it is parsed)."""


#: Deepest nesting of JSON arrays and objects a message may have. A ``Multa::flows``
#: message is 13 deep (docs/protocol.md); parsers recurse once per level, and about
#: 500 levels (a 17 KB message) exhaust Python's recursion limit.
MAX_DEPTH = 64

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_depth(text: str | bytes, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`TooDeep` if ``text`` nests arrays/objects more than ``limit`` deep.

    Done in C-speed passes without recursion (about 3 ms for a 650 KB message,
    against 10-50 ms to parse it; the typed fast path skips it): keep only the
    brackets, then strip innermost pairs once per level. Brackets inside JSON
    strings count too, which can only make a message look unbalanced (then the
    parser decides) or, for a string of 64 nested pairs, too deep. Unbalanced
    brackets are left for the parser to reject; RecursionError from a parser is
    caught as well.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    b = raw.translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        if not b:
            return
        shorter = b.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(b):
            return  # unbalanced: not our concern, the parser says what is wrong
        b = shorter
    if b.replace(b"[]", b"").replace(b"{}", b"") != b:
        raise TooDeep(f"message nests arrays/objects more than {limit} deep")


if msgspec is not None:

    class Value(msgspec.Struct, gc=False):
        """One Broker JSON value; ``key``/``value`` are set only for a table entry."""

        t: str = msgspec.field(name="@data-type", default="")
        data: Union[int, float, bool, str, list["Value"], dict, None] = None
        key: Union["Value", None] = None
        value: Union["Value", None] = None

    class Message(msgspec.Struct, gc=False):
        """One WebSocket message; fields not used by its ``type`` keep their defaults."""

        type: str = ""
        topic: str = ""
        t: str = msgspec.field(name="@data-type", default="")
        data: Union[int, float, bool, str, list[Value], dict, None] = None
        code: str = ""
        context: str = ""
        endpoint: str = ""
        version: str = ""

    _decoder = msgspec.json.Decoder(Message)

    # --- The exact shape of a well-formed ``Multa::flows`` message -----------------
    # msgspec checks every "@data-type" tag and every value's JSON type in C while
    # parsing, so the Python walk over a flow shrinks to building lists. Anything
    # else (a bad flow, another event, Zeek adding metadata) fails this schema and
    # goes through the generic path above, which names what is wrong per flow.
    from typing import Annotated

    _U = Annotated[int, msgspec.Meta(ge=0)]

    def _tagged(tag: str, data_type: Any) -> Any:
        return msgspec.defstruct(f"_{tag.title().replace('-', '')}", [("data", data_type)],
                                 tag_field="@data-type", tag=tag, gc=False)

    _S = _tagged("string", str)
    _A = _tagged("address", str)
    _P = _tagged("port", str)
    _T = _tagged("timestamp", str)
    _C = _tagged("count", _U)
    _B = _tagged("boolean", bool)
    _VC = msgspec.defstruct("_VC", [("data", list[_C])], tag_field="@data-type", tag="vector", gc=False)
    _VB = msgspec.defstruct("_VB", [("data", list[_B])], tag_field="@data-type", tag="vector", gc=False)
    #: Broker's ``none``: an unset ``&optional`` field (``{"@data-type":"none","data":{}}``).
    _N = _tagged("none", dict)
    #: A flow record of contract version 1 (nine fields) and of version 2 (``ctx`` added:
    #: a vector of count, or none where the package computed no host context).
    _Rec = msgspec.defstruct("_Rec", [("data", tuple[_S, _A, _P, _A, _P, _T, _VC, _VB, _VC])],
                             tag_field="@data-type", tag="vector", gc=False)
    _Rec2 = msgspec.defstruct("_Rec2", [("data", tuple[_S, _A, _P, _A, _P, _T, _VC, _VB, _VC, Union[_VC, _N]])],
                              tag_field="@data-type", tag="vector", gc=False)

    def _flows_wire(rec: Any, suffix: str) -> Any:
        flows = msgspec.defstruct("_Flows" + suffix, [("data", list[rec])], tag_field="@data-type",
                                  tag="vector", gc=False)
        args = msgspec.defstruct("_Args" + suffix, [("data", tuple[_S, flows])], tag_field="@data-type",
                                 tag="vector", gc=False)
        body = msgspec.defstruct("_Body" + suffix, [("data", tuple[_S, args])], tag_field="@data-type",
                                 tag="vector", gc=False)
        return msgspec.defstruct("FlowsWire" + suffix, [("type", str), ("topic", str),
                                                        ("t", str, msgspec.field(name="@data-type")),
                                                        ("data", tuple[_C, _C, body])], gc=False)

    #: A data-message carrying one well-formed ``Multa::flows`` event, every record of
    #: contract version 2 (``FlowsWire``) or every one of version 1 (``FlowsWire1``).
    FlowsWire = _flows_wire(_Rec2, "")
    FlowsWire1 = _flows_wire(_Rec, "1")

    #: A ``Multa::PackedFlow`` record: six typed fields, then one string.
    _PRec = msgspec.defstruct("_PRec", [("data", tuple[_S, _A, _P, _A, _P, _T, _S])],
                              tag_field="@data-type", tag="vector", gc=False)
    _PFlows = msgspec.defstruct("_PFlows", [("data", list[_PRec])], tag_field="@data-type", tag="vector",
                                gc=False)
    _PArgs = msgspec.defstruct("_PArgs", [("data", tuple[_S, _C, _PFlows])], tag_field="@data-type",
                               tag="vector", gc=False)
    _PBody = msgspec.defstruct("_PBody", [("data", tuple[_S, _PArgs])], tag_field="@data-type", tag="vector",
                               gc=False)
    #: A data-message carrying one well-formed ``Multa::packed_flows(node, version, flows)``.
    PackedFlowsWire = msgspec.defstruct("PackedFlowsWire", [
        ("type", str), ("topic", str), ("t", str, msgspec.field(name="@data-type")),
        ("data", tuple[_C, _C, _PBody])], gc=False)

    _flows_decoder = msgspec.json.Decoder(FlowsWire)
    _flows_decoder_v1 = msgspec.json.Decoder(FlowsWire1)
    _packed_decoder = msgspec.json.Decoder(PackedFlowsWire)
    _SHAPE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)

    def decode_flows(text: str | bytes) -> "Any | None":
        """The message as :data:`PackedFlowsWire`, :data:`FlowsWire` (or :data:`FlowsWire1` from
        an older Zeek package) if it has exactly that shape, else None."""
        try:
            # The package's default encoding first; a typed message fails it at the
            # event's second argument, so this try is cheap.
            m = _packed_decoder.decode(text)
            name = "Multa::packed_flows"
        except _SHAPE_ERRORS:
            name = "Multa::flows"
            try:
                m = _flows_decoder.decode(text)
            except _SHAPE_ERRORS:
                # Deep nesting in a field the schema skips: the generic path refuses it.
                # A version 1 record fails at its ninth field's end, so this try is cheap.
                try:
                    m = _flows_decoder_v1.decode(text)
                except _SHAPE_ERRORS:
                    return None
        if (m.type != "data-message" or m.t != "vector" or m.data[0].data != 1 or m.data[1].data != 1
                or m.data[2].data[0].data != name):
            return None
        return m

    def _decode_fast(text: str | bytes) -> "Message":
        try:
            return _decoder.decode(text)
        except msgspec.DecodeError as e:
            raise MessageError(str(e)) from None

    DECODER = "msgspec"

else:

    class Value:  # type: ignore[no-redef]
        __slots__ = ("t", "data", "key", "value")

        def __init__(self, t: str = "", data: Any = None, key: Any = None, value: Any = None) -> None:
            self.t, self.data, self.key, self.value = t, data, key, value

    class Message:  # type: ignore[no-redef]
        __slots__ = ("type", "topic", "t", "data", "code", "context", "endpoint", "version")

        def __init__(self, **kw: Any) -> None:
            for k in self.__slots__:
                setattr(self, k, kw.get(k, None if k == "data" else ""))

    DECODER = "json"

    def decode_flows(text: str | bytes) -> None:  # type: ignore[misc]
        return None


def _hook(d: dict[str, Any]) -> Any:
    if "type" in d:
        m = Message(type=d["type"], topic=d.get("topic", ""), t=d.get("@data-type", ""),
                    data=d.get("data"), code=d.get("code", ""), context=d.get("context", ""),
                    endpoint=d.get("endpoint", ""), version=d.get("version", ""))
        return m
    if "@data-type" in d:
        return Value(t=d["@data-type"], data=d.get("data"))
    if "key" in d and "value" in d:
        return Value(key=d["key"], value=d["value"])
    return d


def _decode_json(text: str | bytes) -> Any:
    try:
        return json.loads(text, object_hook=_hook)
    except (ValueError, TypeError, KeyError) as e:
        raise MessageError(str(e)) from None
    except RecursionError:
        raise TooDeep("message nested too deeply to parse") from None


def decode_message(text: str | bytes, *, use_msgspec: bool = True) -> "Message":
    """Parse one WebSocket message; MessageError unless it is a JSON object with a type.

    The nesting depth is bounded first (:func:`check_depth`, :class:`TooDeep`):
    both parsers recurse per level, and a deep enough message would raise
    RecursionError anywhere.
    """
    check_depth(text)
    if use_msgspec and msgspec is not None:
        msg = _decode_fast(text)
    else:
        msg = _decode_json(text)
        if not isinstance(msg, Message):
            raise MessageError("message is not a JSON object with a \"type\"")
    if not msg.type:
        raise MessageError("message has no \"type\"")
    return msg


def to_plain(v: Any) -> Any:
    """A :class:`Value` tree as the plain dicts :func:`codec.decode` reads (slow; not the hot path)."""
    if isinstance(v, Value):
        if v.key is not None:
            return {"key": to_plain(v.key), "value": to_plain(v.value)}
        return {"@data-type": v.t, "data": to_plain(v.data)}
    if isinstance(v, list):
        return [to_plain(x) for x in v]
    return v


def from_codec(x: Any) -> Any:
    """A :mod:`codec` Python value as the :class:`Value` tree a parsed message holds.

    The native transport hands Zeek's values to the same decoder as the
    WebSocket transport this way. Timestamps keep their microseconds (ISO 8601
    with zone), which :func:`codec.parse_timestamp` reads back exactly.
    """
    if isinstance(x, _dt.datetime):
        if x.tzinfo is None:
            raise CodecError("naive datetime: a Broker timestamp needs a timezone (use UTC)")
        return Value(t="timestamp", data=x.isoformat())
    if isinstance(x, (list, tuple)) and not isinstance(x, Port):
        return Value(t="vector", data=[from_codec(v) for v in x])
    if isinstance(x, (set, frozenset)):
        return Value(t="set", data=[from_codec(v) for v in x])
    if isinstance(x, dict):
        return Value(t="table", data=[Value(key=from_codec(k), value=from_codec(v)) for k, v in x.items()])
    obj = codec.encode(x)
    return Value(t=obj["@data-type"], data=obj["data"])


def split_event(t: str, data: Any) -> tuple[str, list[Any]]:
    """``(name, args)`` of a Zeek event carried as a data-message's value (args stay Values).

    The envelope is ``vector(count 1, count 1, vector(name, vector(args...)[, metadata]))``;
    Zeek 8 may add the metadata element, which is ignored.
    """
    try:
        if t != "vector" or type(data) is not list or len(data) != 3:
            raise CodecError("not a Zeek event (need a vector [1, 1, [name, args]])")
        ver, typ, body = data
        if ver.t != "count" or ver.data != EVENT_VERSION or typ.t != "count" or typ.data != EVENT_TYPE:
            raise CodecError("not a Zeek event (envelope must start with count 1, count 1)")
        if body.t != "vector" or type(body.data) is not list or len(body.data) < 2:
            raise CodecError("Zeek event body is not [name, args]")
        name, args = body.data[0], body.data[1]
        if name.t != "string" or type(name.data) is not str:
            raise CodecError("Zeek event name is not a string")
        if args.t != "vector" or type(args.data) is not list:
            raise CodecError("Zeek event arguments are not a vector")
        return name.data, args.data
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
        if isinstance(e, CodecError):
            raise
        raise CodecError("not a Zeek event") from None
