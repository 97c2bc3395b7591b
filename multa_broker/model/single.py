"""The status quo baseline: one LSTM classifier per task.

Same preprocessing and output contract as the LMMoE (a list with one
probability tensor), one LSTM of width ``hidden`` and the same tower shape,
trained with the same loop, budget and early stopping. Deploying these means
running one model per task on every flow, which ``multa bench model``
measures against the single LMMoE.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional

import torch
from torch import nn

from multa_broker.flow import DEFAULT_N
from multa_broker.model.lmmoe import FlowModel, Tower, init_lstm
from multa_broker.model.preprocess import last_valid


@dataclass
class SingleConfig:
    """One task's model; ``tasks`` holds exactly that task."""

    tasks: dict[str, list[str]] = field(default_factory=dict)
    n: int = DEFAULT_N
    hidden: int = 64
    tower: int = 32
    dropout: float = 0.1
    #: The tower also reads the per-flow summary statistics (as the LMMoE's towers do).
    stats: bool = True
    #: ... and the host context (as the LMMoE's gates and towers do).
    context: bool = False
    #: ... and the summary's piecewise-linear code (LMMoEConfig.summary_bins).
    summary_bins: int = 0
    #: ... and the per-packet size embedding (LMMoEConfig.size_embed).
    size_embed: int = 0
    #: ... and the bag of packet sizes (LMMoEConfig.size_bag).
    size_bag: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class SingleTaskLSTM(FlowModel):
    def __init__(self, cfg: SingleConfig) -> None:
        if len(cfg.tasks) != 1:
            raise ValueError("a single-task model has exactly one task")
        super().__init__(cfg.n, cfg.context, cfg.summary_bins if cfg.stats else 0, 1, cfg.size_embed, cfg.size_bag)
        self.task_names: List[str] = list(cfg.tasks)
        self.lstm = init_lstm(nn.LSTM(self.pre.step_dim, cfg.hidden))  # time-major input
        self.stats = bool(cfg.stats)
        self.tower = Tower(cfg.hidden + (self.summary_dim + self.summary_code.dim if cfg.stats else 0), cfg.tower,
                           len(next(iter(cfg.tasks.values()))), cfg.dropout)

    def logits(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
               lengths: torch.Tensor, proto: torch.Tensor, ctx: Optional[torch.Tensor] = None,
               has_ctx: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        x, summary, last = self.features(sizes, dirs, iats, lengths, proto, ctx, has_ctx)
        out, _ = self.lstm(x)
        h = last_valid(out, last)
        if self.stats:
            h = torch.cat([h, summary, self.summary_code(summary)], dim=1)
        return [self.tower(h)]
