"""Rate-limited warnings: a flood of bad messages must not become a flood of log lines."""

from __future__ import annotations

import logging
import time
from typing import Callable


class RateLimitedLog:
    """Logs the first message of each kind, then at most one per ``interval`` seconds.

    A message that follows suppressed ones says how many were suppressed.
    """

    def __init__(self, logger: logging.Logger, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, msg: str) -> bool:
        """Log ``msg`` unless a ``kind`` message was logged less than ``interval`` ago; True if logged."""
        return self.log(logging.WARNING, kind, msg)

    def info(self, kind: str, msg: str) -> bool:
        """Like :meth:`warning`, at INFO level (connection up/down lines of a flapping peer)."""
        return self.log(logging.INFO, kind, msg)

    def log(self, level: int, kind: str, msg: str) -> bool:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        n = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        self.logger.log(level, "%s%s", msg, f" ({n} more like it not logged)" if n else "")
        return True
