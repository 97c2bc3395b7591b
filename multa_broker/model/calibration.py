"""Open-set scores: temperature scaling and per-task rejection thresholds.

A task's score is the max softmax probability after dividing the logits by a
temperature fitted on validation (Guo et al., 2017: one scalar per task,
minimising NLL; it never changes the argmax). Below the task's threshold the
label becomes ``unknown``.
"""

from __future__ import annotations

import numpy as np
import torch

#: Fraction of correct validation predictions a default threshold may reject.
DEFAULT_REJECT = 0.05
#: Threshold used when validation has too few correct predictions to pick one.
FALLBACK_THRESHOLD = 0.5


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (1.0 when there is nothing to fit)."""
    if len(y) < 10:
        return 1.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    temp = float(log_t.exp().item())
    # A degenerate fit (separable validation set) drives T to 0 or infinity.
    return float(np.clip(temp, 0.05, 20.0))


def pick_threshold(probs: np.ndarray, y: np.ndarray, reject: float = DEFAULT_REJECT) -> float:
    """Score below which at most ``reject`` of the correct validation predictions fall."""
    correct = probs.argmax(axis=1) == y
    if correct.sum() < 20:
        return FALLBACK_THRESHOLD
    return float(np.quantile(probs.max(axis=1)[correct], reject))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
