"""Transport over Broker's native protocol, through Broker's Python bindings.

Selected with ``transport: native``. The ``broker`` module is imported only
here, and only when this transport is configured; ``native.python_path`` is
appended to ``sys.path`` first (Zeek installs its bindings under
``<prefix>/lib/zeek/python``; Debian's python3-broker under
``/usr/lib/python3/dist-packages``).

Broker's wire protocol changes between major versions: Debian bookworm's
python3-broker 1.4.0 peers with other Broker 1.4 endpoints only, not with
Zeek 8 (Broker 2.8). Against Zeek 8 use Zeek's own bindings, or the WebSocket
transport. The API calls below ran unchanged on both (checked on Zeek 8.0.10 and Broker 1.4).

Receiving uses the subscribers' file descriptors on the event loop, so no
thread blocks; only ``peer()`` (a blocking handshake) runs in a thread.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import ipaddress
import sys
from typing import Any, Sequence

from multa_broker.bridge import codec, events, packed, wire
from multa_broker.bridge.config import NativeConfig
from multa_broker.bridge.transport import Inbound, Route, Transport, TransportClosed
from multa_broker.errors import MultaError
from multa_broker.protocol import (FLOWS_EVENT, PACKED_RESULT_VERSION, PACKED_RESULTS_EVENT, RESULTS_EVENT, Port,
                                   Result, pack_results)


def import_broker(python_path: str | None) -> Any:
    """Import Broker's Python bindings, looking in ``python_path`` too; MultaError if absent."""
    if python_path and python_path not in sys.path:
        sys.path.append(python_path)
    try:
        import broker
    except ImportError as e:
        where = f" (also looked in {python_path})" if python_path else ""
        raise MultaError(
            f"transport native needs Broker's Python bindings{where}: {e}; set native.python_path "
            "to Zeek's lib/zeek/python, or use transport: websocket") from None
    return broker


def to_values(broker: Any, x: Any) -> Any:
    """A value from Broker's bindings as the :mod:`codec` Python value of the same Broker type."""
    if isinstance(x, (bool, int, float, str)) or x is None:
        return x  # bool/int/real/string/none map as they are
    if isinstance(x, broker.Count):
        return codec.Count(x.value)
    if isinstance(x, broker.Port):
        proto = {broker.Port.TCP: "tcp", broker.Port.UDP: "udp", broker.Port.ICMP: "icmp"}.get(x.get_type(), "unknown")
        return Port(x.number(), proto)
    if isinstance(x, broker.Enum):
        return codec.EnumValue(x.name)
    if isinstance(x, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
                      ipaddress.IPv6Network, _dt.timedelta)):
        return x
    if isinstance(x, _dt.datetime):
        return x if x.tzinfo is not None else x.replace(tzinfo=_dt.timezone.utc)
    if isinstance(x, (tuple, list)):
        return tuple(to_values(broker, v) for v in x)
    if isinstance(x, (set, frozenset)):
        return frozenset(to_values(broker, v) for v in x)
    if isinstance(x, dict):
        return {to_values(broker, k): to_values(broker, v) for k, v in x.items()}
    raise codec.CodecError(f"no codec value for Broker's {type(x).__name__}")


def from_values(broker: Any, x: Any) -> Any:
    """A :mod:`codec` Python value as what Broker's bindings publish with the same Broker type."""
    if isinstance(x, codec.Count):
        return broker.Count(int(x))
    if isinstance(x, Port):
        proto = {"tcp": broker.Port.TCP, "udp": broker.Port.UDP, "icmp": broker.Port.ICMP}.get(x.proto, broker.Port.Unknown)
        return broker.Port(x.number, proto)
    if isinstance(x, codec.EnumValue):
        return broker.Enum(str(x))
    if isinstance(x, (tuple, list)):
        return [from_values(broker, v) for v in x]
    if isinstance(x, (set, frozenset)):
        return {from_values(broker, v) for v in x}
    if isinstance(x, dict):
        return {from_values(broker, k): from_values(broker, v) for k, v in x.items()}
    return x


def _parse_flows(broker: Any, name: str = FLOWS_EVENT):
    decode = packed.flows_parser(name) or events.flows_from_json

    def parse(args: Any, max_n: int) -> events.FlowsMessage:
        # Through the WebSocket transport's decoder: the same checks, the same reasons.
        values = to_values(broker, args)
        if not isinstance(values, tuple):
            raise codec.CodecError(f"{name} arguments are not a vector")
        return decode([wire.from_codec(v) for v in values], max_n)
    return parse


class NativeTransport(Transport):
    kind = "native"

    def __init__(self, cfg: NativeConfig) -> None:
        self.cfg = cfg
        self.broker = import_broker(cfg.python_path)
        self._ep: Any = None
        self._sub: Any = None
        self._status: Any = None
        self._ready = asyncio.Event()
        self._inbox: list[tuple[str, Any]] = []
        self._lost: str | None = None
        self._fds: list[int] = []

    async def connect(self, topics: Sequence[str]) -> str:
        b = self.broker
        self._ep = b.Endpoint()
        self._status = self._ep.make_status_subscriber(True)
        if topics:
            # broker 1.4's make_subscriber() fails on a list under Python 3.10+
            # (collections.Iterable), so subscribe to one topic and add the rest.
            self._sub = self._ep.make_subscriber(topics[0])
            for t in topics[1:]:
                self._sub.add_topic(t, True)
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, self._ep.peer, self.cfg.host, self.cfg.port, 0)
        if not ok:
            await self.close()
            raise TransportClosed(f"cannot peer with Broker at {self.cfg.host}:{self.cfg.port}")
        self._status.poll()  # the peer_added we just caused
        for sub in (self._sub, self._status):
            if sub is not None:
                fd = sub.fd()
                loop.add_reader(fd, self._ready.set)
                self._fds.append(fd)
        return f"broker://{self.cfg.host}:{self.cfg.port}"

    def _drain_status(self) -> None:
        for st in self._status.poll():
            code = st.code() if hasattr(st, "code") else None
            if code in (self.broker.SC.PeerLost, self.broker.SC.PeerRemoved):
                self._lost = str(st)

    async def receive(self) -> Inbound:
        while True:
            if self._ep is None:
                raise TransportClosed("not connected")
            if not self._inbox:
                self._drain_status()
                if self._lost:
                    raise TransportClosed(f"peer lost: {self._lost}")
                if self._sub is not None:
                    self._inbox = self._sub.poll()[::-1]  # popped from the end, oldest first
            if self._inbox:
                topic, data = self._inbox.pop()
                return self._classify(topic, data)
            self._ready.clear()
            await self._ready.wait()

    def _classify(self, topic: str, data: Any) -> Inbound:
        ev = self.broker.zeek.Event(data)
        if not ev.valid():
            return Inbound("malformed", topic=topic, code="not_an_event", detail="message is not a Zeek event")
        return Inbound("event", topic=topic, name=ev.name(), args=ev.args(),
                       parse_flows=_parse_flows(self.broker, ev.name()))

    async def publish_results(self, route: Route, results: Sequence[Result]) -> None:
        if self._ep is None:
            raise TransportClosed("not connected")
        self._drain_status()
        if self._lost:
            raise TransportClosed(f"peer lost: {self._lost}")
        if route.packed:
            event = self.broker.zeek.Event(PACKED_RESULTS_EVENT, self.broker.Count(PACKED_RESULT_VERSION),
                                           pack_results(results))
        else:
            event = self.broker.zeek.Event(RESULTS_EVENT,
                                           [from_values(self.broker, events.result_values(r)) for r in results])
        self._ep.publish(route.topic, event)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._fds:
            loop.remove_reader(fd)
        self._fds.clear()
        ep, self._ep = self._ep, None
        if ep is not None:
            try:
                await loop.run_in_executor(None, ep.shutdown)
            except Exception:  # shutting down a broken endpoint must not stop a reconnect
                pass
