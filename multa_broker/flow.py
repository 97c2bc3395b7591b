"""The flow representation: the one definition every part of multa shares.

A flow is one Zeek connection reduced to its first N packets. Each packet has
three features:

* ``size`` -- the IP total length, exactly what Zeek adds to ``num_bytes_ip``
  (IPv4: the total-length field; IPv6: payload length + 40);
* ``dir``  -- True when the originator sent it;
* ``iat``  -- microseconds since the previous packet of the same connection
  (0 for the first packet).

The transport protocol and ports travel beside the sequence for joining and
logging. The model sees the protocol but never the ports: a model that trusts
ports breaks as soon as a service moves (see docs/features.md).

Training (``multa dataset build``), offline classification (``multa classify``)
and the live bridge all turn flows into tensors through :func:`encode`, so the
three cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from multa_broker import context

#: Packets per flow the default model reads.
DEFAULT_N = 20
#: Longest sequence any model or the wire contract may carry.
MAX_N = 64
#: Smallest and largest legal IP total length (an IPv4 header alone is 20 bytes).
MIN_SIZE = 20
MAX_SIZE = 65535
#: Largest gap we represent, in microseconds (a day); longer gaps are clipped.
MAX_IAT_US = 86_400 * 1_000_000

#: Transport protocols, in the order of the model's ``proto`` input.
PROTOS: tuple[str, ...] = ("tcp", "udp", "icmp")
PROTO_INDEX: dict[str, int] = {p: i for i, p in enumerate(PROTOS)}

#: Version of the feature definition; a model trained on another spec is refused.
FEATURE_SPEC: dict[str, Any] = {
    "version": 1,
    "features": ["size", "dir", "iat"],
    "size": "IP total length in bytes (IPv6: payload length + 40), as Zeek's num_bytes_ip",
    "dir": "1.0 when sent by the originator, else 0.0",
    "iat": "microseconds since the previous packet of the connection, 0 for the first",
    "protos": list(PROTOS),
    "ports_visible_to_model": False,
}


@dataclass(frozen=True, slots=True)
class FlowKey:
    """Stable identity of a flow: the connection 5-tuple plus its first packet's time.

    For ICMP, ``orig_p`` is the ICMP type and ``resp_p`` the counterpart type,
    as in Zeek's ``conn_id``.
    """

    proto: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    ts: float

    def __str__(self) -> str:
        return f"{self.proto}/{self.orig_h}:{self.orig_p}>{self.resp_h}:{self.resp_p}@{self.ts:.6f}"

    @property
    def tuple5(self) -> tuple[str, str, int, str, int]:
        return (self.proto, self.orig_h, self.orig_p, self.resp_h, self.resp_p)


@dataclass(slots=True)
class Flow:
    """One connection's first packets. ``sizes``, ``dirs`` and ``iats`` have equal length."""

    key: FlowKey
    sizes: list[int] = field(default_factory=list)
    dirs: list[bool] = field(default_factory=list)
    iats: list[int] = field(default_factory=list)
    #: Zeek's connection uid when the flow came from Zeek; None offline.
    uid: str | None = None
    #: Host context at the first packet (:mod:`multa_broker.context`), or None where
    #: it was not computed (an older Zeek package, a flow read without it).
    ctx: tuple[int, ...] | None = None

    @property
    def packets(self) -> int:
        return len(self.sizes)

    def to_json(self) -> dict[str, Any]:
        """The JSON-lines form printed by ``multa flows``."""
        k = self.key
        out: dict[str, Any] = {
            "proto": k.proto,
            "orig_h": k.orig_h,
            "orig_p": k.orig_p,
            "resp_h": k.resp_h,
            "resp_p": k.resp_p,
            "ts": round(k.ts, 6),
            "packets": self.packets,
            "sizes": list(self.sizes),
            "dirs": [bool(d) for d in self.dirs],
            "iats": list(self.iats),
        }
        if self.uid is not None:
            out["uid"] = self.uid
        if self.ctx is not None:
            out["ctx"] = list(self.ctx)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Flow":
        key = FlowKey(
            str(obj["proto"]), str(obj["orig_h"]), int(obj["orig_p"]),
            str(obj["resp_h"]), int(obj["resp_p"]), float(obj["ts"]),
        )
        ctx = obj.get("ctx")
        flow = cls(key, [int(s) for s in obj["sizes"]], [bool(d) for d in obj["dirs"]],
                   [int(i) for i in obj["iats"]], obj.get("uid"),
                   None if ctx is None else tuple(int(v) for v in ctx))
        validate(flow)
        return flow


class FlowError(ValueError):
    """A flow that breaks the representation's rules."""


def validate(flow: Flow, max_n: int = MAX_N) -> None:
    """Raise :class:`FlowError` unless ``flow`` is a legal flow of at most ``max_n`` packets."""
    n = len(flow.sizes)
    if n == 0:
        raise FlowError("flow has no packets")
    if n != len(flow.dirs) or n != len(flow.iats):
        raise FlowError(f"sizes/dirs/iats lengths differ ({n}/{len(flow.dirs)}/{len(flow.iats)})")
    if n > max_n:
        raise FlowError(f"flow has {n} packets, more than the limit of {max_n}")
    if flow.key.proto not in PROTO_INDEX:
        raise FlowError(f"unknown transport protocol {flow.key.proto!r}")
    for s in flow.sizes:
        if not (MIN_SIZE <= s <= MAX_SIZE):
            raise FlowError(f"packet size {s} outside {MIN_SIZE}..{MAX_SIZE}")
    for i in flow.iats:
        if i < 0:
            raise FlowError(f"negative inter-arrival time {i}")
    if flow.iats[0] != 0:
        raise FlowError("first packet's inter-arrival time must be 0")
    for p in (flow.key.orig_p, flow.key.resp_p):
        if not (0 <= p <= 65535):
            raise FlowError(f"port {p} outside 0..65535")
    if not math.isfinite(flow.key.ts):
        raise FlowError("timestamp is not finite")
    if flow.ctx is not None:
        try:
            context.validate(flow.ctx)
        except context.ContextError as e:
            raise FlowError(str(e)) from None


@dataclass(slots=True)
class EncodedBatch:
    """Flows as the model's raw inputs; the model does all scaling itself.

    Shapes: ``sizes``, ``dirs``, ``iats``: float32 [B, N] (zero-padded past
    ``lengths``); ``lengths``: int64 [B]; ``proto``: int64 [B] (index into PROTOS);
    ``ctx``: float32 [B, context.N_FEATURES], the host-context counts (zero where
    a flow has none); ``has_ctx``: bool [B], whether it had them.
    """

    sizes: np.ndarray
    dirs: np.ndarray
    iats: np.ndarray
    lengths: np.ndarray
    proto: np.ndarray
    ctx: np.ndarray | None = None
    has_ctx: np.ndarray | None = None

    def __post_init__(self) -> None:
        b = int(self.lengths.shape[0])
        if self.ctx is None:
            self.ctx = np.zeros((b, context.N_FEATURES), dtype=np.float32)
        if self.has_ctx is None:
            self.has_ctx = np.zeros(b, dtype=bool)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def encode(flows: Sequence[Flow] | Iterable[Flow], n: int = DEFAULT_N) -> EncodedBatch:
    """Turn flows into the model's input arrays, truncating each to its first ``n`` packets."""
    flows = list(flows)
    b = len(flows)
    lengths = np.fromiter((min(n, len(f.sizes)) for f in flows), dtype=np.int64, count=b)
    proto = np.fromiter((PROTO_INDEX[f.key.proto] for f in flows), dtype=np.int64, count=b)
    # Every flow's packets in one flat run each, scattered into the padded rows at once: a
    # numpy call per flow and feature cost the bridge's event loop more than the rest of encoding.
    total = int(lengths.sum())
    rows = np.repeat(np.arange(b), lengths)
    cols = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ks = lengths.tolist()
    out = []
    for name, dtype in (("sizes", np.float32), ("dirs", np.float32), ("iats", np.float64)):
        # Each flow's own k packets of every feature, so no flow shifts its neighbours: a dirs or
        # iats shorter than its sizes leaves the run short and raises; a longer one is cut at k.
        flat = np.fromiter(chain.from_iterable(getattr(f, name)[:k] for f, k in zip(flows, ks)), dtype=dtype,
                           count=total)
        padded = np.zeros((b, n), dtype=np.float32)
        # Gaps clipped in float64, which holds every integer up to 2**53 exactly, before float32.
        padded[rows, cols] = np.minimum(flat, MAX_IAT_US) if name == "iats" else flat
        out.append(padded)
    ctx, has_ctx = context_arrays(flows)
    return EncodedBatch(out[0], out[1], out[2], lengths, proto, ctx, has_ctx)


def context_arrays(flows: Sequence[Flow], dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """``(ctx [F, context.N_FEATURES], has_ctx bool [F])`` of ``flows``: zeros where a flow has none."""
    has_ctx = np.fromiter((f.ctx is not None for f in flows), dtype=bool, count=len(flows))
    ctx = np.zeros((len(flows), context.N_FEATURES), dtype=dtype)
    if has_ctx.any():
        ctx[has_ctx] = [f.ctx for f in flows if f.ctx is not None]
    return ctx, has_ctx
