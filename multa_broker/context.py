"""Host context: what the hosts of a connection did just before it started.

One flow of a SYN flood and one flow of a SYN scan carry the same packets; so
do one UDP flood flow and one DNS query, or one failed login and one attempt
of a brute force. What tells them apart is the hosts' other connections, which
Zeek sees and a per-flow model does not. This module is the one definition of
that context, shared by the offline extractor (``capture/``), the model and,
line for line, the Zeek package's ``zeek_scripts/context.zeek``.

When a connection starts, over the connections that started in the
:data:`WINDOW_S` seconds before it (this one left out), with the roles it has
once its first packet has been processed (what Zeek's ``new_connection``
handlers see: a DNS or NTP role flip at that packet counts, a later flip does
not change the context, so a flow key may later name the other side as
originator):

* ``orig_conns`` -- connections its originator started;
* ``orig_hosts`` -- distinct responder addresses of those;
* ``orig_ports`` -- distinct responder ports (number and transport) of those;
* ``orig_same``  -- those to this connection's responder endpoint
  (address, port, transport);
* ``resp_conns`` -- connections to this responder endpoint, from anyone;
* ``resp_origs`` -- distinct originators of those.

Why these, and why at the start: they need nothing but connection starts
(Zeek's ``new_connection``), so both Zeek collectors and the offline
extractor compute them the same way, whatever the packets do later. A scan
has many ports or hosts; a flood many connections to one endpoint, often from
many spoofed originators; a brute force many connections from one
originator to one endpoint. A "share of connections without a reply" was
left out: it depends on how far each *other* connection has got when this one
starts, which would tie every flow to the processing order of its
neighbours' packets.

Bounded memory: each originator and each responder endpoint keeps at most
:data:`MAX_ENTRIES` recent starts (the oldest leave first), so every count is
at most that; entries leave in the order they came, the oldest first, once
``t0 - start >= WINDOW_S``. Hosts whose newest start left the window are
forgotten by a sweep every :attr:`ContextTracker.SWEEP_EVERY` starts. While
timestamps only go forward that changes no result; in a capture whose
timestamps go back it can, so the sweep interval is part of the definition and
the Zeek package sweeps at the same starts.

Cluster note: Zeek's cluster load balancing keeps a host *pair* on one
worker, not a host, so on a cluster each worker sees only its share of a
host's connections and the counts are mostly lower (docs/context.md); where a
host's ring is full, a worker's ring reaches further back and a distinct
count can come out higher.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Hashable

#: Length of the look-back window, in seconds.
WINDOW_S = 60.0
#: Starts kept per originator and per responder endpoint; every count is at most this.
MAX_ENTRIES = 1000

#: The context numbers, in wire and model order.
FEATURES: tuple[str, ...] = ("orig_conns", "orig_hosts", "orig_ports", "orig_same", "resp_conns", "resp_origs")
N_FEATURES = len(FEATURES)

#: Recorded in a model's manifest; a model trained on other context is refused.
CONTEXT_SPEC: dict[str, Any] = {
    "version": 1,
    "features": list(FEATURES),
    "window_s": WINDOW_S,
    "max_entries": MAX_ENTRIES,
    "at": "the connection's first packet, over connections started in the window before it",
}


class ContextError(ValueError):
    """A context vector that breaks the definition."""


def validate(ctx: Any) -> tuple[int, ...]:
    """``ctx`` as a tuple of :data:`N_FEATURES` counts in ``0..MAX_ENTRIES``; ContextError if not."""
    try:
        values = tuple(ctx)
    except TypeError:
        raise ContextError("host context is not a list of counts") from None
    if len(values) != N_FEATURES:
        raise ContextError(f"host context has {len(values)} numbers, not {N_FEATURES} ({', '.join(FEATURES)})")
    for v in values:
        if type(v) is not int or not 0 <= v <= MAX_ENTRIES:
            raise ContextError(f"host context value {v!r} is not a count in 0..{MAX_ENTRIES}")
    return values


class _Window:
    """Recent starts of one originator or responder endpoint, and their distinct peers.

    ``keys`` holds one occurrence counter per kind of peer: for an originator
    its responder addresses, ports and endpoints; for an endpoint its
    originators.
    """

    __slots__ = ("starts", "keys", "newest")

    def __init__(self, kinds: int) -> None:
        self.starts: deque[tuple] = deque()  # (ts, key of kind 0, key of kind 1, ...)
        self.keys: tuple[dict, ...] = tuple({} for _ in range(kinds))
        self.newest = float("-inf")

    def expire(self, t0: float) -> None:
        starts = self.starts
        while starts and t0 - starts[0][0] >= WINDOW_S:
            self._drop(starts.popleft())

    def add(self, entry: tuple) -> None:
        self.starts.append(entry)
        if entry[0] > self.newest:
            self.newest = entry[0]
        for d, k in zip(self.keys, entry[1:]):
            d[k] = d.get(k, 0) + 1
        if len(self.starts) > MAX_ENTRIES:
            self._drop(self.starts.popleft())

    def _drop(self, entry: tuple) -> None:
        for d, k in zip(self.keys, entry[1:]):
            n = d[k] - 1
            if n:
                d[k] = n
            else:
                del d[k]


class ContextTracker:
    """Feed connection starts in processing order; get each one's context.

    Addresses may be any hashable (bytes offline, strings in tests); ports are
    numbers and ``proto`` the transport name, so 53/udp and 53/tcp differ.
    """

    #: Starts between sweeps that forget hosts with nothing in their window.
    SWEEP_EVERY = 65536

    def __init__(self) -> None:
        self.origs: dict[Hashable, _Window] = {}
        self.endpoints: dict[tuple, _Window] = {}
        self._since_sweep = 0

    def start(self, ts: float, proto: str, orig_h: Hashable, resp_h: Hashable, resp_p: int) -> tuple[int, ...]:
        """Context of a connection starting at ``ts``; then record its start."""
        port = (resp_p, proto)
        ep = (resp_h, resp_p, proto)
        o = self.origs.get(orig_h)
        if o is None:
            o = self.origs[orig_h] = _Window(3)
        else:
            o.expire(ts)
        r = self.endpoints.get(ep)
        if r is None:
            r = self.endpoints[ep] = _Window(1)
        else:
            r.expire(ts)
        hosts, ports, eps = o.keys
        ctx = (len(o.starts), len(hosts), len(ports), eps.get(ep, 0), len(r.starts), len(r.keys[0]))
        o.add((ts, resp_h, port, ep))
        r.add((ts, orig_h))
        self._since_sweep += 1
        if self._since_sweep >= self.SWEEP_EVERY:
            self.sweep(ts)
        return ctx

    def sweep(self, now: float) -> None:
        """Forget hosts and endpoints whose newest start left the window (changes no result)."""
        self._since_sweep = 0
        for table in (self.origs, self.endpoints):
            stale = [k for k, w in table.items() if now - w.newest >= WINDOW_S]
            for k in stale:
                del table[k]
