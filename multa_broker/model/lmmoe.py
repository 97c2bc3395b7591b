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

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

from multa_broker.flow import DEFAULT_N
from multa_broker.model.preprocess import (CONTEXT_DIM, SUMMARY_DIM, ContextInput, Preprocess, SummaryCode,
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
    #: Width of the learnt per-packet size embedding the experts read (preprocess.size_bucket);
    #: 0 turns it off.
    size_embed: int = 0
    #: Width of the learnt bag of packet sizes the gates and towers read (preprocess.Preprocess);
    #: 0 turns it off.
    size_bag: int = 0
    #: Tasks whose gate and tower read the bag (None: every task).
    size_bag_tasks: Optional[List[str]] = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def reads_bag(size_bag_tasks: Optional[List[str]], task: str) -> bool:
    """Whether ``task``'s gate and tower read the bag of sizes, given ``size_bag_tasks`` (None: every
    task): the one rule for the LMMoE's heads and the single-task baselines alike."""
    return size_bag_tasks is None or task in size_bag_tasks


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


class ColumnMask(nn.Module):
    """Zeroes summary columns [start, stop) and, where the summary is coded over ``bins``, their code."""

    def __init__(self, summary_dim: int, code_dim: int, start: int, stop: int, bins: int) -> None:
        super().__init__()
        keep, keep_code = torch.ones(summary_dim), torch.ones(code_dim)
        keep[start:stop] = 0.0
        keep_code[start * bins:stop * bins] = 0.0
        self.register_buffer("keep", keep)
        self.register_buffer("keep_code", keep_code)

    def forward(self, summary: torch.Tensor, code: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return summary * self.keep, code * self.keep_code


class TaskHead(nn.Module):
    """One task's gate (softmax over experts, from the flow summary) and tower.

    ``hidden_columns`` (start, stop) are summary columns this task does not read (a bag of sizes
    kept for other tasks): zeroed in its input, and in their code where the summary is coded
    (``code_bins``)."""

    def __init__(self, experts: int, hidden: int, tower: int, classes: int, dropout: float,
                 stats: bool = True, summary_dim: int = SUMMARY_DIM, code_dim: int = 0,
                 hidden_columns: Tuple[int, int] = (0, 0), code_bins: int = 0) -> None:
        super().__init__()
        self.stats = bool(stats)
        self.summary_dim, self.code_dim = int(summary_dim), int(code_dim)
        self.gate = nn.Linear(summary_dim, experts)
        self.tower = Tower(hidden + (summary_dim + code_dim if stats else 0), tower, classes, dropout)
        start, stop = hidden_columns
        # A list of none or one, as Preprocess.size_embed: a head that reads every column keeps the
        # state dict it always had.
        self.mask = nn.ModuleList([ColumnMask(summary_dim, code_dim, start, stop, code_bins)] if stop > start else [])

    def keeps(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """1 for each summary and code column the head reads, 0 for each it does not."""
        if len(self.mask):
            return self.mask[0].keep, self.mask[0].keep_code
        return torch.ones(self.summary_dim), torch.ones(self.code_dim)

    def forward(self, summary: torch.Tensor, expert_out: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        for m in self.mask:
            summary, code = m(summary, code)
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

    def __init__(self, n: int, context: bool, summary_bins: int, temperatures: int, size_embed: int = 0,
                 size_bag: int = 0) -> None:
        super().__init__()
        self.n = int(n)
        self.pre = Preprocess(n, size_embed, size_bag)
        self.context = bool(context)
        self.ctx_in = ContextInput()
        self.summary_dim = self.pre.summary_dim + (CONTEXT_DIM if context else 0)
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


class ExpertModel(FlowModel):
    """A flow model with E expert LSTMs over the same steps (``self.experts``, set by the subclass)."""

    def expert_states(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Every expert over the steps x [N, B, D]; their states at each flow's last step, [B, E, H]."""
        states: List[torch.Tensor] = []
        for expert in self.experts:
            out, _ = expert(x)
            states.append(last_valid(out, last))
        return torch.stack(states, dim=1)


class LMMoE(ExpertModel):
    def __init__(self, cfg: LMMoEConfig) -> None:
        if not cfg.tasks:
            raise ValueError("an LMMoE needs at least one task")
        super().__init__(cfg.n, cfg.context, cfg.summary_bins if cfg.stats else 0, len(cfg.tasks), cfg.size_embed,
                         cfg.size_bag)
        self.task_names: List[str] = list(cfg.tasks)
        self.experts = nn.ModuleList(
            [init_lstm(nn.LSTM(self.pre.step_dim, cfg.hidden)) for _ in range(cfg.experts)])  # time-major input
        bag = self.pre.bag_columns
        self.heads = nn.ModuleList(
            [TaskHead(cfg.experts, cfg.hidden, cfg.tower, len(c), cfg.dropout, cfg.stats, self.summary_dim,
                      self.summary_code.dim,
                      (0, 0) if reads_bag(cfg.size_bag_tasks, t) else bag,
                      self.summary_code.bins)
             for t, c in cfg.tasks.items()])

    def logits(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
               lengths: torch.Tensor, proto: torch.Tensor, ctx: Optional[torch.Tensor] = None,
               has_ctx: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        x, summary, last = self.features(sizes, dirs, iats, lengths, proto, ctx, has_ctx)
        expert_out = self.expert_states(x, last)
        code = self.summary_code(summary)
        return [head(summary, expert_out, code) for head in self.heads]

    def export_form(self) -> "FusedLMMoE":
        """The module ``store.export`` scripts: the same function with the task heads fused."""
        return FusedLMMoE(self)


class FusedLMMoE(ExpertModel):
    """An LMMoE for inference, its task heads run as one batch of matrix products.

    Exactly the function of the :class:`LMMoE` it is built from (eval mode: the
    towers' dropout is off), up to float rounding: the gates are one linear map
    with a softmax per task, the towers' first layers one ``bmm`` over the
    mixtures plus one product with the shared summary, their last layers one
    ``bmm`` into the widest task's classes, the narrower tasks' extra logits
    held at -1e30 so the softmax gives them 0: a few ops instead of a dozen
    per task (docs/model.md, "Running the experts fast"). Training keeps the
    per-task :class:`TaskHead` modules, which the separate paradigm updates
    one task at a time.
    """

    def __init__(self, source: LMMoE) -> None:
        heads = list(source.heads)
        super().__init__(source.n, source.context, source.summary_code.bins, len(heads), source.pre.embed_dim,
                         source.pre.bag_dim)
        self.task_names: List[str] = list(source.task_names)
        self.load_state_dict({k: v for k, v in source.state_dict().items()
                              if k.split(".")[0] in ("pre", "summary_code", "temperature")})
        self.experts = nn.ModuleList([copy.deepcopy(e) for e in source.experts])
        first = [h.tower.net[1] for h in heads]
        final = [h.tower.net[3] for h in heads]
        hidden = source.experts[0].hidden_size
        self.n_tasks, self.n_experts = len(heads), len(source.experts)
        self.stats = heads[0].stats
        self.classes: List[int] = [f.out_features for f in final]
        width = max(self.classes)
        with torch.no_grad():
            # A column a head does not read gets a zero weight: the same as zeroing it in its input.
            keeps = [h.keeps() for h in heads]
            self.register_buffer("gate_w", torch.cat([h.gate.weight * k[0] for h, k in zip(heads, keeps)]).t()
                                 .contiguous())
            self.register_buffer("gate_b", torch.cat([h.gate.bias for h in heads]))
            self.register_buffer("mix_w", torch.stack([f.weight[:, :hidden].t() for f in first]).contiguous())
            side = ([f.weight[:, hidden:] * torch.cat(k) for f, k in zip(first, keeps)]
                    if self.stats else [f.weight[:, :0] for f in first])
            self.register_buffer("side_w", torch.cat(side).t().contiguous())  # [summary + code, T * tower]
            self.register_buffer("first_b", torch.stack([f.bias for f in first]).unsqueeze(1))
            out_w = torch.zeros(len(heads), first[0].out_features, width)
            out_b = torch.full((len(heads), 1, width), -1e30)
            for t, f in enumerate(final):
                out_w[t, :, :f.out_features] = f.weight.t()
                out_b[t, 0, :f.out_features] = f.bias
            self.register_buffer("out_w", out_w)
            self.register_buffer("out_b", out_b)
        self.eval()

    def padded_logits(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
                      lengths: torch.Tensor, proto: torch.Tensor, ctx: Optional[torch.Tensor] = None,
                      has_ctx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Every task's logits, [T, B, widest task's classes]; a narrower task's extra columns -1e30."""
        x, summary, last = self.features(sizes, dirs, iats, lengths, proto, ctx, has_ctx)
        expert_out = self.expert_states(x, last)                                     # [B, E, H]
        b = summary.shape[0]
        gates = torch.softmax(torch.addmm(self.gate_b, summary, self.gate_w).view(b, self.n_tasks, self.n_experts), 2)
        # A broadcast product, not bmm: B products of [T, E] x [E, H] are too small for a GEMM each.
        mixed = (gates.transpose(0, 1).unsqueeze(3) * expert_out.unsqueeze(0)).sum(dim=2)  # [T, B, H]
        hid = torch.bmm(mixed, self.mix_w) + self.first_b                                   # [T, B, tower]
        if self.stats:
            side = torch.cat([summary, self.summary_code(summary)], dim=1)
            hid = hid + torch.mm(side, self.side_w).view(b, self.n_tasks, -1).transpose(0, 1)
        return torch.baddbmm(self.out_b, torch.relu(hid), self.out_w)

    @torch.jit.export
    def logits(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
               lengths: torch.Tensor, proto: torch.Tensor, ctx: Optional[torch.Tensor] = None,
               has_ctx: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        # Exported: the forward below does not call it, and evaluation reads a stored model's logits.
        z = self.padded_logits(sizes, dirs, iats, lengths, proto, ctx, has_ctx)
        return [z[t, :, :c] for t, c in enumerate(self.classes)]

    def forward(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
                lengths: torch.Tensor, proto: torch.Tensor, ctx: Optional[torch.Tensor] = None,
                has_ctx: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        z = self.padded_logits(sizes, dirs, iats, lengths, proto, ctx, has_ctx)
        p = torch.softmax(z / self.temperature.view(-1, 1, 1), dim=2)
        return [p[t, :, :c] for t, c in enumerate(self.classes)]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
