"""Held-out combinations: which (object, texture), (object, object), … pairs never appear as training targets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np


def holdout_count(fraction: float, total: int) -> int:
    """round(fraction * total), halves rounded up (so 0.5 of 1 combination holds it out)."""
    return int(np.floor(fraction * total + 0.5))


def choose_holdout(
    combos: Sequence[Hashable],
    components: Sequence[tuple[str, ...]],
    fraction: float,
    rng: np.random.Generator,
    operator: str,
) -> set[Hashable]:
    """Hold out round(fraction * len(combos)) combinations, spread evenly over their components.

    `components[i]` names the parts of `combos[i]` (e.g. ("obj=star", "tex=wood")). Each step holds out the
    combination whose parts keep the most training combinations (random tie-break), so every object, texture,
    scene, word and garment stays in training and the held-out set is balanced across them. Raises ValueError when
    the fraction would remove the last training combination of some part.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {fraction}")
    n_hold = holdout_count(fraction, len(combos))
    parts = [tuple(dict.fromkeys(c)) for c in components]
    counts = Counter(p for c in parts for p in c)
    priority = rng.permutation(len(combos))
    remaining = set(range(len(combos)))
    held: set[Hashable] = set()
    for _ in range(n_hold):
        best = max(remaining, key=lambda i: (min(counts[p] for p in parts[i]), priority[i]))
        weakest = min(parts[best], key=lambda p: counts[p])
        if counts[weakest] < 2:
            raise ValueError(
                f"holdout={fraction} for {operator} would leave {weakest!r} with no training combination "
                f"({len(combos)} combinations, {n_hold} to hold out); lower holdout or add more names"
            )
        remaining.discard(best)
        held.add(combos[best])
        for p in parts[best]:
            counts[p] -= 1
    return held
