"""Bootstrap intervals: every headline figure of `larft eval` comes with its 95% interval over
prompts, so a difference between two runs can be told from sampling noise."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Callable, Hashable, Sequence, TypeVar

T = TypeVar("T")

N_RESAMPLES = 1000


def bootstrap_cis(
    items: Sequence[T],
    statistic: Callable[[list[T]], dict[str, float | None]],
    *,
    strata: Callable[[T], Hashable] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float] | None]:
    """Percentile intervals of each figure `statistic` returns, over `n_resamples` resamples of
    `items` drawn with replacement (within each stratum, when `strata` is given: a macro-average
    over target lengths stays defined when every length keeps its own sample size). Seeded.
    A figure that is None in a resample is left out of that resample; None when never defined."""
    if not items:
        return {}
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for item in items:
        groups[strata(item) if strata else None].append(item)
    rng = random.Random(seed)
    draws: dict[str, list[float]] = defaultdict(list)
    for _ in range(n_resamples):
        sample: list[T] = []
        for members in groups.values():
            sample.extend(rng.choices(members, k=len(members)))
        for key, value in statistic(sample).items():
            if value is not None:
                draws[key].append(float(value))
    keys = statistic(list(items)).keys()
    tail = (1 - level) / 2
    return {key: _percentiles(sorted(draws[key]), tail) if draws.get(key) else None for key in keys}


def _percentiles(values: list[float], tail: float) -> list[float]:
    def at(q: float) -> float:
        pos = q * (len(values) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(values) - 1)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    return [at(tail), at(1 - tail)]


def overlap(a: Sequence[float] | None, b: Sequence[float] | None) -> bool | None:
    """Whether two intervals overlap (None when either is missing)."""
    if not a or not b:
        return None
    return a[0] <= b[1] and b[0] <= a[1]
