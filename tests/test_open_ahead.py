"""Hosts opened ahead of their room (the constrained workflow's
``_open_ahead``, ``planner.host_to_open_ahead``), measured on a layout of
benchmarks/makespan.py's default random family (issue 21)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from family_layouts import family_layout_ratios
from test_constrained_step_work import _timeline, small_windows_recording_room_checks

from fenix_core import planner
from fenix_core.workflows import constrained


@pytest.mark.no_cover
def test_a_full_cloud_drains_its_hosts_faster_with_one_opened_ahead_of_its_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 4 of the default family: 17 full hosts, no spare, 6 groups of 2-3
    members moved at once with 120-240 s of recovery_time. Opened only when
    its whole load fit where instances stay, a host then waited open for the
    rounds of the groups busy elsewhere (470 s on average): 6,075 s, 1.220 x
    the bound. With one host opened ahead of its room for the longest idle
    chain, its members of the longest chains leaving first into the room
    the others leave, within 1.15. Both halves are needed: without the
    draining hosts' room kept for their members whose groups wait, the host
    opened ahead took it (1.206); without its longest chains' members
    first, its others did (1.162)."""
    span, moves, most = family_layout_ratios(monkeypatch, max_hosts=40, seed=4)
    assert span <= 1.15
    assert moves <= 1.10
    assert most <= 2


@pytest.mark.no_cover
def test_the_kept_scores_of_the_hosts_opened_ahead_are_those_of_their_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-host weights kept with the idle groups between decisions
    (each fed host's most idle weight, kept as groups are added and taken
    out, and its sum) are, at every ranking of the hosts to open ahead, what
    the candidates' loads give from the idle groups (``host_to_open_ahead``
    without ``scores``), and the host and member ranked first are the same
    either way. The fleet of test_constrained_step_work (seeds 1, 3 and 7)
    with windows smaller than it: candidates are cut, hosts opened ahead. Each kept most is,
    after every update, the heaviest idle group naming its host."""
    small_windows_recording_room_checks(monkeypatch)
    original = planner.host_to_open_ahead
    ranked: list[int] = []

    def checked(
        candidates: Any, *, idle_groups: Any, room: int, last: Any = (), scores: Any = None
    ) -> Any:
        assert scores is not None
        for load in candidates:
            fed = [w for g in load.groups if (w := idle_groups.get(g)) is not None]
            assert scores.get(load.host) == ((max(fed), sum(fed)) if fed else None), load.host
        found = original(candidates, idle_groups=idle_groups, room=room, last=last, scores=scores)
        assert found == original(candidates, idle_groups=idle_groups, room=room, last=last)
        ranked.append(len(candidates))
        return found

    kept_idle = constrained.opening._idle_and_fed
    tops: list[int] = []

    def recounted(step: Any, waiting: Any) -> Any:
        """Each kept most is the heaviest idle group naming the host."""
        idle, fed = kept_idle(step, waiting)
        kept = step.counts.fed
        if kept is not None:
            most: dict[str, float] = {}
            for g, w in idle.items():
                for name in step.counts.pending_hosts_of.get(g, ()):
                    most[name] = max(most.get(name, w), w)
            assert {n: most[n] for n in kept.top} == kept.top
            assert kept.top.keys() <= fed.keys()
            tops.append(len(kept.top))
        return idle, fed

    monkeypatch.setattr(planner, "host_to_open_ahead", checked)
    monkeypatch.setattr(constrained.opening, "_idle_and_fed", recounted)
    for seed in (1, 3, 7):
        (tmp_path / str(seed)).mkdir()
        assert _timeline(tmp_path / str(seed), seed=seed)[0] == "MAINTENANCE_DONE"
    assert len(ranked) > 5, ranked
    assert sum(tops) > len(tops), tops  # hosts' mosts kept between decisions


@pytest.mark.parametrize("hosts", [3, 128, 129, 400])
def test_the_candidates_ranked_are_the_first_by_weight_then_name(hosts: int) -> None:
    """The pending hosts offered to the ranking are the best
    ``CANDIDATE_WINDOW`` of the fed hosts by (weight, name), highest first,
    many at the weight of the last one taken as in a fleet of alike hosts."""
    rng = random.Random(hosts)
    fed = {
        f"cmp-{rng.randrange(10_000):04d}": float(rng.choice((1, 61, 121, 122)))
        for _ in range(hosts)
    }
    ranked = sorted(fed.items(), key=lambda item: (item[1], item[0]), reverse=True)
    best = constrained.opening._best(fed)
    assert len(best) == len(set(best)) == min(len(fed), constrained.windows.CANDIDATE_WINDOW)
    assert set(best) == {n for n, _w in ranked[: constrained.windows.CANDIDATE_WINDOW]}
