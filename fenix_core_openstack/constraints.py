"""Default group constraints from Nova server groups.

A server group with the ``anti-affinity`` policy says its members must never
share a host; maintenance then must not take more than one member out at a
time either. Each such group becomes a
:class:`~fenix_core.constraints.GroupConstraints` with anti-affinity, at most
one member per host and one impacted member at a time. ``soft-anti-affinity``,
``affinity`` and ``soft-affinity`` groups give no constraint (the scheduler
may already have broken them; the project can set its own).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import Any

from fenix_core.constraints import CloudConstraints, GroupConstraints

__all__ = ["server_group_constraints"]


def _policy(group: Any) -> str | None:
    # ``policy`` from microversion 2.64, ``policies`` (a list) before.
    if group.policy:
        return str(group.policy)
    policies = group.policies or []
    return str(policies[0]) if policies else None


def server_group_constraints(groups: Iterable[Any], instance_ids: Set[str]) -> CloudConstraints:
    """Constraints of the anti-affinity groups with members among ``instance_ids``."""
    found: list[GroupConstraints] = []
    members: dict[str, str] = {}
    for group in groups:
        if _policy(group) != "anti-affinity":
            continue
        ours = [m for m in group.member_ids or [] if m in instance_ids]
        if not ours:
            continue
        found.append(
            GroupConstraints(
                group_id=str(group.id),
                project_id=str(group.project_id),
                group_name=str(group.name or ""),
                anti_affinity_group=True,
                max_instances_per_host=1,
                max_impacted_members=1,
            )
        )
        members.update(dict.fromkeys(ours, str(group.id)))
    return CloudConstraints(groups=tuple(found), members=members)
