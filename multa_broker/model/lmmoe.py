"""The LMMoE: LSTM experts shared by all tasks, a softmax gate and a tower per task.

Multi-gate mixture-of-experts (Ma et al., KDD 2018) with LSTM experts, as in
MulTA (Guo et al., GLOBECOM 2023). Every expert reads the whole preprocessed
packet sequence; each task's gate mixes the experts' final states with
weights computed from a per-flow summary; the task's tower (a small MLP)
turns the mixture into class logits.

Speed choices (measured, docs/model.md): experts run as separate fused
``nn.LSTM`` calls (oneDNN kernels on CPU) -- a hand-written grouped LSTM loop
in TorchScript was 5-10x slower, and a single LSTM of width E*H with a
block-diagonal recurrent matrix pays E times the recurrent FLOPs. Flows
shorter than N are handled by reading each expert's state at the flow's last
real packet (exact for a causal LSTM) instead of packing.

The exported module's ``forward`` takes the raw tensors of
:func:`multa_broker.flow.encode` and returns one ``[B, C_t]`` probability
tensor per task, in task order; ``logits`` is the same before softmax.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

from multa_broker.flow import DEFAULT_N
from multa_broker.model.preprocess import (CONTEXT_DIM, INPUT_DIM, SUMMARY_DIM, ContextInput, Preprocess, SummaryCode,
                                           last_valid)


@dataclass
class LMMoEConfig:
    """Architecture of one LMMoE; ``tasks`` maps task -> class names, in output order."""

    tasks: dict[str, list[str]] = field(default_factory=dict)
    n: int = DEFAULT_N
    experts: int = 3
    hidden: int = 32
    tower: int = 32
    dropout: float = 0.1
    #: Towers also read the per-flow summary statistics (beside the expert mixture).
    stats: bool = True
    #: Gates and towers also read the flow's host context (multa_broker.context).
    context: bool = False
    #: With ``stats``, towers also read each summary feature's piecewise-linear code over this
    #: many bins at its training quantiles (preprocess.SummaryCode); 0 turns it off.
    summary_bins: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def init_lstm(lstm: nn.LSTM) -> nn.LSTM:
    """Forget-gate bias 1 (Jozefowicz et al., 2015): early packets survive the first epochs."""
    h = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[h:2 * h].fill_(1.0)
            elif name.startswith("bias_hh"):
                p[h:2 * h].fill_(0.0)
    return lstm


class Tower(nn.Module):
    """A task's MLP: [B, H] -> [B, C] logits."""

    def __init__(self, width_in: int, width: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(width_in, width), nn.ReLU(),
                                 nn.Linear(width, classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class TaskHead(nn.Module):
    """One task's gate (softmax over experts, from the flow summary) and tower."""

    def __init__(self, experts: int, hidden: int, tower: int, classes: int, dropout: float,
                 stats: bool = True, summary_dim: int = SUMMARY_DIM, code_dim: int = 0) -> None:
        super().__init__()
        self.stats = bool(stats)
        self.gate = nn.Linear(summary_dim, experts)
        self.tower = Tower(hidden + (summary_dim + code_dim if stats else 0), tower, classes, dropout)

    def forward(self, summary: torch.Tensor, expert_out: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        g = torch.softmax(self.gate(summary), dim=1)              # [B, E]
        mixed = torch.bmm(g.unsqueeze(1), expert_out).squeeze(1)  # [B, H]
        if self.stats:
            mixed = torch.cat([mixed, summary, code], dim=1)
        return self.tower(mixed)


def probabilities(logits: List[torch.Tensor], temperature: torch.Tensor) -> List[torch.Tensor]:
    """Temperature-scaled softmax per task (temperature: [T], fitted on validation)."""
    out: List[torch.Tensor] = []
    for i, z in enumerate(logits):
        out.append(torch.softmax(z / temperature[i], dim=1))
    return out


class FlowModel(nn.Module):
    """What every sequence model here shares: the preprocessing, the host context appended to the
    flow summary when the model reads it, the summary's code, and a temperature-scaled ``forward``.
    Subclasses build their experts and towers on ``summary_dim`` and define ``logits``."""

    def __init__(self, n: int, context: bool, summary_bins: int, temperatures: int) -> None:
        super().__init__()
        self.n = int(n)
        self.pre = Preprocess(n)
        self.context = bool(context)
        self.ctx_in = ContextInput()
        self.summary_dim = SUMMARY_DIM + (CONTEXT_DIM if context else 0)
        self.summary_code = SummaryCode(self.summary_dim, summary_bins)
        self.register_buffer("temperature", torch.ones(temperatures))

    def features(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor, lengths: torch.Tensor,
                 proto: torch.Tensor, ctx: Optional[torch.Tensor] = None, has_ctx: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps, the per-flow summary (host context appended when the model reads it), last index."""
        x, summary, last = self.pre(sizes, dirs, iats, lengths, proto)
        if self.context:
            summary = torch.cat([summary, self.ctx_in(ctx, has_ctx, summary.shape[0], summary.dtype)], dim=1)
        return x, summary, last

    def logits(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
               lengths: torch.Tensor, proto: torch.Tensor, ctx: Optional[torch.Tensor] = None,
               has_ctx: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        raise NotImplementedError

    def forward(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
                lengths: torch.Tensor, proto: torch.Tensor, ctx: Optional[torch.Tensor] = None,
                has_ctx: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        return probabilities(self.logits(sizes, dirs, iats, lengths, proto, ctx, has_ctx), self.temperature)


class LMMoE(FlowModel):
    def __init__(self, cfg: LMMoEConfig) -> None:
        if not cfg.tasks:
            raise ValueError("an LMMoE needs at least one task")
        super().__init__(cfg.n, cfg.context, cfg.summary_bins if cfg.stats else 0, len(cfg.tasks))
        self.task_names: List[str] = list(cfg.tasks)
        self.experts = nn.ModuleList(
            [init_lstm(nn.LSTM(INPUT_DIM, cfg.hidden, batch_first=True)) for _ in range(cfg.experts)])
        self.heads = nn.ModuleList(
            [TaskHead(cfg.experts, cfg.hidden, cfg.tower, len(c), cfg.dropout, cfg.stats, self.summary_dim,
                      self.summary_code.dim)
             for c in cfg.tasks.values()])

    def logits(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
               lengths: torch.Tensor, proto: torch.Tensor, ctx: Optional[torch.Tensor] = None,
               has_ctx: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        x, summary, last = self.features(sizes, dirs, iats, lengths, proto, ctx, has_ctx)
        code = self.summary_code(summary)
        states: List[torch.Tensor] = []
        for expert in self.experts:
            out, _ = expert(x)
            states.append(last_valid(out, last))
        expert_out = torch.stack(states, dim=1)                   # [B, E, H]
        return [head(summary, expert_out, code) for head in self.heads]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
