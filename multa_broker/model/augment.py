"""Training-time augmentation: the same flow as another network or stack would show it.

The lab and most public captures come from few networks: one RTT, one MTU,
one TCP stack per service. A model trained on them learns those constants
(exact gaps, exact segment sizes) and fails elsewhere. Each transform below
changes what differs between networks and keeps what the service decides
(who talks when, how much), on the raw tensors before the model's own
preprocessing, so training and serving still share one feature definition:

* **time scale**: every gap of a flow times one factor, log-uniform in
  ``time_scale`` (other RTTs, link rates, host loads);
* **jitter**: every gap times its own log-normal factor (queueing noise);
* **path delay** (off unless asked for): a round trip, log-uniform in
  ``rtt_ms``, split at random between the two sides of the sensor, added to
  every gap where the direction turns (an answer waits for the far side, the
  next request for the near one), while back-to-back packets keep their gaps.
  This is what a longer path does and a time scale does not: scaling
  stretches a burst's gaps as much as its turns;
* **header delta**: every packet of a flow grows or shrinks by one header
  difference (TCP timestamp option: 12 bytes, IPv6 instead of IPv4: 20);
* **re-segmentation**: TCP packets over a smaller MTU (1280-1460) split into
  full segments plus a remainder, sent back to back;
* **loss**: one packet retransmitted after a timeout, or one packet missing
  from the capture;
* **cut short**: the flow ends after fewer packets (a short connection, or a
  sensor that hands flows over early);
* **payload noise** (off unless asked for): every packet's payload beyond its
  headers times one per-flow log-normal factor and a smaller per-packet one
  (other content, another client's requests, another tool's flood payload);
  header-only packets (handshakes, ACKs) keep their size, packets within the
  Ethernet MTU stay within it.

Every transform applies to a flow with its own probability; a flow may get
several. Direction sequences are only shifted (an insertion or removal),
never flipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from multa_broker.errors import MultaError
from multa_broker.flow import MAX_IAT_US, MIN_SIZE, PROTO_INDEX

_TCP = PROTO_INDEX["tcp"]
#: IPv4 + TCP headers without options: what a re-segmented piece carries besides payload.
_TCP_HDR = 40


@dataclass
class AugmentConfig:
    """Per-flow probabilities and ranges of each transform (0 turns one off)."""

    time_scale_p: float = 0.5
    time_scale: tuple[float, float] = (0.1, 10.0)
    jitter_p: float = 0.5
    jitter_sigma: float = 0.3
    header_p: float = 0.3
    reseg_p: float = 0.2
    loss_p: float = 0.15
    cut_p: float = 0.15
    payload_p: float = 0.0
    payload_sigma: float = 0.3
    rtt_p: float = 0.0
    rtt_ms: tuple[float, float] = (1.0, 300.0)

    def __post_init__(self) -> None:
        for name in ("time_scale_p", "jitter_p", "header_p", "reseg_p", "loss_p", "cut_p", "payload_p", "rtt_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise MultaError(f"augmentation share {name} must be in 0..1, not {value}")
        if not 0 < self.rtt_ms[0] <= self.rtt_ms[1]:
            raise MultaError(f"path delay round trips must be a range of positive milliseconds, not {self.rtt_ms}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(0, (1.0, 1.0), 0, 0.0, 0, 0, 0, 0, 0, 0.0)

    @property
    def active(self) -> bool:
        return any(p > 0 for p in (self.time_scale_p, self.jitter_p, self.header_p, self.reseg_p,
                                   self.loss_p, self.cut_p, self.payload_p, self.rtt_p))


def augment(sizes: np.ndarray, dirs: np.ndarray, iats: np.ndarray, lengths: np.ndarray,
            proto: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Augmented copies of one batch (inputs as :func:`multa_broker.flow.encode` makes them)."""
    sizes, dirs, iats, lengths = sizes.copy(), dirs.copy(), iats.copy(), lengths.copy()
    b, n = sizes.shape
    valid = np.arange(n)[None, :] < lengths[:, None]
    _scale_gaps(iats, valid, rng, cfg)
    _path_delay(iats, dirs, valid, rng, cfg)
    _header_delta(sizes, valid, proto, rng, cfg)
    _payload_noise(sizes, valid, proto, rng, cfg)
    for i in np.flatnonzero(proto == _TCP):
        if rng.random() < cfg.reseg_p:
            _resegment(sizes[i], dirs[i], iats[i], lengths, i, rng)
        if rng.random() < cfg.loss_p:
            _loss(sizes[i], dirs[i], iats[i], lengths, i, rng)
    cut = (rng.random(b) < cfg.cut_p) & (lengths >= 2)
    if cut.any():
        lengths[cut] = rng.integers(1, lengths[cut])
        _zero_padding(sizes, dirs, iats, lengths)
    np.clip(iats, 0, MAX_IAT_US, out=iats)
    iats[:, 0] = 0
    return sizes, dirs, iats, lengths


def _scale_gaps(iats: np.ndarray, valid: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> None:
    b = iats.shape[0]
    lo, hi = np.log(cfg.time_scale[0]), np.log(cfg.time_scale[1])
    factor = np.where(rng.random(b) < cfg.time_scale_p, np.exp(rng.uniform(lo, hi, b)), 1.0)
    iats *= factor[:, None].astype(iats.dtype)
    jit = rng.random(b) < cfg.jitter_p
    if jit.any():
        noise = np.exp(rng.normal(0.0, cfg.jitter_sigma, iats[jit].shape)).astype(iats.dtype)
        iats[jit] *= np.where(valid[jit], noise, 1.0)


def _path_delay(iats: np.ndarray, dirs: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
                cfg: AugmentConfig) -> None:
    if cfg.rtt_p <= 0:
        return  # no draws: recipes without it keep their random stream
    b = iats.shape[0]
    pick = rng.random(b) < cfg.rtt_p
    lo, hi = np.log(cfg.rtt_ms[0] * 1000.0), np.log(cfg.rtt_ms[1] * 1000.0)   # gaps are in microseconds
    rtt = np.exp(rng.uniform(lo, hi, b))
    far = rng.random(b)               # the responder's share of the round trip, as the sensor sees it
    turn = np.zeros_like(valid)
    turn[:, 1:] = valid[:, 1:] & (dirs[:, 1:] != dirs[:, :-1])
    to_responder = np.where(dirs > 0.5, (1.0 - far)[:, None], far[:, None])  # an originator packet waits on the near side
    add = np.where(turn & pick[:, None], rtt[:, None] * to_responder, 0.0)
    iats += add.astype(iats.dtype)


def _header_delta(sizes: np.ndarray, valid: np.ndarray, proto: np.ndarray, rng: np.random.Generator,
                  cfg: AugmentConfig) -> None:
    b = sizes.shape[0]
    pick = rng.random(b) < cfg.header_p
    if not pick.any():
        return
    tcp_deltas = np.array([-12, 12, 20, 32], np.float32)   # options off/on, IPv6, both
    delta = np.where(proto == _TCP, tcp_deltas[rng.integers(0, 4, b)], 20.0).astype(np.float32)
    sizes[pick] = np.where(valid[pick], np.maximum(sizes[pick] + delta[pick, None], MIN_SIZE + 8), 0)


#: Headers without payload, per protocol index (IPv4 + TCP without options, + UDP, + ICMP).
_HEADERS = np.array([40.0, 28.0, 28.0], np.float32)
#: Largest packet that may carry no payload: TCP options reach 40 bytes.
_HEADER_ONLY = np.array([80.0, 28.0, 28.0], np.float32)
_MTU = 1500.0


def _payload_noise(sizes: np.ndarray, valid: np.ndarray, proto: np.ndarray, rng: np.random.Generator,
                   cfg: AugmentConfig) -> None:
    if cfg.payload_p <= 0:   # draw nothing: a recipe without it keeps its random stream
        return
    b = sizes.shape[0]
    pick = np.flatnonzero(rng.random(b) < cfg.payload_p)
    if len(pick) == 0:
        return
    s = sizes[pick]
    kind = np.clip(proto[pick], 0, len(_HEADERS) - 1)
    head = _HEADERS[kind][:, None]
    factor = np.exp(rng.normal(0.0, cfg.payload_sigma, (len(pick), 1))
                    + rng.normal(0.0, cfg.payload_sigma / 3, s.shape)).astype(np.float32)
    payload = np.maximum(s - head, 0.0)
    new = np.round(head + payload * factor)
    new = np.where(s <= _MTU, np.minimum(new, _MTU), new)
    carries = valid[pick] & (s > _HEADER_ONLY[kind][:, None])
    sizes[pick] = np.where(carries, np.maximum(new, head + 1), s)


def _resegment(size: np.ndarray, dirs: np.ndarray, iat: np.ndarray, lengths: np.ndarray, i: int,
               rng: np.random.Generator) -> None:
    """Split packets larger than a smaller MTU into full segments (in place, truncated at N)."""
    n, k = len(size), int(lengths[i])
    mtu = float(rng.integers(1280, 1461))
    if k == 0 or size[:k].max() <= mtu:
        return
    out_s, out_d, out_g = [], [], []
    for s, d, g in zip(size[:k], dirs[:k], iat[:k]):
        if s <= mtu:
            out_s.append(s), out_d.append(d), out_g.append(g)
            continue
        payload, room = s - _TCP_HDR, mtu - _TCP_HDR
        pieces = int(np.ceil(payload / room))
        for p in range(pieces):
            out_s.append(_TCP_HDR + (room if p < pieces - 1 else payload - room * (pieces - 1)))
            out_d.append(d)
            out_g.append(g if p == 0 else float(rng.uniform(1, 50)))
    _write(size, dirs, iat, lengths, i, out_s[:n], out_d[:n], out_g[:n])


def _loss(size: np.ndarray, dirs: np.ndarray, iat: np.ndarray, lengths: np.ndarray, i: int,
          rng: np.random.Generator) -> None:
    """One retransmission after a timeout, or one packet the capture missed."""
    n, k = len(size), int(lengths[i])
    if k < 3:
        return
    j = int(rng.integers(1, k))
    s, d, g = list(size[:k]), list(dirs[:k]), list(iat[:k])
    if rng.random() < 0.5:
        rto = float(rng.uniform(2e5, 1.5e6))           # 200 ms .. 1.5 s
        s.insert(j + 1, s[j]), d.insert(j + 1, d[j]), g.insert(j + 1, rto)
    else:
        if j + 1 < k:
            g[j + 1] += g[j]
        del s[j], d[j], g[j]
    _write(size, dirs, iat, lengths, i, s[:n], d[:n], g[:n])


def _write(size: np.ndarray, dirs: np.ndarray, iat: np.ndarray, lengths: np.ndarray, i: int,
           s: list, d: list, g: list) -> None:
    k = len(s)
    size[:] = 0
    dirs[:] = 0
    iat[:] = 0
    size[:k], dirs[:k], iat[:k] = s, d, g
    lengths[i] = k


def _zero_padding(sizes: np.ndarray, dirs: np.ndarray, iats: np.ndarray, lengths: np.ndarray) -> None:
    pad = np.arange(sizes.shape[1])[None, :] >= lengths[:, None]
    sizes[pad] = 0
    dirs[pad] = 0
    iats[pad] = 0
