"""Transport over Zeek's WebSocket API: Broker's JSON protocol v1 (docs/protocol.md).

Handshake: the client sends a JSON array of topic prefixes; Zeek answers
``{"type":"ack","endpoint":...,"version":...}``. After that Zeek sends
``data-message`` (events on subscribed topics) and ``error`` messages, and the
client sends ``data-message``\\ s.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Sequence

from multa_broker.bridge import events, packed, wire
from multa_broker.bridge.codec import CodecError
from multa_broker.bridge.config import WebSocketConfig
from multa_broker.bridge.transport import Inbound, Route, Transport, TransportClosed
from multa_broker.protocol import FLOWS_EVENT, PACKED_FLOWS_EVENT, Result


def ssl_context(cfg: WebSocketConfig) -> ssl.SSLContext | None:
    """The client TLS context for a wss:// URL (None for ws://)."""
    if not cfg.url.startswith("wss://"):
        return None
    ctx = ssl.create_default_context(cafile=cfg.ca_file)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


#: WebSocket close code for "message too big" (RFC 6455), which websockets sends
#: when a message exceeds max_size.
CLOSE_TOO_BIG = 1009


class WebSocketTransport(Transport):
    kind = "websocket"

    def __init__(self, cfg: WebSocketConfig) -> None:
        self.cfg = cfg
        self._ws = None
        self._use_msgspec = cfg.use_msgspec
        self._keepalive_task: asyncio.Task[None] | None = None
        #: Why the keepalive gave up on the connection (None while it holds).
        self._dead: str | None = None

    async def connect(self, topics: Sequence[str]) -> str:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        try:
            ctx = ssl_context(self.cfg)
        except (OSError, ssl.SSLError) as e:
            raise TransportClosed(f"TLS setup failed: {e}") from None
        try:
            self._ws = await connect(
                self.cfg.url, ssl=ctx,
                open_timeout=self.cfg.open_timeout_s,
                # Our own keepalive (below): websockets' ping waits for the send
                # buffer to drain, so against a peer that stopped reading it never fires.
                ping_interval=None, ping_timeout=None,
                close_timeout=2.0,
                max_size=self.cfg.max_message_bytes,
                # Zeek speaks plain frames; compressing 50 MB/s of JSON would cost more CPU than it saves.
                compression=None,
                # Never route the connection to Zeek through an HTTP proxy from the environment.
                proxy=None,
                # Messages read off the socket but not yet taken by the bridge; beyond it
                # TCP pushes back on Zeek. Bounded so memory stays bounded.
                max_queue=self.cfg.max_queue,
                # Zeek 8 names WebSocket clients by this header in its logs.
                additional_headers={"X-Application-Name": "multa-bridge"},
            )
            await self._ws.send(json.dumps(list(topics)))
            reply = await asyncio.wait_for(self._ws.recv(), self.cfg.open_timeout_s)
        except (OSError, asyncio.TimeoutError, WebSocketException) as e:
            await self.close()
            raise TransportClosed(f"cannot connect to {self.cfg.url}: {type(e).__name__}: {e}") from None
        try:
            msg = wire.decode_message(reply)
        except wire.MessageError as e:
            await self.close()
            raise TransportClosed(f"{self.cfg.url}: handshake reply is not JSON: {e}") from None
        if msg.type == "error":
            await self.close()
            raise TransportClosed(f"{self.cfg.url} refused the subscription: {msg.code}: {msg.context}")
        if msg.type != "ack":
            await self.close()
            raise TransportClosed(f"{self.cfg.url}: expected an ack, got a {msg.type!r} message")
        if self.cfg.ping_interval_s:
            self._keepalive_task = asyncio.create_task(self._keepalive(self._ws), name="keepalive")
        return f"{self.cfg.url} endpoint {msg.endpoint} version {msg.version}"

    async def _keepalive(self, ws) -> None:  # type: ignore[no-untyped-def]
        """Ping every ``ping_interval_s``; no pong within ``ping_timeout_s`` aborts the connection.

        The timeout covers writing the ping too: when the peer stops reading, the
        send buffer fills and the ping cannot even be written. Aborting the TCP
        connection wakes every send blocked on that buffer (their messages were
        not delivered: :meth:`publish_results` raises) and ends :meth:`receive`,
        so the service reconnects.
        """
        from websockets.exceptions import ConnectionClosed

        interval = float(self.cfg.ping_interval_s or 0)
        timeout = float(self.cfg.ping_timeout_s or interval)
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    async with asyncio.timeout(timeout):
                        pong = await ws.ping()
                        await pong
                except TimeoutError:
                    self._dead = (f"keepalive: no pong from {self.cfg.url} within {timeout:g}s "
                                  f"(peer not reading, or gone)")
                    ws.transport.abort()
                    return
        except (ConnectionClosed, asyncio.CancelledError):
            return

    async def receive(self) -> Inbound:
        from websockets.exceptions import ConnectionClosed

        if self._ws is None:
            raise TransportClosed("not connected")
        try:
            # Raw bytes: msgspec checks UTF-8 while parsing, so decoding to str first
            # would only add a pass over ~300 KB per message.
            text = await self._ws.recv(decode=False)
        except ConnectionClosed as e:
            if self._dead:
                raise TransportClosed(self._dead) from None
            if e.sent is not None and e.sent.code == CLOSE_TOO_BIG:
                # websockets refuses the frame from its header and must close the
                # connection: the message cannot be skipped on its own.
                raise TransportClosed(f"dropped a message larger than websocket.max_message_bytes "
                                      f"({self.cfg.max_message_bytes}); the connection closes with it",
                                      dropped="too_big") from None
            raise TransportClosed(f"connection closed: {e}") from None
        return self.parse(text)

    def parse(self, text: str | bytes) -> Inbound:
        """Classify one received message (public so tests and the benchmark can time it)."""
        if self._use_msgspec:
            # The common case, a well-formed Multa::flows, in one typed pass.
            fast = wire.decode_flows(text)
            if fast is not None:
                if fast.__class__ is wire.PackedFlowsWire:
                    return Inbound("event", topic=fast.topic, name=PACKED_FLOWS_EVENT, args=fast,
                                   parse_flows=packed.packed_flows_from_wire)
                return Inbound("event", topic=fast.topic, name=FLOWS_EVENT, args=fast,
                               parse_flows=events.flows_from_wire)
        try:
            msg = wire.decode_message(text, use_msgspec=self._use_msgspec)
        except wire.TooDeep as e:
            return Inbound("malformed", code="too_deep", detail=f"{e} ({len(text)} bytes)")
        except wire.MessageError as e:
            return Inbound("malformed", code="bad_json", detail=str(e)[:200])
        if msg.type == "data-message":
            try:
                name, args = wire.split_event(msg.t, msg.data)
            except CodecError as e:
                return Inbound("malformed", topic=msg.topic, code="not_an_event", detail=str(e))
            return Inbound("event", topic=msg.topic, name=name, args=args,
                           parse_flows=packed.flows_parser(name) or events.flows_from_json)
        if msg.type == "error":
            return Inbound("error", code=str(msg.code) or "unknown", detail=str(msg.context))
        return Inbound("malformed", code="unexpected_type", detail=f"message of type {msg.type!r}")

    async def publish_results(self, route: Route, results: Sequence[Result]) -> None:
        from websockets.exceptions import ConnectionClosed

        if self._ws is None:
            raise TransportClosed("not connected")
        render = events.packed_results_message_text if route.packed else events.results_message_text
        try:
            await self._ws.send(render(route.topic, results))
        except ConnectionClosed as e:
            raise TransportClosed(self._dead or f"connection closed: {e}") from None
        if self._dead:
            # The keepalive aborted the connection while this message waited for
            # buffer space: it was discarded with the buffer, so it was not sent.
            raise TransportClosed(self._dead)

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        task, self._keepalive_task = self._keepalive_task, None
        if task is not None:
            task.cancel()
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except Exception:  # closing a dead socket must not stop a reconnect
                pass
