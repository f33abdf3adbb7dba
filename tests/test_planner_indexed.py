"""choose_target_indexed answers what the brute-force choose_target answers
(the oracle), on random fleets, rules, refused targets and index updates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.placement_rules import HostLimits
from fenix_core.planner import (
    Movable,
    Slot,
    SlotIndex,
    choose_target,
    choose_target_indexed,
)

HOSTS = [f"h{k}" for k in range(10)]
PROJECTS = ["p1", "p2"]


def slots_for(hosts: list[str]) -> st.SearchStrategy[Slot]:
    return st.builds(
        Slot,
        host=st.sampled_from(hosts),
        free=st.none() | st.integers(-2, 8),
        stays=st.booleans(),
        project_load=st.dictionaries(st.sampled_from(PROJECTS), st.integers(0, 3), max_size=2),
    )


limits_strategy = st.builds(
    HostLimits,
    avoid=st.frozensets(st.sampled_from(HOSTS), max_size=4),
    only=st.none() | st.frozensets(st.sampled_from(HOSTS), max_size=4),
    penalty=st.dictionaries(st.sampled_from(HOSTS), st.integers(-2, 2), max_size=4),
)
items = st.builds(
    Movable,
    instance_id=st.just("i"),
    project_id=st.sampled_from(PROJECTS),
    vcpus=st.integers(1, 5),
    limits=limits_strategy,
)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(slots_for(HOSTS), max_size=12),
    st.lists(st.sampled_from(HOSTS), max_size=4),  # removed after the puts
    items,
    st.frozensets(st.sampled_from(HOSTS), max_size=3),
)
def test_the_indexed_choice_equals_the_brute_force_one(
    puts: list[Slot], removes: list[str], item: Movable, exclude: frozenset[str]
) -> None:
    index = SlotIndex()
    kept: dict[str, Slot] = {}
    for slot in puts:  # a host put again replaces its slot (free changed, ...)
        index.put(slot)
        kept[slot.host] = slot
    for host in removes:
        index.remove(host)
        kept.pop(host, None)
    assert sorted(s.host for s in index.slots()) == sorted(kept)
    oracle = choose_target(item, [s for s in kept.values() if s.host not in exclude])
    assert choose_target_indexed(item, index, exclude=exclude) == oracle


def test_best_fit_among_hosts_that_stay_before_hosts_that_do_not() -> None:
    index = SlotIndex(
        [
            Slot("a", 8, stays=True),
            Slot("b", 3, stays=True),
            Slot("c", 2, stays=False),
            Slot("d", None, stays=True),
        ]
    )
    item = Movable("i", "p1", 2)
    assert choose_target_indexed(item, index) == "b"
    assert choose_target_indexed(item, index, exclude={"b"}) == "a"
    assert choose_target_indexed(item, index, exclude={"a", "b"}) == "d"
    assert choose_target_indexed(item, index, exclude={"a", "b", "d"}) == "c"
    assert choose_target_indexed(Movable("i", "p1", 9), index) == "d"
