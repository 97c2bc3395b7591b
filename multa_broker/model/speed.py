"""CPU throughput of models on flow batches: the figures tune and bench report.

Models in a *set* run one after another on the same batch (how a deployment of
one model per task classifies a flow); a set's flows/s is the batch size over
the set's total time. Sets are timed interleaved, repeat by repeat, so a
noisy neighbour slows all of them alike; the figure is the median.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import numpy as np
import torch

from multa_broker.flow import EncodedBatch


def synthetic_inputs(batch: int, n: int, seed: int = 0) -> EncodedBatch:
    """Random but legal flows (sizes 40..1500, 1..n packets) when no dataset is at hand."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, n + 1, batch)
    valid = np.arange(n)[None, :] < lengths[:, None]
    sizes = (rng.integers(40, 1501, (batch, n)) * valid).astype(np.float32)
    dirs = ((rng.random((batch, n)) < 0.5) * valid).astype(np.float32)
    iats = (rng.exponential(5e4, (batch, n)) * valid).astype(np.float32)
    iats[:, 0] = 0
    return EncodedBatch(sizes, dirs, iats, lengths.astype(np.int64), rng.integers(0, 3, batch).astype(np.int64))


def take(batch: EncodedBatch, size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``size`` rows drawn (with replacement when needed) from ``batch``, as model input tensors."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(batch), size, replace=size > len(batch))
    return tuple(torch.from_numpy(np.ascontiguousarray(a[idx])) for a in
                 (batch.sizes, batch.dirs, batch.iats, batch.lengths, batch.proto))


def flows_per_second(sets: dict[str, Sequence[Callable[..., object]]], inputs: tuple[torch.Tensor, ...],
                     repeats: int = 15, min_seconds: float = 0.02) -> dict[str, float]:
    """Median flows/s of each set of models on ``inputs`` (one batch), timed interleaved."""
    b = int(inputs[0].shape[0])
    times: dict[str, list[float]] = {k: [] for k in sets}
    with torch.inference_mode():
        calls = 1
        for models in sets.values():  # warm up (TorchScript profiles the first calls)
            for _ in range(3):
                for m in models:
                    m(*inputs)
        # Small batches run many calls per timing so the clock's resolution does not matter.
        probe = time.perf_counter()
        for m in next(iter(sets.values())):
            m(*inputs)
        one = max(time.perf_counter() - probe, 1e-6)
        calls = max(1, int(min_seconds / one))
        for _ in range(repeats):
            for name, models in sets.items():
                start = time.perf_counter()
                for _ in range(calls):
                    for m in models:
                        m(*inputs)
                times[name].append((time.perf_counter() - start) / calls)
    return {name: b / statistics.median(ts) for name, ts in times.items()}
