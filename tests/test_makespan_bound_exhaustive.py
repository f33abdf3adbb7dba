"""The makespan lower bound of benchmarks/makespan.py against every schedule
of tiny layouts with instance groups.

The exhaustive search knows nothing of the bound's reasoning. It plays every
schedule of a tiny cloud in integer time: at each instant any set of moves
(an instance not moving already, to another host with room counting the
arrivals on their way, that is not in work), as long as no group has more
than ``max_impacted`` members impacted (from a move's start until
``recovery_time`` after its end), and any set of empty hosts (nothing on
them, leaving or arriving) starting their work. With integer durations,
integer time loses no schedule's makespan: flooring every instant of a
schedule keeps each duration and keeps apart the intervals that were apart,
so every limit still holds. Its makespan (every host maintained) must never
be below the bound: the group chains from the first maintained host
(:func:`fenix_core.planner.first_maintained_at`: that host's drain at its
groups' pace, then its work) and the capacity with the hand-off moves
(:func:`fenix_core.opening_bound.opening_bound`).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tiny_schedules import MAINTAINED, QUEUED, Where, advance, fits, instant, subsets

from fenix_core.opening_bound import opening_bound
from fenix_core.planner import (
    GroupRule,
    LowerBound,
    drain_seconds,
    first_maintained_at,
    makespan_lower_bound,
    max_hosts_out,
)
from fenix_core.second_moves import first_final_move_at

#: (vcpus, host, group) per instance.
Placed = tuple[tuple[int, int, int], ...]
#: (max_impacted, recovery_time) per group.
Groups = tuple[tuple[int, int], ...]


def earliest_makespan(
    capacities: tuple[int, ...],
    placed: Placed,
    groups: Groups,
    *,
    work: int,
    move: int,
    horizon: int = 30,
) -> int | None:
    """The earliest time every host is maintained, over every schedule (None:
    none within ``horizon``)."""
    vcpus = [v for v, _, _ in placed]
    group = [g for _, _, g in placed]
    # Groups: the time left impacted, per impacted member.
    start = (
        tuple((h, None) for _, h, _ in placed),
        tuple(QUEUED for _ in capacities),
        tuple(() for _ in groups),
    )
    frontier: set[tuple[Where, tuple[int, ...], tuple[tuple[int, ...], ...]]] = {start}
    for t in range(horizon + 1):
        nxt: set[tuple[Where, tuple[int, ...], tuple[tuple[int, ...], ...]]] = set()
        for where, status, impacted in frontier:
            if all(s == MAINTAINED for s in status):
                return t
            used, idle, startable, choices = instant(where, status, vcpus)
            for starting in subsets(startable):
                for pick in itertools.product(*choices):
                    slots = Counter(
                        group[i] for i, d in zip(idle, pick, strict=True) if d is not None
                    )
                    if any(len(impacted[g]) + n > groups[g][0] for g, n in slots.items()):
                        continue
                    if not fits(used, capacities, idle, pick, starting, vcpus):
                        continue
                    after, states = advance(
                        where, status, idle, pick, starting, work=work, move=move
                    )
                    nxt.add((after, states, _recovering(impacted, idle, pick, groups, group, move)))
        frontier = nxt
        if not frontier:
            break
    return None


def _recovering(
    impacted: tuple[tuple[int, ...], ...],
    idle: list[int],
    pick: tuple[int | None, ...],
    groups: Groups,
    group: list[int],
    move: int,
) -> tuple[tuple[int, ...], ...]:
    """Each group's impacted members' time left, one time unit after the
    moves picked (a move's member: the move and its recovery)."""
    left = [list(times) for times in impacted]
    for i, d in zip(idle, pick, strict=True):
        if d is not None:
            left[group[i]].append(move + groups[group[i]][1])
    return tuple(tuple(sorted(x - 1 for x in times if x > 1)) for times in left)


def _hosts_and_rules(
    capacities: tuple[int, ...], placed: Placed, groups: Groups
) -> tuple[list[int], list[Counter[str]], dict[str, GroupRule]]:
    """Each host's load and members by group, and the groups' rules, as
    makespan.py reads them from a layout."""
    loads = [0] * len(capacities)
    on: list[Counter[str]] = [Counter() for _ in capacities]
    for v, h, g in placed:
        loads[h] += v
        on[h][f"g{g}"] += 1
    rules = {f"g{g}": GroupRule(f"g{g}", k, float(r)) for g, (k, r) in enumerate(groups)}
    return loads, on, rules


def bound_of(
    capacities: tuple[int, ...], placed: Placed, groups: Groups, *, work: int, move: int
) -> tuple[LowerBound, float]:
    """makespan.py's bound of the layout, and the same with final moves from
    one move plus work (the group chains' start before the drain pace)."""
    loads, on, rules = _hosts_and_rules(capacities, placed, groups)
    out = max_hosts_out(list(capacities), sum(loads))
    counts = Counter(h for _, h, _ in placed)
    common = {
        "host_work": [float(work)] * len(capacities),
        "max_parallel_hosts": out,
        "members_by_group": Counter(f"g{g}" for _, _, g in placed),
        "rules": rules,
        "move_seconds": float(move),
        "capacity_floor": capacity_of(capacities, placed, groups, work=work, move=move),
    }
    first = first_maintained_at(
        [(float(work), on[h], counts[h]) for h in range(len(capacities))],
        rules,
        move_seconds=move,
    )
    one_move = first_final_move_at(
        [(float(work), bool(counts[h])) for h in range(len(capacities))],
        stay_room=False,
        move_seconds=move,
    )
    new = makespan_lower_bound(**common, first_final_move_at=first)  # type: ignore[arg-type]
    old = makespan_lower_bound(**common, first_final_move_at=one_move)  # type: ignore[arg-type]
    return new, old.seconds


def capacity_of(
    capacities: tuple[int, ...],
    placed: Placed,
    groups: Groups,
    *,
    work: int,
    move: int,
    releases: bool = True,
) -> float:
    """makespan.py's capacity bound of the layout: hand-offs and, with
    ``releases``, each host empty no earlier than its drain at its groups'
    pace (else one move)."""
    loads, on, rules = _hosts_and_rules(capacities, placed, groups)
    counts = Counter(h for _, h, _ in placed)
    drains = [
        drain_seconds(on[h], rules, instances=counts[h], move_seconds=move)
        for h in range(len(capacities))
    ]
    return opening_bound(
        loads,
        list(capacities),
        max_out=max_hosts_out(list(capacities), sum(loads)),
        work=work,
        move_seconds=move,
        hand_off=True,
        releases=drains if releases else None,
    )


@st.composite
def tiny_layouts(draw: st.DrawFn) -> tuple[tuple[int, ...], Placed, Groups, int, int]:
    hosts = draw(st.integers(2, 3))
    capacities = tuple(draw(st.lists(st.integers(1, 3), min_size=hosts, max_size=hosts)))
    groups = tuple(
        (draw(st.integers(1, 2)), draw(st.integers(0, 2))) for _ in range(draw(st.integers(1, 2)))
    )
    placed: list[tuple[int, int, int]] = []
    for h, cap in enumerate(capacities):
        left = cap
        for _ in range(draw(st.integers(0, 3))):
            v = draw(st.integers(1, 2))
            if v <= left and len(placed) < 4:
                placed.append((v, h, draw(st.integers(0, len(groups) - 1))))
                left -= v
    return capacities, tuple(placed), groups, draw(st.integers(1, 3)), 1


@pytest.mark.no_cover
@settings(max_examples=30, deadline=None)
@given(tiny_layouts())
def test_no_schedule_beats_the_makespan_bound(
    layout: tuple[tuple[int, ...], Placed, Groups, int, int],
) -> None:
    capacities, placed, groups, work, move = layout
    best = earliest_makespan(capacities, placed, groups, work=work, move=move)
    bound, _ = bound_of(capacities, placed, groups, work=work, move=move)
    assume(best is not None)  # no schedule: a full cloud (nothing to bound)
    assert bound.seconds <= best, (bound, best)


@pytest.mark.no_cover
@pytest.mark.parametrize(
    ("capacities", "placed", "groups", "work", "optimum"),
    [
        # Each host holds two members of a group that moves one at a time:
        # the first host is maintained 3 s (1 s of recovery) or 4 s (2 s)
        # after the start plus its work, not 1 s, and the group's four
        # final moves follow.
        ((4, 4), ((1, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, 0)), ((1, 1),), 2, 14),
        ((4, 4), ((1, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, 0)), ((1, 2),), 2, 18),
    ],
)
def test_the_first_host_drained_at_its_groups_pace_makes_the_bound_the_optimum(
    capacities: tuple[int, ...],
    placed: Placed,
    groups: Groups,
    work: int,
    optimum: int,
) -> None:
    """Not a vacuous bound: where the first maintained host's drain takes
    its group's rounds, the bound counting them is the exhaustive optimum
    and the bound counting one move is below it."""
    best = earliest_makespan(capacities, placed, groups, work=work, move=1)
    bound, one_move = bound_of(capacities, placed, groups, work=work, move=1)
    assert best == optimum
    assert one_move < bound.seconds == best


@pytest.mark.no_cover
@pytest.mark.parametrize(
    ("groups", "work", "optimum", "with_releases", "without"),
    [
        # One empty host, two hosts each holding two members of a group that
        # moves one at a time (P 1: one lane). The second host to begin
        # cannot before its members have left in two rounds with recovery
        # between (4 s, 3 s), later than the lane's hand-off after the empty
        # host (2 s, 3 s).
        (((1, 2), (1, 2)), 1, 9, 7, 5),
        (((1, 1), (1, 1)), 1, 7, 6, 5),
        (((1, 2), (1, 2)), 2, 11, 9, 8),
    ],
)
def test_hosts_released_at_their_groups_pace_lift_the_capacity_bound(
    groups: Groups, work: int, optimum: int, with_releases: float, without: float
) -> None:
    """Not a vacuous term: where every host with instances empties only in
    several rounds of its groups, counting each host's release lifts the
    capacity bound above the one that counts one move, and no schedule
    beats it (the exhaustive optimum)."""
    capacities = (2, 2, 2)
    placed = ((1, 1, 0), (1, 1, 0), (1, 2, 1), (1, 2, 1))
    lifted = capacity_of(capacities, placed, groups, work=work, move=1)
    one_move = capacity_of(capacities, placed, groups, work=work, move=1, releases=False)
    assert (lifted, one_move) == (with_releases, without)
    assert earliest_makespan(capacities, placed, groups, work=work, move=1) == optimum
    bound, _ = bound_of(capacities, placed, groups, work=work, move=1)
    assert one_move < bound.seconds == lifted <= optimum


def test_first_maintained_at_counts_each_groups_rounds_on_the_host() -> None:
    rules = {"a": GroupRule("a", max_impacted=1, recovery_time=24.0), "b": GroupRule("b", 2, 60.0)}
    # 5 of a one at a time: 5 x 30 + 4 x 24 = 246 s; 4 of b two at a time: 30 + 60 + 30.
    hosts = [(600.0, {"a": 5, "b": 1}, 6), (600.0, {"b": 4}, 5), (600.0, {}, 3)]
    assert first_maintained_at(hosts[:1], rules, move_seconds=30) == 600 + 246
    assert first_maintained_at(hosts[1:2], rules, move_seconds=30) == 600 + 120
    # Instances in no group leave in one move; an empty host only works.
    assert first_maintained_at(hosts, rules, move_seconds=30) == 630
    assert first_maintained_at([*hosts, (500.0, {}, 0)], rules, move_seconds=30) == 500
    assert first_maintained_at([], rules, move_seconds=30) == 0.0
    assert not math.isinf(first_maintained_at(hosts, rules, move_seconds=0))
