"""Model-side preprocessing: raw packet sequences to LSTM inputs.

The exported model takes the raw arrays of :func:`multa_broker.flow.encode`
(sizes in bytes, directions 0/1, gaps in microseconds, lengths, protocol
index), so training, ``multa classify`` and the bridge cannot disagree on
scaling: it lives in the TorchScript archive.

Per packet step (zeroed past the flow's length):

* ``size_lin`` -- size / 1500, clipped at 2 (Ethernet MTU scale; jumbo/TSO
  frames saturate instead of dominating);
* ``size_log`` -- log1p(size) / log(65536);
* ``dir``      -- +1 originator, -1 responder;
* ``iat_log``  -- log1p(microseconds) / log1p(one day), in [0, 1];
* ``signed``   -- dir * size_lin (the size seen from the originator's side);
* a thermometer code of log(size): 16 ramps between 40 and 1600 bytes, and of
  log(gap): 12 ramps between 1 us and 100 s. A tree splits on exact sizes for
  free; an LSTM fed one scaled number per packet has to learn those steps,
  and on our corpus the code lifted the single-task service macro-F1 from
  about 0.20 to 0.28 (docs/model.md);
* protocol one-hot (tcp, udp, icmp), repeated at every step.

The sequence is fed **last packet first** (each flow reversed within its
length), so the first packets -- handshakes, the most telling part of a
flow -- are the nearest to the state the experts hand on; read forward, the
LSTM had to carry them through up to N-1 steps and learnt them slowly.

The per-flow summary (gate input, and beside the experts' mixture the towers'
input) holds the statistics gradient-boosted trees win with on small data,
computed here from the same raw tensors: the masked mean of the five scalar
step features; per direction (all, originator, responder) the packet share,
mean/std/min/max of log size and log byte total; mean/std/min/max of log gap
and the log duration; the first FIRST signed log sizes and log gaps in
arrival order; with ``size_bag`` D > 0, a learnt D-wide vector per packet
(direction, size bucket), averaged over the flow's packets, and the first
packet's own (:class:`Preprocess`); the protocol one-hot; and the flow's
length / N (the model's N, always last). Ports are never an input.

A model with host context (:mod:`multa_broker.context`) appends
:class:`ContextInput`'s features to that summary: each count as
log1p(count) / log1p(MAX_ENTRIES), the originator's distinct hosts, ports and
same-endpoint connections as shares of its connections, the endpoint's
distinct originators as a share of its connections, the originator's spread
(the larger of its distinct hosts and ports, as a share of its connections:
near 1 for a vertical scan of one host's ports and a horizontal one of many
hosts alike, low for a client that comes back to the same servers), and a 1
where the flow came with context at all (an older Zeek package sends none).
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from multa_broker.context import MAX_ENTRIES, N_FEATURES as N_CONTEXT
from multa_broker.flow import MAX_IAT_US, MAX_SIZE, PROTOS

STEP_FEATURES = 5
SIZE_RAMPS = 16
IAT_RAMPS = 12
N_PROTOS = len(PROTOS)
#: Width of the per-step LSTM input (without the size embedding, which adds its own width).
INPUT_DIM = STEP_FEATURES + SIZE_RAMPS + IAT_RAMPS + N_PROTOS
#: Buckets of the size embedding (:func:`size_bucket`): one per byte below 256, one per 16 bytes
#: up to 1535, one for anything larger.
SIZE_BUCKETS = 256 + (1536 - 256) // 16 + 1  # 337; size_bucket's last bucket is written out for TorchScript
#: Packets whose own signed size and gap enter the summary.
FIRST = 8
#: Per direction: share, mean/std/min/max of log size, log bytes.
DIR_STATS = 6
#: Width of the per-flow summary the gates (and towers) read, without the size bag (which adds
#: twice its width).
SUMMARY_DIM = STEP_FEATURES + 3 * DIR_STATS + 5 + 2 * FIRST + N_PROTOS + 1


#: Width of the host-context features appended to the summary of a model with context.
CONTEXT_DIM = N_CONTEXT + 5 + 1


class ContextInput(nn.Module):
    """Raw host-context counts [B, 6] and has-context flags [B] -> [B, CONTEXT_DIM] features."""

    def __init__(self) -> None:
        super().__init__()
        self.cap = float(MAX_ENTRIES)
        self.log_cap = math.log1p(float(MAX_ENTRIES))
        self.dim = CONTEXT_DIM

    def forward(self, ctx: Optional[torch.Tensor], has_ctx: Optional[torch.Tensor],
                batch: int, dtype: torch.dtype) -> torch.Tensor:
        if ctx is None or has_ctx is None:
            return torch.zeros(batch, self.dim, dtype=dtype)
        c = ctx.to(dtype).clamp(0.0, self.cap)
        h = has_ctx.to(dtype).unsqueeze(1)
        logc = torch.log1p(c) / self.log_cap
        orig = c[:, 0].clamp(min=1.0)
        resp = c[:, 4].clamp(min=1.0)
        spread = torch.maximum(c[:, 1], c[:, 2]) / orig
        shares = torch.stack([c[:, 1] / orig, c[:, 2] / orig, c[:, 3] / orig, c[:, 5] / resp, spread], dim=1)
        return torch.cat([logc * h, shares * h, h], dim=1)


def _masked_stats(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[B,N] values, [B,N] 0/1 mask -> [B,4] mean, std, min, max over the masked steps (0 if none)."""
    cnt = m.sum(dim=1)
    safe = cnt.clamp(min=1.0)
    mean = (x * m).sum(dim=1) / safe
    std = torch.sqrt((((x - mean.unsqueeze(1)) ** 2) * m).sum(dim=1) / safe + 1e-8)
    big = torch.full_like(x, 1e9)
    lo = torch.where(m > 0, x, big).amin(dim=1)
    hi = torch.where(m > 0, x, -big).amax(dim=1)
    some = cnt > 0
    zero = torch.zeros_like(mean)
    return torch.stack([mean, std, torch.where(some, lo, zero), torch.where(some, hi, zero)], dim=1)


def size_bucket(sizes: torch.Tensor) -> torch.Tensor:
    """Each size's bucket of the size embedding, int64: exact below 256 bytes, where control
    packets, DNS and NTP messages and handshakes differ by a few bytes; 16-byte steps to 1535; one
    bucket above (jumbo and offloaded frames)."""
    s = sizes.clamp(min=0.0)
    coarse = (256.0 + torch.floor((s - 256.0) / 16.0)).clamp(max=336.0)  # SIZE_BUCKETS - 1
    return torch.where(s < 256.0, torch.floor(s), coarse).long()


class Preprocess(nn.Module):
    """Raw tensors -> (steps [S,B,step_dim], time-major, S the longest flow's length; summary [B,summary_dim];
    last index [B]).

    ``size_embed`` > 0 appends to every step a learnt vector of that width for the packet's
    size bucket (:func:`size_bucket`): the exact-size handle a tree gets by splitting, which
    the log-spaced ramps give only coarsely.

    ``size_bag`` > 0 appends to the summary a learnt vector of that width per packet direction
    and size bucket, averaged over the flow's packets (a bag of sizes), and the first packet's
    own: the same handle where the towers and gates read it directly, each size's vector a
    class's evidence, instead of through the experts' recurrence.
    """

    def __init__(self, n: int, size_embed: int = 0, size_bag: int = 0) -> None:
        super().__init__()
        # The model's N, not the batch's width: a flow padded further is the same flow.
        self.n = int(n)
        self.n_protos = N_PROTOS
        self.first = FIRST
        self.log_size = math.log1p(float(MAX_SIZE))
        self.log_iat = math.log1p(float(MAX_IAT_US))
        self.max_size = float(MAX_SIZE)
        self.max_iat = float(MAX_IAT_US)
        size_knots = torch.linspace(math.log(40.0), math.log(1600.0), SIZE_RAMPS)
        iat_knots = torch.linspace(0.0, math.log(1e8), IAT_RAMPS)
        self.size_step = float(size_knots[1] - size_knots[0])
        self.iat_step = float(iat_knots[1] - iat_knots[0])
        # Buffers, not parameters: fixed, and saved inside the TorchScript archive.
        self.register_buffer("size_knots", size_knots)
        self.register_buffer("iat_knots", iat_knots)
        self.embed_dim = max(int(size_embed), 0)
        # A list of none or one: TorchScript scripts a loop over it, and a model without the
        # embedding keeps the state dict it always had.
        self.size_embed = nn.ModuleList([nn.Embedding(SIZE_BUCKETS, self.embed_dim)] if self.embed_dim else [])
        for emb in self.size_embed:
            nn.init.normal_(emb.weight, std=0.1)  # the scale of the other step features
        self.step_dim = INPUT_DIM + self.embed_dim
        self.bag_dim = max(int(size_bag), 0)
        self.n_buckets = SIZE_BUCKETS
        self.size_bag = nn.ModuleList([nn.Embedding(2 * SIZE_BUCKETS, self.bag_dim)] if self.bag_dim else [])
        for emb in self.size_bag:
            nn.init.normal_(emb.weight, std=0.1)
        self.summary_dim = SUMMARY_DIM + 2 * self.bag_dim
        #: The bag's columns in the summary: before the protocol one-hot and length/N.
        self.bag_columns = (SUMMARY_DIM - N_PROTOS - 1, SUMMARY_DIM - N_PROTOS - 1 + 2 * self.bag_dim)

    def forward(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
                lengths: torch.Tensor, proto: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = sizes.shape[1]
        # A flow has at least one packet; clamp so a bad length cannot index out of range.
        lengths = lengths.clamp(1, n)
        last = lengths - 1
        steps = torch.arange(n, device=sizes.device).unsqueeze(0)
        valid = (steps < lengths.unsqueeze(1)).to(sizes.dtype)  # [B, N]
        s = sizes.clamp(0.0, self.max_size)
        size_lin = (s / 1500.0).clamp(max=2.0)
        log_s = torch.log1p(s)
        d = dirs * 2.0 - 1.0
        log_i = torch.log1p(iats.clamp(0.0, self.max_iat))
        ls, li = log_s / self.log_size, log_i / self.log_iat
        scalars = torch.stack([size_lin, ls, d, li, d * size_lin]) * valid  # [5, B, N], arrival order
        lf = lengths.to(sizes.dtype)
        onehot = nn.functional.one_hot(proto.clamp(0, self.n_protos - 1), self.n_protos).to(sizes.dtype)
        stats = [scalars.sum(dim=2).t() / lf.unsqueeze(1), self.flow_stats(ls, dirs, li, valid, lf)]
        for emb in self.size_bag:
            # Responder sizes in the upper half of the table.
            bag = emb(size_bucket(s) + self.n_buckets * (dirs <= 0.5).long()) * valid.unsqueeze(2)  # [B, N, D]
            stats += [bag.sum(dim=1) / lf.unsqueeze(1), bag[:, 0]]
        summary = torch.cat(stats + [onehot, (lf / float(self.n)).clamp(max=1.0).unsqueeze(1)], dim=1)
        # Steps: each flow reversed within its length (padding stays behind it), time-major
        # [N, B, D] as the LSTMs read it. Reversing the few per-packet values before they are
        # expanded into the codes moves 7 numbers per packet instead of INPUT_DIM.
        # Steps past the batch's longest flow reach no state the experts hand on (each is read at
        # its flow's last packet): they are left out, so a batch of short flows costs short runs.
        span = int(lengths.max()) if lengths.numel() > 0 else n
        rev = torch.where(steps <= last.unsqueeze(1), last.unsqueeze(1) - steps, steps)[:, :span]
        per_step = torch.cat([scalars, log_s.unsqueeze(0), log_i.unsqueeze(0)])
        per_step = per_step.gather(2, rev.unsqueeze(0).expand(per_step.shape[0], -1, -1)).transpose(1, 2)  # [7, S, B]
        mask = valid[:, :span].t().unsqueeze(2)  # a prefix of each flow, so reversal leaves it as it is
        size_code = ((per_step[5].unsqueeze(2) - self.size_knots) / self.size_step).clamp(0.0, 1.0)
        iat_code = ((per_step[6].unsqueeze(2) - self.iat_knots) / self.iat_step).clamp(0.0, 1.0)
        parts = [per_step[:5].permute(1, 2, 0), size_code * mask, iat_code * mask,
                 onehot.unsqueeze(0).expand(span, -1, -1)]
        if self.embed_dim > 0:
            buckets = size_bucket(s.gather(1, rev).t())  # [S, B], reversed like the other steps
            for emb in self.size_embed:
                parts.append(emb(buckets) * mask)
        x = torch.cat(parts, dim=2)
        return x, summary, last

    def flow_stats(self, ls: torch.Tensor, dirs: torch.Tensor, li: torch.Tensor, valid: torch.Tensor,
                   lf: torch.Tensor) -> torch.Tensor:
        """Per-flow statistics from scaled log sizes/gaps (both in [0, 1]); [B, SUMMARY_DIM - 9]."""
        n = ls.shape[1]
        orig = valid * (dirs > 0.5).to(ls.dtype)
        resp = valid - orig
        cols: List[torch.Tensor] = []
        raw = torch.expm1(ls * self.log_size)
        # Bytes of up to MAX_N full-size packets: log scale with this cap maps into [0, ~1.4].
        log_total = math.log1p(self.max_size * float(self.n))
        for m in (valid, orig, resp):
            cols.append((m.sum(dim=1) / lf).unsqueeze(1))
            cols.append(_masked_stats(ls, m))
            cols.append((torch.log1p((raw * m).sum(dim=1)) / log_total).unsqueeze(1))
        gaps = valid.clone()
        gaps[:, 0] = 0.0
        cols.append(_masked_stats(li, gaps))
        dur = torch.log1p(torch.expm1(li * self.log_iat).mul(gaps).sum(dim=1)) / self.log_iat
        cols.append(dur.unsqueeze(1))
        k = min(self.first, n)
        first = (dirs[:, :k] * 2.0 - 1.0) * ls[:, :k] * valid[:, :k]
        first_gap = li[:, :k] * gaps[:, :k]
        if k < self.first:
            pad = torch.zeros(ls.shape[0], self.first - k, dtype=ls.dtype, device=ls.device)
            first = torch.cat([first, pad], dim=1)
            first_gap = torch.cat([first_gap, pad], dim=1)
        cols.append(first)
        cols.append(first_gap)
        return torch.cat(cols, dim=1)


def last_valid(out: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The LSTM output at each flow's last real step: out [N,B,H] (time-major), last [B] -> [B,H].

    An LSTM is causal, so this state is exactly what running on the unpadded
    flow gives: padding cannot change it, and no packing is needed.
    """
    return out[last, torch.arange(out.shape[1], device=out.device)]


class SummaryCode(nn.Module):
    """Piecewise-linear code of each summary feature over bins fitted on training data.

    A tree splits each statistic at any threshold; a small MLP fed the raw,
    scaled value has to build every step from ReLUs. Encoding each feature as
    ``bins`` ramps between its training quantiles (Gorishniy et al., "On
    Embeddings for Numerical Features in Tabular Deep Learning", NeurIPS 2022)
    hands the tower those steps. ``bins`` 0 turns it off (width 0). The edges
    are buffers, so they travel inside the TorchScript archive; until
    :meth:`fit` they are spread evenly over [0, 1].
    """

    def __init__(self, dim: int, bins: int) -> None:
        super().__init__()
        self.bins = int(bins)
        self.dim = int(dim) * self.bins
        edges = torch.linspace(0.0, 1.0, self.bins + 1).repeat(int(dim), 1)  # [D, bins + 1]
        self.register_buffer("lo", edges[:, :-1].clone())
        self.register_buffer("width", (edges[:, 1:] - edges[:, :-1]).clone())

    @torch.jit.unused
    def fit(self, summary: torch.Tensor) -> None:
        """Set each feature's edges to its quantiles over ``summary`` [F, D] (training flows)."""
        if self.bins == 0 or summary.shape[0] == 0:
            return
        q = torch.linspace(0.0, 1.0, self.bins + 1, dtype=torch.float64)
        edges = torch.quantile(summary.to(torch.float64), q, dim=0).T.to(self.lo.dtype)  # [D, bins + 1]
        with torch.no_grad():
            self.lo.copy_(edges[:, :-1])
            # A bin of zero width (a feature with few distinct values) becomes a step at its edge.
            self.width.copy_((edges[:, 1:] - edges[:, :-1]).clamp(min=1e-6))

    def forward(self, summary: torch.Tensor) -> torch.Tensor:
        if self.bins == 0:
            return summary.new_zeros(summary.shape[0], 0)
        code = ((summary.unsqueeze(2) - self.lo) / self.width).clamp(0.0, 1.0)
        return code.reshape(summary.shape[0], self.dim)
