"""planner.drains_by_count: drain_sequence's verdict by counting, where that
is exact (one-vCPU members, no per-host limit, known room), and None
elsewhere. The constrained workflow's dry run asks it first (issue 18 item
6): the full dry run places every member of every pending host on every
target, per host opened."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.planner import GroupRule, HostLoad, Member, Target, drain_sequence, drains_by_count

GROUPS = ("g0", "g1", "g2")
UNLIMITED = {g: GroupRule(g, max_impacted=2) for g in GROUPS}


def fleet(draw: Any, *, loads: int, spares: int) -> tuple[list[HostLoad], list[Target], list[str]]:
    """``loads`` hosts with one-vCPU members of the groups and some room,
    ``spares`` hosts that only take instances (where they stay)."""
    out: list[HostLoad] = []
    targets: list[Target] = []
    for h in range(loads):
        name = f"h{h}"
        count = draw(st.integers(0, 5))
        members = tuple(
            Member(f"{name}-{k}", "p", draw(st.sampled_from(GROUPS)), 1) for k in range(count)
        )
        out.append(HostLoad(name, members, h))
        targets.append(Target(name, draw(st.integers(0, 4)), False))
    for s in range(spares):
        targets.append(Target(f"s{s}", draw(st.integers(0, 6)), True))
    order = [load.host for load in out]
    forced = draw(st.permutations(order))[: draw(st.integers(0, len(order)))]
    return out, targets, list(forced)


@pytest.mark.no_cover
@settings(max_examples=300, deadline=None)
@given(st.data(), st.booleans())
def test_counting_gives_the_dry_runs_verdict(data: st.DataObject, together: bool) -> None:
    loads, targets, first = fleet(
        data.draw, loads=data.draw(st.integers(1, 7)), spares=data.draw(st.integers(0, 3))
    )
    counted = drains_by_count(loads, targets, UNLIMITED, first=first, together=together)
    assert counted is not None
    sequence = drain_sequence(loads, targets, UNLIMITED, first=first, together=together)
    assert counted == (sequence[1] is None)


def test_counting_sees_a_host_that_gained_members_before_its_turn() -> None:
    """h0 is emptied onto h1 (the only room), then h1 holds 3 and the total
    room (3) is short of h1's members plus its room (3 + 0 = 3: it fits;
    one more member and it does not)."""
    loads = [
        HostLoad("h0", (Member("a", "p", "g0", 1),), 0),
        HostLoad("h1", (Member("b", "p", "g0", 1), Member("c", "p", "g0", 1)), 1),
    ]
    targets = [Target("h0", 1, False), Target("h1", 1, False), Target("s0", 1, True)]
    assert drains_by_count(loads, targets, UNLIMITED) is True
    assert drain_sequence(loads, targets, UNLIMITED)[1] is None
    heavier = [loads[0], HostLoad("h1", (*loads[1].members, Member("d", "p", "g0", 1)), 1)]
    assert drains_by_count(heavier, targets, UNLIMITED) is False
    assert drain_sequence(heavier, targets, UNLIMITED)[1] is not None


def test_counting_declines_where_it_would_not_be_exact() -> None:
    one = (HostLoad("h0", (Member("a", "p", "g0", 1),), 0),)
    room = [Target("h0", 0, False), Target("s0", 2, True)]
    assert drains_by_count(one, room, UNLIMITED) is True
    two_vcpus = (HostLoad("h0", (Member("a", "p", "g0", 2),), 0),)
    assert drains_by_count(two_vcpus, room, UNLIMITED) is None
    anti = {"g0": GroupRule("g0", anti_affinity=True)}
    assert drains_by_count(one, room, anti) is None
    unknown = [Target("h0", 0, False), Target("s0", None, True)]
    assert drains_by_count(one, unknown, UNLIMITED) is None
    overfull = [Target("h0", 0, False), Target("s0", -1, True)]
    assert drains_by_count(one, overfull, UNLIMITED) is None
    not_a_target = [Target("s0", 2, True)]
    assert drains_by_count(one, not_a_target, UNLIMITED) is None
    assert drains_by_count(one, room, UNLIMITED, first=["h9"]) is None
    assert drains_by_count(one, room, UNLIMITED, first=["h0", "h0"]) is None
    twice = [*room, Target("s0", 2, True)]
    assert drains_by_count(one, twice, UNLIMITED) is None


def test_hosts_draining_together_take_none_of_each_others_members() -> None:
    """h0 and h1 (a member and room for one each, no other host) drain at
    once: neither member can land on the other host, which drains too, as it
    could one host after the other. With h1 empty, h1 is emptied first and
    h0's member may wait for it."""
    loads = [
        HostLoad("h0", (Member("a", "p", "g0", 1),), 0),
        HostLoad("h1", (Member("b", "p", "g0", 1),), 1),
    ]
    targets = [Target("h0", 1, False), Target("h1", 1, False)]
    first = ["h0", "h1"]
    assert drains_by_count(loads, targets, UNLIMITED, first=first) is True
    assert drain_sequence(loads, targets, UNLIMITED, first=first)[1] is None
    assert drains_by_count(loads, targets, UNLIMITED, first=first, together=True) is False
    assert drain_sequence(loads, targets, UNLIMITED, first=first, together=True)[1] is not None
    empty_h1 = [loads[0], HostLoad("h1", (), 1)]
    assert drains_by_count(empty_h1, targets, UNLIMITED, first=first, together=True) is True
    assert drain_sequence(empty_h1, targets, UNLIMITED, first=first, together=True) == (
        ["h1", "h0"],
        None,
    )
