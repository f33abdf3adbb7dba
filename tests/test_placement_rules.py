"""The cloud's placement rules as the planner applies them (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fenix_core import planner
from fenix_core.errors import InvalidInput
from fenix_core.placement_rules import PlacementRule, host_limits

HOSTS = ["h0", "h1", "h2", "h3"]


def test_anti_affinity_avoids_hosts_at_the_limit_counting_arrivals():
    rule = PlacementRule("g", "anti-affinity", ["a", "b", "c"], max_per_host=2)
    limits = host_limits("a", [rule], {"a": ["h0"], "b": ["h1"], "c": ["h2", "h1"]})
    assert limits.avoid == {"h1"}  # b there, c arriving: two
    assert limits.only is None
    assert limits.stuck is None


def test_affinity_allows_only_the_hosts_of_other_members():
    rule = PlacementRule("g", "affinity", ["a", "b"])
    assert host_limits("a", [rule], {"a": ["h0"], "b": ["h1"]}).only == {"h1"}
    together = host_limits("a", [rule], {"a": ["h0"], "b": ["h0"]})
    assert together.only == frozenset()
    assert together.stuck == rule
    assert host_limits("a", [PlacementRule("g", "affinity", ["a"])], {"a": ["h0"]}).stuck


def test_soft_rules_are_preferences():
    spread = PlacementRule("s", "soft-anti-affinity", ["a", "b"])
    near = PlacementRule("n", "soft-affinity", ["a", "c"])
    limits = host_limits("a", [spread, near], {"a": ["h0"], "b": ["h1"], "c": ["h2"]})
    assert (limits.avoid, limits.only) == (frozenset(), None)
    assert limits.penalty == {"h1": 1, "h2": -1}
    slots = [planner.Slot(h, 8, stays=False) for h in ("h1", "h2", "h3")]
    assert planner.choose_target(planner.Movable("a", "p", 1, limits), slots) == "h2"


def test_rules_are_validated_naming_the_field():
    with pytest.raises(InvalidInput, match="policy"):
        PlacementRule("g", "anti_affinity", ["a"])
    with pytest.raises(InvalidInput, match="members"):
        PlacementRule.from_dict({"group_id": "g", "policy": "affinity", "members": "a"})
    with pytest.raises(InvalidInput, match="max_per_host"):
        PlacementRule("g", "anti-affinity", ["a"], max_per_host=0)
    rule = PlacementRule("g", "anti-affinity", ["a", "b"], max_per_host=2, name="db")
    assert PlacementRule.from_dict(rule.to_dict()) == rule


def test_host_types_widen_the_placement_class_and_are_validated():
    wide = PlacementRule("k", "host-types", ["a"], host_types=["controller", "compute"])
    assert wide.host_types == ("compute", "controller")
    limits = host_limits("a", [wide], {"a": ["h0"]})
    assert limits.types == {"compute", "controller"}
    assert (limits.avoid, limits.only, limits.stuck) == (frozenset(), None, None)
    # Two rules: the types both allow.
    narrow = PlacementRule("n", "host-types", ["a"], host_types=["controller"])
    assert host_limits("a", [wide, narrow], {}).types == {"controller"}
    assert host_limits("b", [wide], {}).types is None  # not a member: its host's type
    assert PlacementRule.from_dict(wide.to_dict()) == wide
    assert "host_types" not in PlacementRule("g", "affinity", ["a"]).to_dict()
    with pytest.raises(InvalidInput, match="host_types"):
        PlacementRule("k", "host-types", ["a"])
    with pytest.raises(InvalidInput, match="host_types"):
        PlacementRule("k", "host-types", ["a"], host_types=["gpu"])
    with pytest.raises(InvalidInput, match="host_types"):
        PlacementRule("g", "anti-affinity", ["a"], host_types=["compute"])


@given(
    where=st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]), st.lists(st.sampled_from(HOSTS), max_size=2)
    ),
    policy=st.sampled_from(["anti-affinity", "affinity"]),
    free=st.lists(st.integers(0, 4), min_size=4, max_size=4),
)
def test_choose_target_never_picks_a_host_a_hard_rule_forbids(where, policy, free):
    where = {**where, "a": ["h0"]}
    rule = PlacementRule("g", policy, ["a", "b", "c", "d"])
    limits = host_limits("a", [rule], where)
    slots = [planner.Slot(h, f, stays=False) for h, f in zip(HOSTS[1:], free[1:], strict=True)]
    target = planner.choose_target(planner.Movable("a", "p", 1, limits), slots)
    if target is None:
        return
    others = [h for m, hosts in where.items() if m != "a" for h in hosts]
    if policy == "anti-affinity":
        assert target not in others
    else:
        assert target in others
