"""A layout of benchmarks/makespan.py's random family run by the constrained
workflow, for the tests that pin one layout's makespan (the benchmark's own
code, imported from benchmarks/)."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def family_layout_ratios(
    monkeypatch: pytest.MonkeyPatch, seed: int, *, max_hosts: int
) -> tuple[float, float, int]:
    """Seed ``seed`` of the family of at most ``max_hosts`` hosts (40: the
    default family of ``nox -s bench``; 200: the full family): makespan /
    bound, moves / bound, and the most moves of one instance."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import makespan  # type: ignore[import-not-found]
    from scenarios import random_layout  # type: ignore[import-not-found]

    scenario = random_layout(seed, max_hosts=max_hosts)
    measured, built = makespan.run(scenario, "constrained")
    built.engine.close()
    bounds = makespan.bounds(scenario)
    return (
        measured.makespan / bounds.makespan.seconds,
        measured.moves / bounds.moves.moves,
        measured.most_moves,
    )
