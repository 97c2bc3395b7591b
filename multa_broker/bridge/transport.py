"""What the bridge service needs from a connection to Zeek, whatever carries it.

Two transports implement :class:`Transport`: :mod:`.websocket` (Zeek's
WebSocket API, Broker JSON v1; the default) and :mod:`.native` (Broker's Python
bindings). A transport object is one connection attempt: the service makes a
new one after every loss.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple, Sequence

from multa_broker.bridge.events import FlowsMessage
from multa_broker.protocol import Result


class TransportClosed(Exception):
    """The connection is gone (or never came up); the message says why.

    ``dropped`` names a malformed-message reason when the connection ended
    because of one message (``too_big``): that message is counted as dropped.
    """

    def __init__(self, msg: str, *, dropped: str | None = None) -> None:
        super().__init__(msg)
        self.dropped = dropped


class Route(NamedTuple):
    """Where a batch of results goes: the topic, and whether as ``Multa::packed_results``
    (the node sent packed flows of version 2 or later) or as ``Multa::results``."""

    topic: str
    packed: bool = False


@dataclass(slots=True)
class Inbound:
    """One thing Zeek sent.

    * ``event``: a Zeek event ``name(args)`` on ``topic``; ``parse_flows(args, max_n)``
      reads ``Multa::flows`` arguments in this transport's form.
    * ``error``: Zeek's ``error`` message (it dropped something we sent): ``code``, ``detail``.
    * ``malformed``: an unreadable message; ``code`` is the metric reason, ``detail`` says what.
    """

    kind: Literal["event", "error", "malformed"]
    topic: str = ""
    name: str = ""
    args: Any = None
    parse_flows: Callable[[Any, int], FlowsMessage] | None = None
    code: str = ""
    detail: str = ""


class Transport(abc.ABC):
    """One connection to Zeek."""

    #: Short name for logs and metrics ("websocket" / "native").
    kind: str = ""

    @abc.abstractmethod
    async def connect(self, topics: Sequence[str]) -> str:
        """Connect and subscribe to ``topics``; returns a description of the peer.

        Raises TransportClosed (or OSError / asyncio.TimeoutError) on failure.
        """

    @abc.abstractmethod
    async def receive(self) -> Inbound:
        """The next thing Zeek sent; raises TransportClosed when the connection ends."""

    @abc.abstractmethod
    async def publish_results(self, route: Route, results: Sequence[Result]) -> None:
        """Send ``results`` on ``route.topic``, as ``Multa::packed_results`` where ``route.packed``
        else as ``Multa::results``; raises TransportClosed if it cannot."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; never raises."""
