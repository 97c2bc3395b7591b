"""Model-side preprocessing: raw packet sequences to LSTM inputs.

The exported model takes the raw arrays of :func:`multa_broker.flow.encode`
(sizes in bytes, directions 0/1, gaps in microseconds, lengths, protocol
index), so training, ``multa classify`` and the bridge cannot disagree on
scaling: it lives in the TorchScript archive.

Per packet step (zeroed past the flow's length):

* ``size_lin`` -- size / 1500, clipped at 2 (Ethernet MTU scale; jumbo/TSO
  frames saturate instead of dominating);
* ``size_log`` -- log1p(size) / log(65536) (keeps resolution for large frames);
* ``dir``      -- +1 originator, -1 responder;
* ``iat_log``  -- log1p(microseconds) / log1p(one day), in [0, 1];
* ``signed``   -- dir * size_lin (the size seen from the originator's side);
* protocol one-hot (tcp, udp, icmp), repeated at every step.

The summary (gate input) is the masked mean of the step features, the
protocol one-hot and the flow's length / N (the model's N). Ports are never an input.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from multa_broker.flow import MAX_IAT_US, MAX_SIZE, PROTOS

STEP_FEATURES = 5
N_PROTOS = len(PROTOS)
#: Width of the per-step LSTM input.
INPUT_DIM = STEP_FEATURES + N_PROTOS
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

    def forward(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
                lengths: torch.Tensor, proto: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = sizes.shape[1]
        # A flow has at least one packet; clamp so a bad length cannot index out of range.
        lengths = lengths.clamp(1, n)
        steps = torch.arange(n, device=sizes.device).unsqueeze(0)
        mask = (steps < lengths.unsqueeze(1)).to(sizes.dtype)
        s = sizes.clamp(0.0, self.max_size)
        size_lin = (s / 1500.0).clamp(max=2.0)
        size_log = torch.log1p(s) / self.log_size
        d = dirs * 2.0 - 1.0
        iat = torch.log1p(iats.clamp(0.0, self.max_iat)) / self.log_iat
        feats = torch.stack([size_lin, size_log, d, iat, d * size_lin], dim=2) * mask.unsqueeze(2)
        onehot = nn.functional.one_hot(proto.clamp(0, self.n_protos - 1), self.n_protos).to(sizes.dtype)
        x = torch.cat([feats, onehot.unsqueeze(1).expand(-1, n, -1)], dim=2)
        lf = lengths.to(sizes.dtype)
        mean = feats.sum(dim=1) / lf.unsqueeze(1)
        summary = torch.cat([mean, onehot, (lf / float(self.n)).clamp(max=1.0).unsqueeze(1)], dim=1)
        return x, summary, lengths - 1


def last_valid(out: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The LSTM output at each flow's last real packet: out [B,N,H], last [B] -> [B,H].

    An LSTM is causal, so this state is exactly what running on the unpadded
    flow gives: padding cannot change it, and no packing is needed.
    """
    idx = last.view(-1, 1, 1).expand(-1, 1, out.shape[2])
    return out.gather(1, idx).squeeze(1)
