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

The summary (gate input) is the masked mean of the five scalar step features,
the protocol one-hot and the flow's length / N (the model's N). Ports are
never an input.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from multa_broker.flow import MAX_IAT_US, MAX_SIZE, PROTOS

STEP_FEATURES = 5
SIZE_RAMPS = 16
IAT_RAMPS = 12
N_PROTOS = len(PROTOS)
#: Width of the per-step LSTM input.
INPUT_DIM = STEP_FEATURES + SIZE_RAMPS + IAT_RAMPS + N_PROTOS
#: Width of the per-flow summary the gates read.
SUMMARY_DIM = STEP_FEATURES + N_PROTOS + 1


class Preprocess(nn.Module):
    """Raw tensors -> (steps [B,N,INPUT_DIM], summary [B,SUMMARY_DIM], last index [B])."""

    def __init__(self, n: int) -> None:
        super().__init__()
        # The model's N, not the batch's width: a flow padded further is the same flow.
        self.n = int(n)
        self.n_protos = N_PROTOS
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

    def forward(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
                lengths: torch.Tensor, proto: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = sizes.shape[1]
        # A flow has at least one packet; clamp so a bad length cannot index out of range.
        lengths = lengths.clamp(1, n)
        last = lengths - 1
        steps = torch.arange(n, device=sizes.device).unsqueeze(0)
        mask = (steps < lengths.unsqueeze(1)).to(sizes.dtype).unsqueeze(2)
        s = sizes.clamp(0.0, self.max_size)
        size_lin = (s / 1500.0).clamp(max=2.0)
        log_s = torch.log1p(s)
        d = dirs * 2.0 - 1.0
        log_i = torch.log1p(iats.clamp(0.0, self.max_iat))
        feats = torch.stack([size_lin, log_s / self.log_size, d, log_i / self.log_iat, d * size_lin], dim=2) * mask
        size_code = ((log_s.unsqueeze(2) - self.size_knots) / self.size_step).clamp(0.0, 1.0)
        iat_code = ((log_i.unsqueeze(2) - self.iat_knots) / self.iat_step).clamp(0.0, 1.0)
        onehot = nn.functional.one_hot(proto.clamp(0, self.n_protos - 1), self.n_protos).to(sizes.dtype)
        x = torch.cat([feats, size_code * mask, iat_code * mask, onehot.unsqueeze(1).expand(-1, n, -1)], dim=2)
        # Reverse each flow within its length; padding stays behind it.
        rev = torch.where(steps <= last.unsqueeze(1), last.unsqueeze(1) - steps, steps)
        x = x.gather(1, rev.unsqueeze(2).expand(-1, -1, x.shape[2]))
        lf = lengths.to(sizes.dtype)
        mean = feats.sum(dim=1) / lf.unsqueeze(1)
        summary = torch.cat([mean, onehot, (lf / float(self.n)).clamp(max=1.0).unsqueeze(1)], dim=1)
        return x, summary, last


def last_valid(out: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The LSTM output at each flow's last real step: out [B,N,H], last [B] -> [B,H].

    An LSTM is causal, so this state is exactly what running on the unpadded
    flow gives: padding cannot change it, and no packing is needed.
    """
    idx = last.view(-1, 1, 1).expand(-1, 1, out.shape[2])
    return out.gather(1, idx).squeeze(1)
