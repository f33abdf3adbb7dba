"""What Nova server groups tell the engine.

Every server group with a member among the instances becomes a
:class:`~fenix_core.placement_rules.PlacementRule`: Nova's scheduler enforces
``anti-affinity`` (with its ``max_server_per_host`` rule, 2.64+) and
``affinity`` on every move, also on a requested host, and weighs by the soft
policies; the rolling workflow keeps these when it picks a target.

A hard ``anti-affinity`` group also gives default ETSI group constraints to
the constraint-aware workflow: at most ``max_server_per_host`` members per
host (``anti_affinity_group`` when that is 1) and one impacted member at a
time. The other policies give no group constraint (the project can set its
own).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import Any

from fenix_core.constraints import CloudConstraints, GroupConstraints
from fenix_core.placement_rules import POLICIES, PlacementRule

__all__ = ["server_group_constraints"]


def _policy(group: Any) -> str | None:
    # ``policy`` from microversion 2.64, ``policies`` (a list) before.
    if group.policy:
        return str(group.policy)
    policies = group.policies or []
    return str(policies[0]) if policies else None


def _max_per_host(group: Any) -> int:
    rules = group.rules or {}
    return int(rules.get("max_server_per_host") or 1)


def server_group_constraints(groups: Iterable[Any], instance_ids: Set[str]) -> CloudConstraints:
    """The rules of the server groups with members among ``instance_ids``."""
    found: list[GroupConstraints] = []
    members: dict[str, str] = {}
    placement: list[PlacementRule] = []
    for group in groups:
        policy = _policy(group)
        all_members = [str(m) for m in group.member_ids or []]
        ours = [m for m in all_members if m in instance_ids]
        if policy not in POLICIES or not ours:
            continue
        limit = _max_per_host(group) if policy == "anti-affinity" else 1
        placement.append(
            PlacementRule(
                group_id=str(group.id),
                policy=policy,
                members=tuple(all_members),
                max_per_host=limit,
                name=str(group.name or ""),
            )
        )
        if policy != "anti-affinity":
            continue
        found.append(
            GroupConstraints(
                group_id=str(group.id),
                project_id=str(group.project_id),
                group_name=str(group.name or ""),
                anti_affinity_group=limit == 1,
                max_instances_per_host=limit,
                max_impacted_members=1,
            )
        )
        members.update(dict.fromkeys(ours, str(group.id)))
    return CloudConstraints(groups=tuple(found), members=members, placement=tuple(placement))
