"""Train/validation/test assignment by capture file, never by flow.

Flows of one capture share hosts, sessions and timing, so splitting by flow
would leak. A plain random split by capture, though, can put every capture
of a rare class into one split, or let one huge capture be most of a split.
So captures are placed rarest class first, smallest first among equals. A
class's first captures go one to each split (train, then test, then
validation), so that a class seen in three or more captures can be measured
at all; every later capture goes to the split that leaves the flows of its
classes placed so far closest to the target shares. A seeded shuffle breaks
the remaining ties, so the result is reproducible.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Hashable, Mapping, Sequence

from multa_broker.dataset.format import SPLITS

DEFAULT_RATIOS = (0.7, 0.15, 0.15)
# Preference when a rare class is spread over the splits (train, val, test).
_SPREAD_ORDER = (3.0, 1.0, 2.0)


def assign_splits(
    capture_classes: Mapping[str, Counter],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 1,
    fixed: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Map each capture to a split index (into SPLITS).

    ``capture_classes``: capture -> Counter of (task, class) -> flows;
    ``fixed``: captures whose split is already decided (others in it are ignored).
    """
    if len(ratios) != len(SPLITS) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must be {len(SPLITS)} numbers summing to 1, got {list(ratios)}")
    k = len(SPLITS)
    rng = random.Random(seed)
    captures = sorted(capture_classes)
    rng.shuffle(captures)
    carriers: Counter = Counter()  # captures per class
    flows: Counter = Counter()  # flows per class
    for cap in captures:
        carriers.update(set(capture_classes[cap]))
        flows.update(capture_classes[cap])

    def rarest(cap: str) -> Hashable | None:
        classes = capture_classes[cap]
        return min(classes, key=lambda c: (carriers[c], str(c))) if classes else None

    def order(cap: str) -> tuple:
        r = rarest(cap)
        size = sum(capture_classes[cap].values())
        if r is None:
            return (1 << 30, size)
        # Classes in fewer captures than splits: the biggest capture trains.
        return (carriers[r], size if carriers[r] >= k else -size)

    captures.sort(key=order)  # stable: the shuffle breaks ties
    have_caps: dict[Hashable, list[int]] = defaultdict(lambda: [0] * k)
    have_flows: dict[Hashable, list[int]] = defaultdict(lambda: [0] * k)
    total = [0] * k
    out: dict[str, int] = {}

    def place(cap: str, best: int) -> None:
        out[cap] = best
        total[best] += 1
        for c, n_flows in capture_classes[cap].items():
            have_caps[c][best] += 1
            have_flows[c][best] += n_flows

    pinned = {c: int(i) for c, i in (fixed or {}).items() if c in capture_classes}
    if any(not 0 <= i < k for i in pinned.values()):
        raise ValueError(f"fixed splits must be indices 0..{k - 1}")
    for cap in captures:
        if cap in pinned:
            place(cap, pinned[cap])
    for cap in captures:
        if cap in pinned:
            continue
        classes = capture_classes[cap]
        r = rarest(cap)
        if r is None:
            n = len(captures)
            deficit = [(ratios[i] * n - total[i]) / (ratios[i] * n) if ratios[i] else -1.0 for i in range(k)]
        elif any(ratios[i] > 0 and have_caps[r][i] == 0 for i in range(k)):
            # Spread the rarest class first: train, then test, then validation.
            deficit = [_SPREAD_ORDER[i] if ratios[i] > 0 and have_caps[r][i] == 0 else -1.0 for i in range(k)]
        else:
            # The split that leaves this capture's classes closest to the
            # target shares of their flows (squared error over the splits).
            deficit = [0.0] * k
            for i in range(k):
                for c, n_flows in classes.items():
                    placed = sum(have_flows[c]) + n_flows
                    for j in range(k):
                        share = (have_flows[c][j] + (n_flows if j == i else 0)) / placed
                        deficit[i] -= (share - ratios[j]) ** 2
        place(cap, max(range(k), key=lambda i: (deficit[i], ratios[i])))
    return out
