"""fenix_core.opening_bound against every schedule of tiny layouts.

The exhaustive search below knows nothing of the bound's reasoning: it plays
every schedule of a tiny cloud (integer time; at each instant any set of
moves to a host with room that is not in work, and any set of empty hosts
starting their work) and records, per number of extra moves (moves beyond
one per instance), the earliest time every host is maintained. The bound
must never be later than that, with no budget or with the budget of the
schedule's extra moves.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_schedules import MAINTAINED, QUEUED, Where, advance, fits, instant, subsets

from fenix_core.opening_bound import opening_bound, parked_vcpus
from fenix_core.planner import max_hosts_out


def exhaustive(
    capacities: tuple[int, ...],
    placed: tuple[tuple[int, int], ...],  # (vcpus, host) per instance
    *,
    work: int,
    move: int,
    max_extra: int,
    horizon: int = 24,
    max_in_work: int | None = None,
) -> dict[int, int]:
    """The earliest makespan of any schedule, per number of extra moves (at
    most ``max_extra``); a budget with no schedule is left out. With
    ``max_in_work``, at most that many hosts in work at once (a request's
    parallelism cap)."""
    vcpus = [v for v, _ in placed]
    start_state = (
        tuple((h, None) for _, h in placed),
        tuple(QUEUED for _ in capacities),
    )
    frontier: dict[tuple[Where, tuple[int, ...]], int] = {start_state: 0}  # -> fewest moves
    best: dict[int, int] = {}
    for t in range(horizon + 1):
        nxt: dict[tuple[Where, tuple[int, ...]], int] = {}
        for (where, status), moves in frontier.items():
            if all(s == MAINTAINED for s in status):
                extra = moves - len(placed)
                if extra not in best:
                    best[extra] = t
                continue
            if all(e in best for e in range(moves - len(placed), max_extra + 1)):
                # Its schedules can only end with a number of extra moves
                # whose earliest end is already found: none is earlier.
                continue
            used, idle, startable, choices = instant(where, status, vcpus)
            in_work = sum(1 for st_ in status if st_ > 0)
            for starting in subsets(startable):
                if max_in_work is not None and in_work + len(starting) > max_in_work:
                    continue
                for pick in itertools.product(*choices):
                    added = moves + sum(1 for d in pick if d is not None)
                    if added - len(placed) > max_extra:
                        continue
                    if not fits(used, capacities, idle, pick, starting, vcpus):
                        continue
                    state = advance(where, status, idle, pick, starting, work=work, move=move)
                    if nxt.get(state, math.inf) > added:
                        nxt[state] = added
        frontier = nxt
        if not frontier:
            break
    return best


def _bounds(
    capacities: tuple[int, ...], placed: tuple[tuple[int, int], ...], work: int, move: int
) -> tuple[list[int], int]:
    loads = [0] * len(capacities)
    for v, h in placed:
        loads[h] += v
    return loads, max_hosts_out(list(capacities), sum(loads))


@st.composite
def tiny_layouts(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], int, int]:
    hosts = draw(st.integers(2, 3))
    capacities = tuple(draw(st.lists(st.integers(1, 3), min_size=hosts, max_size=hosts)))
    placed: list[tuple[int, int]] = []
    for h, cap in enumerate(capacities):
        left = cap
        for _ in range(draw(st.integers(0, 2))):
            v = draw(st.integers(1, 2))
            if v <= left and len(placed) < 3:
                placed.append((v, h))
                left -= v
    return capacities, tuple(placed), draw(st.integers(1, 3)), draw(st.integers(1, 2))


@pytest.mark.no_cover
@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(tiny_layouts())
def test_no_schedule_beats_the_bound(
    layout: tuple[tuple[int, ...], tuple[tuple[int, int], ...], int, int],
) -> None:
    capacities, placed, work, move = layout
    best = exhaustive(capacities, placed, work=work, move=move, max_extra=2)
    loads, out = _bounds(capacities, placed, work, move)
    common = {"max_out": out, "work": work, "move_seconds": move}
    unlimited = opening_bound(loads, list(capacities), **common)  # type: ignore[arg-type]
    handed = opening_bound(loads, list(capacities), **common, hand_off=True)  # type: ignore[arg-type]
    if best:
        assert unlimited <= handed <= min(best.values()), best
    vcpus = [v for v, _ in placed]
    for extra in range(3):
        # The best schedule with at most ``extra`` extra moves.
        within = [t for e, t in best.items() if e <= extra]
        bound, bound_handed = (
            opening_bound(
                loads,
                list(capacities),
                **common,  # type: ignore[arg-type]
                parked=parked_vcpus(vcpus, extra),
                hand_off=hand_off,
            )
            for hand_off in (False, True)
        )
        if within:
            assert bound <= bound_handed <= min(within), (extra, best)
        assert bound >= unlimited
        assert bound_handed >= handed


@pytest.mark.no_cover
@pytest.mark.parametrize(
    ("capacities", "placed", "work", "move", "extra", "optimum"),
    [
        # A spare host and no second move: one host out at a time, each
        # after its instances moved to the last one maintained.
        ((2, 2, 2), ((2, 0), (2, 1)), 2, 1, 0, 8),
        ((2, 2, 2, 2), ((1, 0), (1, 1), (1, 2)), 2, 1, 0, 8),
        # No spare host: the first host's instance moves twice, and then
        # the others fit where they stay.
        ((3, 3, 3), ((1, 0), (1, 1), (1, 2)), 3, 1, 1, 8),
        ((2, 2, 2), ((1, 0), (1, 1)), 2, 1, 1, 5),
    ],
)
def test_the_bound_is_the_optimum_on_small_layouts(
    capacities: tuple[int, ...],
    placed: tuple[tuple[int, int], ...],
    work: int,
    move: int,
    extra: int,
    optimum: int,
) -> None:
    """Not a vacuous bound: on these layouts it is what the best schedule
    with at most ``extra`` extra moves achieves, found exhaustively."""
    best = exhaustive(capacities, placed, work=work, move=move, max_extra=extra)
    assert min(best.values()) == optimum
    loads, out = _bounds(capacities, placed, work, move)
    bound = opening_bound(
        loads,
        list(capacities),
        max_out=out,
        work=work,
        move_seconds=move,
        parked=parked_vcpus([v for v, _ in placed], extra),
    )
    assert bound == optimum


@pytest.mark.no_cover
@pytest.mark.parametrize(
    ("capacities", "placed", "work", "move", "optimum"),
    [
        # One host out at a time: each next host's instances leave only once
        # the host before is maintained (nowhere else has room), a move each.
        ((2, 2, 2), ((2, 0), (2, 1)), 2, 1, 8),
        ((2, 2, 2, 2), ((2, 0), (2, 1), (2, 2)), 2, 1, 11),
        ((2, 2, 2), ((2, 0), (2, 1)), 2, 2, 10),
        ((2, 2, 2), ((1, 0), (1, 1), (1, 2)), 2, 1, 9),
        # Two out at a time: the third host waits for a maintained one.
        ((2, 2, 2), ((1, 0), (1, 1)), 2, 1, 5),
        ((2, 2, 2, 2), ((1, 0), (1, 1), (1, 2)), 2, 1, 6),
    ],
)
def test_the_hand_off_move_makes_the_bound_the_optimum(
    capacities: tuple[int, ...],
    placed: tuple[tuple[int, int], ...],
    work: int,
    move: int,
    optimum: int,
) -> None:
    """Rule 4 is what the best schedule pays: with it the bound is the
    exhaustive optimum (any number of extra moves), without it below."""
    best = exhaustive(capacities, placed, work=work, move=move, max_extra=3)
    assert min(best.values()) == optimum
    loads, out = _bounds(capacities, placed, work, move)
    common = {"max_out": out, "work": work, "move_seconds": move}
    assert opening_bound(loads, list(capacities), **common) < optimum  # type: ignore[arg-type]
    assert opening_bound(loads, list(capacities), **common, hand_off=True) == optimum  # type: ignore[arg-type]


def test_the_hand_off_move_is_not_counted_under_a_tighter_parallelism_cap() -> None:
    """Rule 4 needs the load not to fit on all but ``max_out + 1`` hosts.
    Under a cap below what the room allows (one host out where two could
    be), the next host may empty while the one before is in work, and the
    best schedule (found exhaustively under the cap) ends before the bound
    would with a move per round: the bound does not count it there."""
    capacities, placed = (2, 2, 2), ((1, 0),)
    best = exhaustive(capacities, placed, work=2, move=1, max_extra=3, max_in_work=1)
    assert min(best.values()) == 6
    loads, out = _bounds(capacities, placed, 2, 1)
    assert out == 2
    capped = {"max_out": 1, "work": 2, "move_seconds": 1}
    plain = opening_bound(loads, list(capacities), **capped)  # type: ignore[arg-type]
    # A move per round counted anyway would say 0, 3 and 6 for the starts: 8.
    assert opening_bound(loads, list(capacities), **capped, hand_off=True) == plain == 6  # type: ignore[arg-type]


def test_without_a_budget_it_is_whole_rounds_of_work_after_the_first_move() -> None:
    """37 loaded hosts, 9 out at a time: 5 rounds of 600 s after a 30 s move
    (3,030 s), where the work spread evenly says 2,467 s."""
    loads = [30] * 37
    capacities = [40] * 37
    out = max_hosts_out(capacities, sum(loads))
    assert out == 9
    bound = opening_bound(loads, capacities, max_out=out, work=600, move_seconds=30)
    assert bound == 30 + math.ceil(37 / 9) * 600
    # With rule 4, each round after the first also waits for a move: the load
    # (1,110 vcpus) does not fit on 37 - 9 - 1 = 27 hosts (1,080 vcpus).
    handed = opening_bound(loads, capacities, max_out=out, work=600, move_seconds=30, hand_off=True)
    assert handed == math.ceil(37 / 9) * (600 + 30)


def test_releases_start_the_i_th_host_no_earlier_than_the_i_th_release() -> None:
    """Seed 28 of makespan.py's 40-host family in figures: 13 hosts, 3 out at
    a time, the fastest to empty at its groups' pace takes 112 s: five
    rounds of work and a move each, the first after 112 s, not 30 s. One
    move per host (the default) is the bound without releases."""
    loads = [31, 29, 28, 31, 28, 28, 30, 32, 33, 31, 32, 25, 28]
    capacities = [40] * 13
    out = max_hosts_out(capacities, sum(loads))
    assert out == 3
    common = {"max_out": out, "work": 600.0, "move_seconds": 30.0, "hand_off": True}
    drains = [112, 120, 134, 134, 138, 138, 138, 148, 186, 186, 192, 246, 246]
    assert opening_bound(loads, capacities, **common, releases=drains) == 112 + 4 * 630 + 600  # type: ignore[arg-type]
    one_move = opening_bound(loads, capacities, **common)  # type: ignore[arg-type]
    assert one_move == opening_bound(loads, capacities, **common, releases=[30.0] * 13)  # type: ignore[arg-type]
    assert one_move == 5 * 630
    # Ten empty hosts free only at 700 s, after the first round's end: the
    # second round and each one after it 100 s later.
    empty = {"max_out": 3, "work": 600.0, "move_seconds": 30.0}
    assert opening_bound([0] * 13, capacities, **empty) == 5 * 600  # type: ignore[arg-type]
    late = [0.0] * 3 + [700.0] * 10
    assert opening_bound([0] * 13, capacities, **empty, releases=late) == 700 + 4 * 600  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="releases"):
        opening_bound(loads, capacities, **common, releases=[0.0])  # type: ignore[arg-type]


def test_a_full_cloud_opens_only_as_fast_as_maintained_hosts_give_room() -> None:
    """With only the first host's instances moving twice, the hosts out grow
    by a third of the maintained ones: far slower than the capacity allows,
    and faster with more second moves."""
    loads = [30] * 37
    capacities = [40] * 37
    vcpus = [2] * 15 * 37 + [1] * 0  # 30 vcpus a host, in 2-vcpu instances
    out = max_hosts_out(capacities, sum(loads))
    common = {"max_out": out, "work": 600.0, "move_seconds": 30.0}
    free = opening_bound(loads, capacities, **common)  # type: ignore[arg-type]
    spans = [
        opening_bound(
            loads,
            capacities,
            **common,  # type: ignore[arg-type]
            parked=parked_vcpus(vcpus, 15 * hosts),
        )
        for hosts in (1, 2, 4, 8)
    ]
    assert spans == sorted(spans, reverse=True)
    assert spans[0] > 2 * free
    assert spans[-1] < spans[0]
    # No second move at all: no host can ever start.
    assert opening_bound(loads, capacities, **common, parked=0) == math.inf  # type: ignore[arg-type]


def test_bad_input_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="capacities"):
        opening_bound([1], [2, 2], max_out=1, work=1, move_seconds=1)
    with pytest.raises(ValueError, match="work"):
        opening_bound([1], [2], max_out=1, work=0, move_seconds=1)
    with pytest.raises(ValueError, match="extra_moves"):
        parked_vcpus([1], -1)
