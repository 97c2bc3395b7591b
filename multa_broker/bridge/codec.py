"""Broker's WebSocket JSON data model (JSON API v1): every Broker value <-> Python.

Each value on the wire is ``{"@data-type": T, "data": D}`` (Broker's
doc/web-socket.rst). This module maps them to Python values that keep the
type, so a decoded value re-encodes to the same Broker type:

=============  ==========================================  ===========================
Broker type    Python value                                JSON ``data``
=============  ==========================================  ===========================
none           ``None``                                    ``{}``
boolean        ``bool``                                    ``true`` / ``false``
count          :class:`Count` (an ``int``, 0..2**64-1)     unsigned JSON integer
integer        ``int``                                     JSON integer
real           ``float`` (finite)                          JSON number (``1.0``, never ``1``)
string         ``str``                                     JSON string
enum-value     :class:`EnumValue` (a ``str``)              JSON string
address        ``ipaddress.IPv4Address``/``IPv6Address``    ``"10.0.0.1"``
subnet         ``ipaddress.IPv4Network``/``IPv6Network``    ``"10.0.0.0/8"``
port           :class:`multa_broker.protocol.Port`         ``"80/tcp"`` (``?`` = unknown)
timestamp      aware ``datetime`` (UTC)                    ``"2022-04-10T07:00:00.000"``
timespan       ``datetime.timedelta``                      ``"1500ms"``
vector         ``tuple`` (``list`` also encodes)           JSON array of values
set            ``frozenset`` (``set`` also encodes)        JSON array of values
table          ``dict``                                    array of ``{"key":..,"value":..}``
=============  ==========================================  ===========================

Vectors decode as tuples (as Broker's own Python bindings return them) so they
can be set members and table keys.

Why our own codec rather than ``zeekclient.brokertypes`` (PyPI zeek-client 1.5.0,
the maintained one): measured on this machine on one ``Multa::flows`` event of
200 flows x 20 packets, it took 95 us per flow to turn parsed JSON into values
(every value becomes an object), against 41 us for :func:`decode` here and
13 us for the bridge's hot path (msgspec parse + :mod:`.events`, which do
not use this module). And it is wrong for two things Broker writes: it cannot
parse the ``us`` timespan suffix Broker itself writes (``"1500us"`` raises),
and it returns Broker's zone-less UTC timestamps as naive datetimes, which
Python then reads as local time.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import math
import re
from typing import Any

from multa_broker.protocol import Port

UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)
_MAX_COUNT = 2**64 - 1
_MIN_INT, _MAX_INT = -(2**63), 2**63 - 1
#: Broker writes ``?`` for a port of unknown protocol; Zeek and protocol.Port say "unknown".
_PORT_PROTOS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "?": "unknown", "unknown": "unknown"}
_PORT_RE = re.compile(r"(\d{1,5})/(tcp|udp|icmp|\?|unknown)")
_SPAN_RE = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|ms|s|min|h|d)")
_SPAN_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "min": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}


class CodecError(ValueError):
    """A value that is not valid Broker JSON, or a Python value with no Broker type."""


class Count(int):
    """A Broker ``count``: an unsigned 64-bit integer (a plain ``int`` is an ``integer``)."""

    __slots__ = ()

    def __new__(cls, value: int = 0) -> "Count":
        v = int.__new__(cls, value)
        if not 0 <= v <= _MAX_COUNT:
            raise CodecError(f"count {int(value)} outside 0..2**64-1")
        return v

    def __repr__(self) -> str:
        return f"Count({int(self)})"


class EnumValue(str):
    """A Broker ``enum-value`` (an enum's name, e.g. ``"Notice::ACTION_LOG"``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"EnumValue({str(self)!r})"


# ---------------------------------------------------------------- encoding


def timestamp_text(ts: _dt.datetime | float) -> str:
    """ISO 8601 in UTC at millisecond resolution, without zone: Broker's own format."""
    if isinstance(ts, _dt.datetime):
        if ts.tzinfo is None:
            raise CodecError("naive datetime: a Broker timestamp needs a timezone (use UTC)")
        ts = ts.astimezone(UTC)
    else:
        if not math.isfinite(ts):
            raise CodecError(f"timestamp {ts} is not finite")
        ts = _EPOCH + _dt.timedelta(seconds=ts)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def timespan_text(span: _dt.timedelta) -> str:
    """Integer plus the coarsest exact unit (ns/us/ms/s), as Broker renders timespans."""
    us = (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds
    if us == 0:
        return "0s"
    if us % 1_000:
        return f"{us}us"
    if us % 1_000_000:
        return f"{us // 1_000}ms"
    return f"{us // 1_000_000}s"


def encode(value: Any) -> dict[str, Any]:
    """The Broker JSON object for ``value`` (see the module table); CodecError if it has none."""
    # Order matters: bool and Count are ints, EnumValue is a str, Port is a tuple.
    if value is None:
        return {"@data-type": "none", "data": {}}
    if isinstance(value, bool):
        return {"@data-type": "boolean", "data": value}
    if isinstance(value, Count):
        return {"@data-type": "count", "data": int(value)}
    if isinstance(value, int):
        if not _MIN_INT <= value <= _MAX_INT:
            raise CodecError(f"integer {value} outside the signed 64-bit range")
        return {"@data-type": "integer", "data": int(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CodecError(f"real {value} is not finite (JSON has no NaN or infinity)")
        return {"@data-type": "real", "data": value}
    if isinstance(value, EnumValue):
        return {"@data-type": "enum-value", "data": str(value)}
    if isinstance(value, str):
        return {"@data-type": "string", "data": value}
    if isinstance(value, Port):
        proto = "?" if value.proto == "unknown" else value.proto
        if proto not in _PORT_PROTOS or not 0 <= value.number <= 65535:
            raise CodecError(f"bad port {value.number}/{value.proto}")
        return {"@data-type": "port", "data": f"{value.number}/{proto}"}
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return {"@data-type": "address", "data": str(value)}
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return {"@data-type": "subnet", "data": str(value)}
    if isinstance(value, _dt.datetime):
        return {"@data-type": "timestamp", "data": timestamp_text(value)}
    if isinstance(value, _dt.timedelta):
        return {"@data-type": "timespan", "data": timespan_text(value)}
    if isinstance(value, (list, tuple)):
        return {"@data-type": "vector", "data": [encode(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"@data-type": "set", "data": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"@data-type": "table",
                "data": [{"key": encode(k), "value": encode(v)} for k, v in value.items()]}
    raise CodecError(f"no Broker type for Python {type(value).__name__}")


# ---------------------------------------------------------------- decoding


def parse_timestamp(text: str) -> _dt.datetime:
    """Broker's ISO 8601 timestamp; a string without a zone is UTC (as Broker reads it)."""
    try:
        ts = _dt.datetime.fromisoformat(text)
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except (TypeError, ValueError, OverflowError):
        # OverflowError: a zone offset that moves the time outside years 1..9999.
        raise CodecError(f"bad timestamp {text!r}"[:120]) from None


def parse_timespan(text: str) -> _dt.timedelta:
    m = _SPAN_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise CodecError(f"bad timespan {text!r}")
    number, unit = m.groups()
    if "." in number:  # Broker writes integers; accept a fraction anyway
        return _dt.timedelta(microseconds=float(number) * _SPAN_NS[unit] / 1_000)
    ns = int(number) * _SPAN_NS[unit]
    # timedelta holds microseconds: nanoseconds below that are rounded away.
    return _dt.timedelta(microseconds=ns // 1_000 if ns % 1_000 == 0 else ns / 1_000)


def parse_port(text: str) -> Port:
    m = _PORT_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None or int(m.group(1)) > 65535:
        raise CodecError(f"bad port {text!r}")
    return Port(int(m.group(1)), _PORT_PROTOS[m.group(2)])


def _need(ok: bool, dtype: str, data: Any) -> None:
    if not ok:
        raise CodecError(f"bad {dtype} data {data!r}"[:200])


def decode(obj: Any) -> Any:
    """The Python value of one Broker JSON object; CodecError names what is wrong."""
    if not isinstance(obj, dict) or "@data-type" not in obj or "data" not in obj:
        raise CodecError(f"not a Broker value (need @data-type and data): {obj!r}"[:200])
    dtype, data = obj["@data-type"], obj["data"]
    if dtype == "count":
        # JSON 1.0 parses as float and true as bool: both are errors for Broker.
        _need(type(data) is int and 0 <= data <= _MAX_COUNT, dtype, data)
        return Count(data)
    if dtype == "integer":
        _need(type(data) is int and _MIN_INT <= data <= _MAX_INT, dtype, data)
        return data
    if dtype == "real":
        _need(type(data) in (float, int), dtype, data)
        return float(data)
    if dtype == "boolean":
        _need(type(data) is bool, dtype, data)
        return data
    if dtype == "string":
        _need(type(data) is str, dtype, data)
        return data
    if dtype == "vector":
        _need(type(data) is list, dtype, data)
        return tuple(decode(v) for v in data)
    if dtype == "address":
        try:
            return ipaddress.ip_address(data)
        except ValueError:
            raise CodecError(f"bad address {data!r}") from None
    if dtype == "port":
        return parse_port(data)
    if dtype == "timestamp":
        _need(type(data) is str, dtype, data)
        return parse_timestamp(data)
    if dtype == "timespan":
        return parse_timespan(data)
    if dtype == "none":
        _need(data == {} or data is None, dtype, data)
        return None
    if dtype == "enum-value":
        _need(type(data) is str, dtype, data)
        return EnumValue(data)
    if dtype == "subnet":
        try:
            return ipaddress.ip_network(data)
        except (TypeError, ValueError):
            raise CodecError(f"bad subnet {data!r}") from None
    if dtype == "set":
        _need(type(data) is list, dtype, data)
        try:
            return frozenset(decode(v) for v in data)
        except TypeError:
            raise CodecError("set member is not hashable (a table?)") from None
    if dtype == "table":
        _need(type(data) is list, dtype, data)
        out: dict[Any, Any] = {}
        for kv in data:
            _need(isinstance(kv, dict) and "key" in kv and "value" in kv, dtype, kv)
            try:
                out[decode(kv["key"])] = decode(kv["value"])
            except TypeError:
                raise CodecError("table key is not hashable (a table?)") from None
        return out
    raise CodecError(f"unknown @data-type {dtype!r}")


# ---------------------------------------------------------------- Zeek events

#: Zeek's event envelope: ``vector(count 1 (format version), count 1 (type: event), vector(name, args...))``.
EVENT_VERSION = 1
EVENT_TYPE = 1


def event_data(name: str, args: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """The Broker JSON value of Zeek event ``name(args...)`` with args already Broker JSON."""
    return {
        "@data-type": "vector",
        "data": [
            {"@data-type": "count", "data": EVENT_VERSION},
            {"@data-type": "count", "data": EVENT_TYPE},
            {"@data-type": "vector", "data": [
                {"@data-type": "string", "data": name},
                {"@data-type": "vector", "data": list(args)},
            ]},
        ],
    }
