"""A stand-in for Zeek's WebSocket API, for tests and ``multa bench bridge``.

It speaks Broker's JSON protocol v1 as Zeek 8.0 does (checked on Zeek 8.0.10; Broker
doc/web-socket.rst): a client's first message is a JSON array of topic
prefixes; the server answers ``{"type":"ack","endpoint":"<uuid>-websocket-0",
"version":...}``; afterwards both sides send ``data-message``\\ s, and the
server sends ``error`` for input it cannot parse. Events go to every client
whose subscriptions prefix-match the topic.

What clients publish is checked like Zeek would: a ``Multa::results`` event
whose arguments are not exactly ``vector of Multa::Result`` (string, string,
vector of string, vector of string, vector of real) is not delivered -- it is
counted in :attr:`FakeZeek.rejected`, as Zeek would log a conversion error --
so a test catches e.g. a score sent as a count. Like Zeek 8.0.10
(src/cluster/websocket/WebSocket.cc), the client then gets
``{"type":"error","code":"deserialization_failed","context":"failed to create Zeek event"}``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import ipaddress
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import msgspec

from multa_broker.bridge import codec, wire
from multa_broker.flow import Flow
from multa_broker.protocol import (FLOW_CONTRACT_VERSION, FLOWS_EVENT, PACKED_FLOW_VERSION, PACKED_FLOWS_EVENT,
                                   PACKED_RESULT_VERSION, PACKED_RESULTS_EVENT, RESULTS_EVENT, Port, Result,
                                   pack_sequences)

#: How the fake Zeek sends flows: ``Multa::flows`` or ``Multa::packed_flows`` (Multa::flow_encoding).
ENCODINGS = ("typed", "packed")

ZEEK_VERSION = "8.0.10"
WS_PATH = "/v1/messages/json"


# ------------------------------------------------------------ Multa::flows as Zeek sends it


def flow_values(flow: Flow, version: int = FLOW_CONTRACT_VERSION) -> tuple[Any, ...]:
    """A Flow as the ``Multa::Flow`` record in :mod:`codec` Python values (what Zeek sends).

    ``version`` 2 (the current contract) ends with ``ctx``: a vector of count, or None
    (Broker ``none``) where the flow has no host context; ``version`` 1 is what an
    older Zeek package sends, the first nine fields.
    """
    k = flow.key
    rec: tuple[Any, ...] = (
        flow.uid or "",
        ipaddress.ip_address(k.orig_h), Port(k.orig_p, k.proto),
        ipaddress.ip_address(k.resp_h), Port(k.resp_p, k.proto),
        _dt.datetime.fromtimestamp(k.ts, _dt.timezone.utc),
        tuple(codec.Count(s) for s in flow.sizes),
        tuple(bool(d) for d in flow.dirs),
        tuple(codec.Count(i) for i in flow.iats),
    )
    if version == 1:
        return rec
    if version != 2:
        raise ValueError(f"unknown flow contract version {version}")
    return rec + (None if flow.ctx is None else tuple(codec.Count(c) for c in flow.ctx),)


def packed_flow_values(flow: Flow) -> tuple[Any, ...]:
    """A Flow as the ``Multa::PackedFlow`` record in :mod:`codec` Python values."""
    return flow_values(flow, 1)[:6] + (pack_sequences(flow.sizes, flow.dirs, flow.iats, flow.ctx),)


def flow_record_json(flow: Flow, version: int = FLOW_CONTRACT_VERSION, encoding: str = "typed") -> dict[str, Any]:
    """A Flow as Zeek puts it on the wire: a Broker JSON vector of its fields
    (``encoding`` "packed": a ``Multa::PackedFlow``)."""
    if encoding == "packed":
        return codec.encode(packed_flow_values(flow))
    if encoding != "typed":
        raise ValueError(f"unknown flow encoding {encoding!r}")
    return codec.encode(flow_values(flow, version))


def flows_event_values(node: str, flows: Sequence[Flow], version: int = FLOW_CONTRACT_VERSION) -> list[Any]:
    """``Multa::flows`` arguments as codec values (what Zeek sends)."""
    return [node, tuple(flow_values(f, version) for f in flows)]


def packed_flows_event_values(node: str, flows: Sequence[Flow], version: int = PACKED_FLOW_VERSION) -> list[Any]:
    """``Multa::packed_flows`` arguments as codec values (what Zeek sends)."""
    return [node, codec.Count(version), tuple(packed_flow_values(f) for f in flows)]


@dataclass
class Received:
    """One ``Multa::results`` event a client sent."""

    topic: str
    results: list[Result]
    t: float = field(default_factory=time.monotonic)
    #: ``Multa::results`` or ``Multa::packed_results``.
    event: str = RESULTS_EVENT


class _PackedResult(msgspec.Struct):
    """One object of ``Multa::packed_results``' JSON as Zeek's ``from_json`` reads it into a
    ``Multa::Result``: every field required, numbers accepted for the scores, other keys ignored."""

    uid: str
    model: str
    tasks: list[str]
    labels: list[str]
    scores: list[float]


_PACKED_RESULTS = msgspec.json.Decoder(list[_PackedResult])


def _check_packed_results(args: list[Any]) -> list[Result]:
    if (len(args) != 2 or args[0].t != "count" or args[1].t != "string"
            or args[0].data != PACKED_RESULT_VERSION):
        raise codec.CodecError(f"{PACKED_RESULTS_EVENT} takes (count {PACKED_RESULT_VERSION}, string)")
    try:
        recs = _PACKED_RESULTS.decode(args[1].data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise codec.CodecError(f"{PACKED_RESULTS_EVENT}: from_json would fail: {e}") from None
    return [Result(r.uid, r.model, tuple(r.tasks), tuple(r.labels), tuple(r.scores)) for r in recs]


def _check_results(t: str, data: Any) -> tuple[str, list[Result]]:
    """The event name and Results of a data-message value, checked for Zeek's exact types;
    CodecError if not."""
    name, args = wire.split_event(t, data)
    if name == PACKED_RESULTS_EVENT:
        return name, _check_packed_results(args)
    if name != RESULTS_EVENT:
        raise codec.CodecError(f"unknown event {name!r}")
    if len(args) != 1 or args[0].t != "vector":
        raise codec.CodecError(f"{RESULTS_EVENT} takes one vector argument")
    out = []
    for rec in args[0].data:
        if rec.t != "vector" or len(rec.data) != 5:
            raise codec.CodecError("a Result must be a vector of 5 fields")
        uid, model, tasks, labels, scores = rec.data
        if uid.t != "string" or model.t != "string":
            raise codec.CodecError("Result.uid and Result.model must be strings")
        seqs = []
        for v, dtype, py in ((tasks, "string", str), (labels, "string", str), (scores, "real", float)):
            if v.t != "vector" or any(e.t != dtype or type(e.data) is not py for e in v.data):
                raise codec.CodecError(f"a Result field must be a vector of {dtype}")
            seqs.append(tuple(e.data for e in v.data))
        out.append(Result(uid.data, model.data, *seqs))
    return name, out


class FlowTemplates:
    """Makes ``Multa::flows`` messages fast: each flow's JSON is built once, uids are fresh.

    The load generator must out-run the bridge on the same two cores, so it only
    splices a new uid into pre-rendered text per flow.
    """

    def __init__(self, flows: Sequence[Flow], uid_prefix: str = "C", version: int = FLOW_CONTRACT_VERSION,
                 encoding: str = "typed") -> None:
        self._tails = []
        self.encoding = encoding
        for f in flows:
            rec = json.dumps(flow_record_json(f, version, encoding), separators=(",", ":"))
            # Split off the uid field: '{"@data-type":"vector","data":[{uid},' + tail
            head = '{"@data-type":"vector","data":[' + json.dumps(codec.encode(f.uid or "x"), separators=(",", ":")) + ","
            assert rec.startswith(head)
            self._tails.append(rec[len(head):])
        self._next = itertools.cycle(range(len(self._tails)))
        self._counter = itertools.count()
        self.prefix = uid_prefix

    def message(self, topic: str, node: str, count: int) -> tuple[str, list[str]]:
        """A data-message with ``count`` flows; returns (text, their uids)."""
        uids = [f"{self.prefix}{next(self._counter):x}" for _ in range(count)]
        recs = ",".join('{"@data-type":"vector","data":[{"@data-type":"string","data":"' + u + '"},'
                        + self._tails[next(self._next)] for u in uids)
        return flows_message_text(topic, node, recs, self.encoding), uids


def flows_message_text(topic: str, node: str, records_json: str, encoding: str = "typed",
                       packed_version: int = PACKED_FLOW_VERSION) -> str:
    """A data-message carrying ``Multa::flows(node, [records])`` (``encoding`` "packed":
    ``Multa::packed_flows(node, packed_version, [records])``); records already JSON text."""
    if encoding == "packed":
        name, version = PACKED_FLOWS_EVENT, '{"@data-type":"count","data":%d},' % packed_version
    else:
        name, version = FLOWS_EVENT, ""
    return ('{"type":"data-message","topic":' + json.dumps(topic) + ',"@data-type":"vector","data":['
            '{"@data-type":"count","data":1},{"@data-type":"count","data":1},'
            '{"@data-type":"vector","data":[{"@data-type":"string","data":' + json.dumps(name) + "},"
            '{"@data-type":"vector","data":[{"@data-type":"string","data":' + json.dumps(node) + "},"
            + version + '{"@data-type":"vector","data":[' + records_json + "]}]}]}]}")


def flows_message(topic: str, node: str, flows: Sequence[Flow], version: int = FLOW_CONTRACT_VERSION,
                  encoding: str = "typed", packed_version: int = PACKED_FLOW_VERSION) -> str:
    """A data-message carrying ``Multa::flows(node, flows)`` exactly as Zeek writes it
    (``version`` 1: as an older Zeek package writes it, without ``ctx``; ``encoding``
    "packed": ``Multa::packed_flows`` as the package writes it by default)."""
    recs = ",".join(json.dumps(flow_record_json(f, version, encoding), separators=(",", ":")) for f in flows)
    return flows_message_text(topic, node, recs, encoding, packed_version)


class FakeZeek:
    """An in-process Broker WebSocket server (JSON v1) playing Zeek's side."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 on_results: Callable[[Received], None] | None = None, keep: bool = True,
                 ssl: Any = None, rcvbuf: int | None = None) -> None:
        self.host, self.port = host, port
        self.rcvbuf = rcvbuf  # SO_RCVBUF for accepted connections (small: a stalled reader fills up fast)
        self._stalled: set[Any] = set()
        self.ssl = ssl  # an ssl.SSLContext: serve wss://
        self.endpoint = f"{uuid.uuid4()}-websocket-0"
        self.received: list[Received] = []
        self.rejected: list[str] = []
        self.errors_sent = 0
        #: Bytes of results messages received, and the results in them (bytes per result).
        self.result_bytes = 0
        self.results_in = 0
        self.handshakes: list[list[str]] = []
        self.on_results = on_results
        self.keep = keep
        self._clients: dict[Any, list[str]] = {}
        self._server: Any = None
        self._subscribed = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl else 'ws'}://{self.host}:{self.port}{WS_PATH}"

    async def start(self) -> "FakeZeek":
        from websockets.asyncio.server import serve

        self._server = await serve(self._serve, self.host, self.port, compression=None,
                                   max_size=None, max_queue=64, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.rcvbuf:
            import socket

            for sock in self._server.sockets:  # accepted sockets inherit it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        return self

    def stop_reading(self) -> int:
        """Stop reading from every client connected now, as a Zeek that hangs would:
        nothing more is read off their sockets (pings unanswered, their send buffers
        fill up). Later connections are served normally. Returns how many stalled."""
        n = 0
        for ws in list(self._clients):
            ws.transport.pause_reading()
            self._stalled.add(ws)
            n += 1
        return n

    async def stop(self) -> None:
        """Go away like a Zeek that exits: close every connection and the listener."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._clients.clear()
        self._subscribed.clear()

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def _serve(self, ws: Any) -> None:
        if ws.request is not None and ws.request.path != WS_PATH:
            await ws.close(1008, f"unknown path {ws.request.path}")
            return
        try:
            first = await ws.recv()
            topics = json.loads(first)
            if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
                raise ValueError("subscriptions must be a JSON array of strings")
        except (ValueError, TypeError) as e:
            await ws.send(json.dumps({"type": "error", "code": "deserialization_failed", "context": str(e)}))
            await ws.close()
            return
        except Exception:
            return
        await ws.send(json.dumps({"type": "ack", "endpoint": self.endpoint, "version": ZEEK_VERSION}))
        self.handshakes.append(topics)
        self._clients[ws] = topics
        self._subscribed.set()
        try:
            async for text in ws:
                if ws in self._stalled:
                    await asyncio.Event().wait()  # read no more, answer nothing
                await self._incoming(ws, text)
        except Exception:
            pass
        finally:
            self._clients.pop(ws, None)

    async def _incoming(self, ws: Any, text: str | bytes) -> None:
        try:
            msg = wire.decode_message(text)
            if msg.type != "data-message":
                raise wire.MessageError(f"unexpected message type {msg.type!r}")
        except wire.MessageError:
            self.errors_sent += 1
            await ws.send(json.dumps({"type": "error", "code": "deserialization_failed",
                                      "context": "failed to decode JSON object"}))
            return
        try:
            name, results = _check_results(msg.t, msg.data)
        except (codec.CodecError, AttributeError, TypeError, ValueError) as e:
            self.rejected.append(f"{msg.topic}: {e}")
            self.errors_sent += 1
            await ws.send(json.dumps({"type": "error", "code": "deserialization_failed",
                                      "context": "failed to create Zeek event"}))
            return
        self.result_bytes += len(text)
        self.results_in += len(results)
        rec = Received(msg.topic, results, event=name)
        if self.keep:
            self.received.append(rec)
        if self.on_results is not None:
            self.on_results(rec)

    async def send_text(self, topic: str, text: str) -> int:
        """Send a ready data-message to every client subscribed to a prefix of ``topic``."""
        n = 0
        for ws, subs in list(self._clients.items()):
            if any(topic.startswith(s) for s in subs):
                try:
                    await ws.send(text)
                    n += 1
                except Exception:
                    self._clients.pop(ws, None)
        return n

    async def send_raw(self, text: str) -> None:
        """Send any text to every client (for malformed-message tests)."""
        for ws in list(self._clients):
            await ws.send(text)

    async def send_flows(self, flows: Sequence[Flow], node: str = "worker-1", topic: str = "multa/flows",
                         version: int = FLOW_CONTRACT_VERSION, encoding: str = "typed",
                         packed_version: int = PACKED_FLOW_VERSION) -> int:
        return await self.send_text(topic, flows_message(topic, node, flows, version, encoding, packed_version))

    def results(self) -> list[Result]:
        return [r for rec in self.received for r in rec.results]
