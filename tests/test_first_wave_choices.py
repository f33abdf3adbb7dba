"""The first wave's choices (:mod:`fenix_core.second_moves`), measured on
layouts of benchmarks/makespan.py's random family (issue 21): its partial
last host (``FirstWave.partial``), which opens with only the second moves
left in the wave's budget, and its hosts that empty soonest first
(``drain_wait``), each after the first ranked behind the members of those
chosen before it."""

from __future__ import annotations

from collections import Counter

import pytest
from family_layouts import BENCHMARKS, family_layout_ratios

from fenix_core import second_moves
from fenix_core.testing.invariants import migrations_per_instance


@pytest.mark.no_cover
def test_a_full_cloud_opens_a_partial_host_in_its_first_wave_and_moves_only_its_allowance_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 3 of the default family: 17 full hosts of 20 instances, no spare,
    20 groups. The first wave may add 34 second moves: the second host's 20
    fit, a third host's 20 did not, and the wave stopped with 14 unused
    (4,751 s, 1.310 x the bound). With the third host opened for
    the 14 left, and only 14 of its instances moving twice (the others wait
    for room where they stay), 1.216 x the bound at the same moves target."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import makespan  # type: ignore[import-not-found]
    from scenarios import random_layout  # type: ignore[import-not-found]

    waves: list[second_moves.FirstWave] = []
    original = second_moves.first_wave

    def recorded(*args: object, **kwargs: object) -> second_moves.FirstWave:
        wave = original(*args, **kwargs)  # type: ignore[arg-type]
        waves.append(wave)
        return wave

    monkeypatch.setattr(second_moves, "first_wave", recorded)
    scenario = random_layout(3, max_hosts=40)
    measured, built = makespan.run(scenario, "constrained")
    built.engine.close()
    bounds = makespan.bounds(scenario)
    assert measured.makespan / bounds.makespan.seconds <= 1.25
    assert measured.moves / bounds.moves.moves <= 1.10
    assert measured.most_moves <= 2

    (wave,) = waves
    assert wave.partial is not None
    assert wave.partial == wave.hosts[-1]
    twice = {i for i, n in migrations_per_instance(built.cloud).items() if n == 2}
    first_left: dict[str, str] = {}
    for event in built.cloud.events:
        if event.kind == "migration_started" and event.instance_id and event.host:
            first_left.setdefault(event.instance_id, event.host)
    by_host = Counter(first_left[i] for i in twice)
    # Its instances moving twice are its allowance at most, not all of them.
    assert 0 < by_host[wave.partial] <= wave.twice < 20


@pytest.mark.no_cover
def test_a_one_at_a_time_chain_starts_sooner_with_a_first_host_that_empties_soonest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 28 of ``--family 30``: 13 full hosts of 20 instances, P = 3; its
    longest chain moves one member at a time (36 members, 54 s rounds). The
    first host in name order held five of them: its drain waited four of
    the chain's rounds (216 s), and the chain's first final move waited for
    it (846 s instead of 758 s), 1.264 x the bound. Among hosts forcing as
    many second moves, the one whose groups' rounds empty it soonest first:
    within 1.25."""
    span, moves, most = family_layout_ratios(monkeypatch, max_hosts=40, seed=28)
    assert span <= 1.25
    assert moves <= 1.10
    assert most <= 2


@pytest.mark.no_cover
def test_the_first_waves_hosts_each_ranked_behind_those_chosen_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 3 of the default family (17 full hosts, no spare, 20 groups,
    P = 4): the wave's hosts drain together, and ranked alone by their own
    rounds its second host (compute-00000, 30 s of rounds) drained for 271 s,
    its groups' slots taken by the first host's members: 4,193 s, 1.156 x
    the bound. Each host after the first ranked by its wait behind the
    members of those chosen before, and none whose members would leave
    before the first host's: 4,130 s, 1.138 (issue 21's 1.15), at the same
    migrations."""
    span, moves, most = family_layout_ratios(monkeypatch, 3, max_hosts=40)
    assert span <= 1.15
    assert moves <= 1.10
    assert most <= 2
