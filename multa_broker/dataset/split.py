"""Train/validation/test assignment by capture file, never by flow.

Flows of one capture share hosts, sessions and timing, so splitting by flow
would leak. A plain random split by capture, though, can put every capture
of a rare class into one split. So captures are placed rarest-class first,
each into the split that most lacks that class relative to its target
share; ties are broken by a seeded shuffle, so the result is reproducible.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Hashable, Mapping, Sequence

from multa_broker.dataset.format import SPLITS

DEFAULT_RATIOS = (0.7, 0.15, 0.15)


def assign_splits(
    capture_classes: Mapping[str, Counter],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 1,
) -> dict[str, int]:
    """Map each capture to a split index (into SPLITS).

    ``capture_classes``: capture -> Counter of (task, class) -> flows.
    """
    if len(ratios) != len(SPLITS) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must be {len(SPLITS)} numbers summing to 1, got {list(ratios)}")
    rng = random.Random(seed)
    captures = sorted(capture_classes)
    rng.shuffle(captures)
    # How many captures carry each (task, class): the rarer, the earlier placed.
    carriers: Counter = Counter()
    for cap in captures:
        carriers.update(set(capture_classes[cap]))

    def rarity(cap: str) -> int:
        classes = capture_classes[cap]
        return min((carriers[c] for c in classes), default=1 << 30)

    captures.sort(key=rarity)  # stable: the shuffle breaks ties
    placed: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0, 0])
    totals = [0, 0, 0]
    out: dict[str, int] = {}
    for cap in captures:
        classes = capture_classes[cap]
        rarest = min(classes, key=lambda c: carriers[c]) if classes else None
        if rarest is not None:
            have = placed[rarest]
            n = carriers[rarest]
            # A class seen in >= 3 captures gets at least one in every split,
            # so validation and test can measure it at all.
            target = [max(ratios[i] * n, 1.0 if n >= 3 and ratios[i] > 0 else 0.0) for i in range(3)]
            deficit = [(target[i] - have[i]) / target[i] if target[i] else -1.0 for i in range(3)]
        else:
            n = len(captures)
            deficit = [(ratios[i] * n - totals[i]) / (ratios[i] * n) if ratios[i] else -1.0 for i in range(3)]
        best = max(range(3), key=lambda i: (deficit[i], ratios[i]))
        out[cap] = best
        totals[best] += 1
        for c in classes:
            placed[c][best] += 1
    return out
