"""Three ways to run E LSTM experts on one batch, kept for ``multa bench model --impl``.

The LMMoE uses :class:`Separate`. All three map the time-major steps x [N, B, D] and the last
valid index [B] to the experts' states [B, E, H].

* :class:`Separate` -- E ``nn.LSTM`` calls, each a fused oneDNN kernel on CPU;
* :class:`BlockDiagonal` -- one ``nn.LSTM`` of width E*H. With its recurrent
  matrix held block-diagonal (and the input matrix free) it is *exactly* E
  independent LSTMs, but every step multiplies the full (4EH x EH) matrix: E
  times the recurrent FLOPs of the experts;
* :class:`Grouped` -- a hand-written LSTM, all experts in one ``bmm`` per step.
  Python-level steps in TorchScript cost more than the FLOPs they save.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from multa_broker.model.preprocess import last_valid


class Separate(nn.Module):
    def __init__(self, width_in: int, experts: int, hidden: int) -> None:
        super().__init__()
        self.lstms = nn.ModuleList([nn.LSTM(width_in, hidden) for _ in range(experts)])

    def forward(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        outs: List[torch.Tensor] = []
        for lstm in self.lstms:
            o, _ = lstm(x)
            outs.append(last_valid(o, last))
        return torch.stack(outs, 1)


class BlockDiagonal(nn.Module):
    def __init__(self, width_in: int, experts: int, hidden: int) -> None:
        super().__init__()
        self.experts, self.hidden = experts, hidden
        self.lstm = nn.LSTM(width_in, experts * hidden)
        mask = torch.block_diag(*[torch.ones(hidden, hidden)] * experts).repeat(4, 1)
        with torch.no_grad():
            self.lstm.weight_hh_l0.mul_(mask)

    def forward(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        o, _ = self.lstm(x)
        return last_valid(o, last).view(x.shape[1], self.experts, self.hidden)


class Grouped(nn.Module):
    def __init__(self, width_in: int, experts: int, hidden: int) -> None:
        super().__init__()
        self.experts, self.hidden = experts, hidden
        self.w_ih = nn.Parameter(torch.randn(width_in, experts * 4 * hidden) * 0.1)
        self.b = nn.Parameter(torch.zeros(experts * 4 * hidden))
        self.w_hh = nn.Parameter(torch.randn(experts, hidden, 4 * hidden) * 0.1)

    def forward(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        steps, b, e, h = x.shape[0], x.shape[1], self.experts, self.hidden
        xw = (x @ self.w_ih + self.b).view(steps, b, e, 4 * h).permute(0, 2, 1, 3)
        hid = torch.zeros(e, b, h)
        cell = torch.zeros(e, b, h)
        states: List[torch.Tensor] = []
        for t in range(steps):
            i, f, g, o = (xw[t] + torch.bmm(hid, self.w_hh)).chunk(4, 2)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            hid = torch.sigmoid(o) * torch.tanh(cell)
            states.append(hid)
        out = torch.stack(states, 2)  # [E, B, N, H]
        idx = last.view(1, -1, 1, 1).expand(e, -1, 1, h)
        return out.gather(2, idx).squeeze(2).transpose(0, 1)


IMPLEMENTATIONS = {"separate LSTMs (used)": Separate, "block-diagonal LSTM": BlockDiagonal, "grouped loop": Grouped}
