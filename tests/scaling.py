"""How a piece of work's CPU time grows with its size: a linear one costs
about 10x for 10x the size, one that does O(size) work per item about 100x.
The figures are process time (not wall time: the machine may be shared),
the best of a few runs, so a pause of another process does not count."""

from __future__ import annotations

import time
from collections.abc import Callable


def cpu_seconds(work: Callable[[], object], repeats: int = 3) -> float:
    """The least process time ``work()`` took in ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def growth(make: Callable[[int], Callable[[], object]], small: int, big: int) -> float:
    """CPU time of ``make(big)()`` over that of ``make(small)()`` (``make``
    builds the work of a size outside the timing)."""
    return cpu_seconds(make(big)) / max(cpu_seconds(make(small)), 1e-6)
