"""Placement planning (pure functions): capacity, preferences, draining order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.planner import (
    DrainCandidate,
    Movable,
    Slot,
    choose_host_to_drain,
    choose_target,
    moves_again,
    plan_placement,
)

PROPERTY = settings(max_examples=75, deadline=None, derandomize=True)
PROJECTS = ["p0", "p1", "p2"]
HOSTS = [f"h{i}" for i in range(6)]

project_loads = st.dictionaries(st.sampled_from(PROJECTS), st.integers(0, 3), max_size=3)


@st.composite
def slot_lists(draw: st.DrawFn, min_size: int = 0) -> list[Slot]:
    hosts = draw(st.lists(st.sampled_from(HOSTS), unique=True, min_size=min_size))
    return [
        Slot(
            host=host,
            free=draw(st.none() | st.integers(0, 12)),
            stays=draw(st.booleans()),
            project_load=draw(project_loads),
        )
        for host in hosts
    ]


@st.composite
def movable_lists(draw: st.DrawFn, prefix: str = "vm", max_size: int = 6) -> list[Movable]:
    n = draw(st.integers(0, max_size))
    return [
        Movable(f"{prefix}-{i}", draw(st.sampled_from(PROJECTS)), draw(st.integers(1, 6)))
        for i in range(n)
    ]


def fits(slot: Slot, vcpus: int) -> bool:
    return slot.free is None or slot.free >= vcpus


def assert_valid_plan(
    plan: Mapping[str, str], items: Sequence[Movable], slots: Sequence[Slot]
) -> None:
    """Every item placed exactly once, on a given slot, within its free capacity."""
    assert sorted(plan) == sorted(i.instance_id for i in items)
    by_host = {s.host: s for s in slots}
    assert set(plan.values()) <= set(by_host)
    used: Counter[str] = Counter()
    for item in items:
        used[plan[item.instance_id]] += item.vcpus
    for host, vcpus in used.items():
        free = by_host[host].free
        assert free is None or vcpus <= free, f"{host}: {vcpus} placed, {free} free"


# --------------------------------------------------------------------------- plan_placement


@PROPERTY
@given(movable_lists(), slot_lists())
def test_plan_placement_respects_capacity(items: list[Movable], slots: list[Slot]) -> None:
    plan = plan_placement(items, slots)
    demand = sum(i.vcpus for i in items)
    unlimited = any(s.free is None for s in slots)
    known_free = sum(s.free for s in slots if s.free is not None)
    if plan is not None:
        assert_valid_plan(plan, items, slots)
    else:
        # Refusing is only allowed when some item cannot be placed at all.
        assert items
        assert not unlimited
        assert not any(s.free is not None and s.free >= demand for s in slots)
    if not unlimited and known_free < demand:
        assert plan is None
    if unlimited or any(fits(s, demand) for s in slots):
        assert plan is not None


@PROPERTY
@given(movable_lists(), slot_lists())
def test_plan_placement_none_when_an_item_fits_nowhere(
    items: list[Movable], slots: list[Slot]
) -> None:
    too_big = Movable("vm-huge", "p0", 13)
    plan = plan_placement([*items, too_big], slots)
    if any(s.free is None for s in slots):
        assert plan is not None
        assert plan["vm-huge"] in {s.host for s in slots if s.free is None}
    else:
        assert plan is None


def test_plan_placement_largest_first_best_fit() -> None:
    slots = [Slot("a", 4, True), Slot("b", 4, True)]
    items = [Movable("small-1", "p", 2), Movable("big", "q", 4), Movable("small-2", "p", 2)]
    # A naive in-order plan would split a and b 2/2 and leave no room for big.
    assert plan_placement(items, slots) == {"big": "a", "small-1": "b", "small-2": "b"}


def test_plan_placement_spreads_a_project() -> None:
    slots = [Slot("a", 8, True), Slot("b", 8, True), Slot("c", 8, True)]
    items = [Movable(f"vm-{i}", "p1", 1) for i in range(3)]
    plan = plan_placement(items, slots)
    assert plan is not None
    assert sorted(plan.values()) == ["a", "b", "c"]


def test_plan_placement_counts_existing_project_load() -> None:
    slots = [Slot("a", 8, True, {"p1": 2}), Slot("b", 8, True, {"p1": 0, "p2": 5})]
    assert plan_placement([Movable("vm", "p1", 1)], slots) == {"vm": "b"}
    assert plan_placement([Movable("vm", "p2", 1)], slots) == {"vm": "a"}


def test_plan_placement_empty() -> None:
    assert plan_placement([], []) == {}
    assert plan_placement([Movable("vm", "p", 1)], []) is None


# --------------------------------------------------------------------------- choose_target


@PROPERTY
@given(
    st.builds(Movable, st.just("vm"), st.sampled_from(PROJECTS), st.integers(1, 8)),
    slot_lists(),
)
def test_choose_target_preferences(item: Movable, slots: list[Slot]) -> None:
    target = choose_target(item, slots)
    fitting = [s for s in slots if fits(s, item.vcpus)]
    if not fitting:
        assert target is None
        return
    chosen = next(s for s in slots if s.host == target)
    assert fits(chosen, item.vcpus)
    if any(s.stays for s in fitting):
        assert chosen.stays
    load = chosen.project_load.get(item.project_id, 0)
    for other in fitting:
        if other.stays == chosen.stays:
            assert load <= other.project_load.get(item.project_id, 0)


def test_choose_target_prefers_staying_hosts_over_fit_and_spread() -> None:
    item = Movable("vm", "p1", 2)
    slots = [
        Slot("moving", 2, False),  # perfect fit, no p1 yet, but must be left again
        Slot("staying", 100, True, {"p1": 3}),
    ]
    assert choose_target(item, slots) == "staying"


def test_choose_target_best_fit_and_unknown_capacity() -> None:
    item = Movable("vm", "p1", 2)
    assert choose_target(item, [Slot("big", 10, True), Slot("tight", 3, True)]) == "tight"
    assert choose_target(item, [Slot("unknown", None, True), Slot("known", 4, True)]) == "known"
    assert choose_target(item, [Slot("unknown", None, True), Slot("full", 1, True)]) == "unknown"
    assert choose_target(item, [Slot("full", 1, True), Slot("fuller", 0, False)]) is None


def test_choose_target_overrides() -> None:
    item = Movable("vm", "p1", 2)
    slots = [Slot("a", 8, True), Slot("b", 8, True)]
    assert choose_target(item, slots, free={"a": 1}) == "b"
    assert choose_target(item, slots, free={"a": 1, "b": 1}) is None
    assert choose_target(item, slots, load={"a": {"p1": 1}, "b": {}}) == "b"
    assert choose_target(item, slots, load={"a": {}, "b": {"p1": 1}}) == "a"


# --------------------------------------------------------------------------- choose_host_to_drain


@st.composite
def drain_problems(draw: st.DrawFn) -> tuple[list[DrainCandidate], list[Slot], int]:
    slots = draw(slot_lists(min_size=1))
    hosts = draw(st.lists(st.sampled_from([s.host for s in slots]), unique=True, min_size=1))
    candidates = [
        DrainCandidate(host, tuple(draw(movable_lists(prefix=host, max_size=4)))) for host in hosts
    ]
    return candidates, slots, draw(st.integers(0, 3))


def zero_move_possible(candidate: DrainCandidate, slots: Sequence[Slot]) -> bool:
    """The candidate can be emptied onto hosts that stay (none of its items moves again)."""
    staying = [s for s in slots if s.host != candidate.host and s.stays]
    return plan_placement(candidate.items, staying) is not None


@PROPERTY
@given(drain_problems())
def test_choose_host_to_drain_properties(
    problem: tuple[list[DrainCandidate], list[Slot], int],
) -> None:
    candidates, slots, look_ahead = problem
    result = choose_host_to_drain(candidates, slots, look_ahead=look_ahead)
    feasible = [
        plan_placement(c.items, [s for s in slots if s.host != c.host]) is not None
        for c in candidates
    ]
    if result is None:
        assert not any(feasible)
        for c in candidates:
            others = [s for s in slots if s.host != c.host]
            demand = sum(i.vcpus for i in c.items)
            assert c.items
            assert not any(fits(s, demand) for s in others)
        return

    host, plan = result
    index = [c.host for c in candidates].index(host)
    candidate = candidates[index]
    others = [s for s in slots if s.host != host]
    assert host not in plan.values()  # never onto itself
    assert_valid_plan(plan, candidate.items, others)

    first_feasible = feasible.index(True)
    window = candidates[first_feasible : first_feasible + look_ahead + 1]
    if moves_again(plan, others) == 0:
        # The first candidate that can be emptied without double moves.
        assert zero_move_possible(candidate, slots)
        assert index <= first_feasible + look_ahead
        assert not any(zero_move_possible(c, slots) for c in candidates[:index])
    else:
        # No zero-move candidate within reach: the first feasible one is taken.
        assert index == first_feasible
        assert not any(zero_move_possible(c, slots) for c in window)


def test_choose_host_to_drain_prefers_single_moves() -> None:
    slots = [
        Slot("c0", 0, False),
        Slot("c1", 0, False),
        Slot("c2", 4, False),  # not maintained yet: instances would move again
        Slot("done", 2, True),  # already maintained: instances stay
    ]
    candidates = [
        DrainCandidate("c0", (Movable("a", "p", 3),)),  # fits only on c2
        DrainCandidate("c1", (Movable("b", "p", 2),)),  # fits on done
    ]
    assert choose_host_to_drain(candidates, slots) == ("c1", {"b": "done"})
    # Without look-ahead the first feasible candidate is taken, double move or not.
    assert choose_host_to_drain(candidates, slots, look_ahead=0) == ("c0", {"a": "c2"})


def test_choose_host_to_drain_skips_candidates_that_do_not_fit() -> None:
    slots = [Slot("c0", 10, False), Slot("c1", 1, False), Slot("c2", 1, True)]
    candidates = [
        DrainCandidate("c0", (Movable("a", "p", 2),)),  # 2 vcpus, others have 1 each
        DrainCandidate("c1", (Movable("b", "p", 1),)),
    ]
    assert choose_host_to_drain(candidates, slots) == ("c1", {"b": "c2"})


def test_choose_host_to_drain_none_when_nothing_fits() -> None:
    # c0's own free capacity must not count: it is the host being emptied.
    slots = [Slot("c0", 100, True), Slot("c1", 1, True)]
    candidates = [DrainCandidate("c0", (Movable("a", "p", 2),))]
    assert choose_host_to_drain(candidates, slots) is None
    assert choose_host_to_drain([], slots) is None


def test_choose_host_to_drain_empty_host_is_trivial() -> None:
    slots = [Slot("c0", 0, False)]
    assert choose_host_to_drain([DrainCandidate("c0", ())], slots) == ("c0", {})


def test_moves_again_counts_non_staying_targets() -> None:
    slots = [Slot("a", 1, True), Slot("b", 1, False)]
    assert moves_again({"x": "a", "y": "b", "z": "b"}, slots) == 2
    assert moves_again({"x": "a"}, slots) == 0
