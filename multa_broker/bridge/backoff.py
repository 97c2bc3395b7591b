"""Exponential backoff with jitter, capped: the wait between reconnect attempts."""

from __future__ import annotations

import random
from typing import Callable

from multa_broker.bridge.config import ReconnectConfig


class Backoff:
    """``next()`` returns initial, initial*m, initial*m^2, ... up to max, each +- jitter.

    Jitter keeps a fleet of bridges from reconnecting to a restarted Zeek in lockstep.
    """

    def __init__(self, cfg: ReconnectConfig, rand: Callable[[], float] = random.random) -> None:
        self.cfg = cfg
        self._rand = rand
        self._current = cfg.initial_s

    def next(self) -> float:
        base = min(self._current, self.cfg.max_s)
        self._current = min(self._current * self.cfg.multiplier, self.cfg.max_s)
        return max(0.0, base * (1.0 + self.cfg.jitter * (2.0 * self._rand() - 1.0)))

    def reset(self) -> None:
        self._current = self.cfg.initial_s
