"""The bridge's two bounded buffers: flows waiting for the model, results waiting for Zeek."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

from multa_broker.flow import Flow
from multa_broker.protocol import Result


@dataclass(slots=True)
class _Queued:
    flow: Flow
    node: str
    t_in: float  # time.monotonic() at arrival
    packed: bool = False  # the node reads Multa::packed_results


class FlowQueue:
    """A bounded FIFO of flows waiting for the model.

    ``drop="newest"`` refuses arrivals while full (Zeek's newest flows are lost);
    ``drop="oldest"`` evicts the longest-waiting flows instead (fresher verdicts,
    but work already waited for is thrown away). ``put`` returns how many flows
    were dropped either way.
    """

    def __init__(self, max_flows: int, drop: str) -> None:
        self.max_flows = max_flows
        self.drop = drop
        self._q: collections.deque[_Queued] = collections.deque()
        self.changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._q)

    def put(self, items: Sequence[_Queued]) -> int:
        room = self.max_flows - len(self._q)
        dropped = 0
        if len(items) > room:
            if self.drop == "newest":
                dropped = len(items) - max(room, 0)
                items = items[: max(room, 0)]
            else:
                if len(items) > self.max_flows:  # the arrival alone overfills: keep its newest part
                    dropped += len(items) - self.max_flows
                    items = items[-self.max_flows:]
                evict = len(self._q) + len(items) - self.max_flows
                for _ in range(evict):
                    self._q.popleft()
                dropped += evict
        self._q.extend(items)
        if items:
            self.changed.set()
        return dropped

    def oldest(self) -> float | None:
        return self._q[0].t_in if self._q else None

    def take(self, n: int) -> list[_Queued]:
        q = self._q
        return [q.popleft() for _ in range(min(n, len(q)))]

    def clear(self) -> int:
        n = len(self._q)
        self._q.clear()
        return n


class PendingResults:
    """Results made while Zeek was unreachable, oldest first, at most ``limit`` of them, each
    with its route (:class:`transport.Route`: topic and encoding)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._q: collections.deque[tuple[Hashable, Result]] = collections.deque()

    def __len__(self) -> int:
        return len(self._q)

    def add(self, route: Hashable, results: Sequence[Result]) -> int:
        """Keep ``results``; returns how many old ones were dropped to make room."""
        self._q.extend((route, r) for r in results)
        over = max(0, len(self._q) - self.limit)
        for _ in range(over):
            self._q.popleft()
        return over

    def take(self, max_n: int) -> tuple[Any, list[Result]]:
        """Up to ``max_n`` of the oldest results that share a route."""
        route = self._q[0][0]
        out = []
        while self._q and len(out) < max_n and self._q[0][0] == route:
            out.append(self._q.popleft()[1])
        return route, out

    def put_back(self, route: Hashable, results: Sequence[Result]) -> None:
        self._q.extendleft((route, r) for r in reversed(results))
