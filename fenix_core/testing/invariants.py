"""Checking a run from the simulated cloud's point of view.

:func:`violations` replays ``cloud.events`` from where the instances were when
the engine attached and reports every instant at which the cloud was in a
state maintenance must never cause: a host going through its maintenance with
an instance on it, an instance arriving on a disabled host, a host holding
more vcpus than it has. A host is disabled *before* it is drained (so that
nothing lands on it meanwhile): a disabled host holding instances that are
still to leave is normal. The end of a host's maintenance is the first
``host_up_checked`` event after its disable (the engine asks whether the host
is up only once its maintenance actions are done).
Use it in your own tests of workflows and managers::

    assert violations(cloud) == []
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..constraints import ConstraintSet
from .cloud import SimulatedCloud

__all__ = ["constraint_violations", "migrations_per_instance", "violations"]


def violations(cloud: SimulatedCloud) -> list[str]:
    """Human-readable descriptions of every broken rule, in time order."""
    where = cloud.baseline
    disabled = set(cloud.baseline_disabled)
    found: list[str] = []

    def load(host: str) -> int:
        return sum(cloud.size_of(i) for i, h in where.items() if h == host)

    def arrive(when: str, instance_id: str, host: str) -> None:
        where[instance_id] = host
        if host in disabled:
            found.append(f"{when}: {instance_id} arrived on disabled host {host}")
        if load(host) > cloud.host_capacity(host):
            found.append(
                f"{when}: {host} holds {load(host)} vcpus, more than its "
                f"{cloud.host_capacity(host)}"
            )

    for event in cloud.events:
        when = event.time.isoformat()
        if event.kind == "disable_host" and event.host is not None:
            disabled.add(event.host)
        elif event.kind == "host_up_checked" and event.host is not None:
            held = sorted(i for i, h in where.items() if h == event.host)
            if held:
                found.append(
                    f"{when}: {event.host} went through its maintenance holding " + ", ".join(held)
                )
        elif event.kind == "enable_host":
            disabled.discard(event.host or "")
        elif event.kind == "host_added" and event.detail == "disabled":
            disabled.add(event.host or "")
        elif event.kind in ("migration_done", "instance_added", "instance_relocated"):
            assert event.instance_id is not None
            assert event.host is not None
            arrive(when, event.instance_id, event.host)
        elif event.kind == "instance_removed":
            where.pop(event.instance_id or "", None)
        elif event.kind == "host_removed":
            disabled.discard(event.host or "")  # a later host of that name starts afresh
    return found


def migrations_per_instance(cloud: SimulatedCloud) -> Counter[str]:
    """How many migrations of each instance completed."""
    return Counter(
        e.instance_id for e in cloud.events if e.kind == "migration_done" and e.instance_id
    )


def constraint_violations(
    cloud: SimulatedCloud,
    constraints: ConstraintSet,
    *,
    max_parallel_hosts: int | None = None,
) -> list[str]:
    """Every instant at which a run broke an instance-group rule.

    Replays ``cloud.events`` and checks, at every event:

    * no group has more than ``max_impacted_members`` members impacted, a
      member being impacted from the start of its move until
      ``recovery_time`` after the move ended (failed moves too);
    * a move never lands (arrivals in flight included) where its group's
      anti-affinity or ``max_instances_per_host`` would be broken, nor where
      the host's vcpus would be exceeded;
    * at most ``max_parallel_hosts`` hosts are disabled at once.

    ``constraints`` are the rules to check against (``engine.constraints()``),
    which must not have changed during the run.
    """
    where = dict(cloud.baseline)
    projects: dict[str, str] = {i: cloud.project_of(i) for i in where}
    incoming: Counter[str] = Counter()
    incoming_of: dict[str, str] = {}
    impacted: dict[str, tuple[str, float]] = {}  # instance -> (group, until; inf = moving)
    disabled = set(cloud.baseline_disabled)
    found: list[str] = []

    def group_of(instance_id: str) -> str:
        # The key, not the id: two projects' groups of one id are two groups.
        return constraints.group_key_of(instance_id, projects.get(instance_id, ""))

    def rule(group_key: str, _instance_id: str) -> Any:
        return constraints.group_by_key(group_key)

    def members_on(group_id: str, host: str) -> int:
        here = sum(1 for i, h in where.items() if h == host and group_of(i) == group_id)
        arriving = sum(1 for i, h in incoming_of.items() if h == host and group_of(i) == group_id)
        return here + arriving

    def load(host: str) -> int:
        here = sum(cloud.size_of(i) for i, h in where.items() if h == host)
        return here + sum(cloud.size_of(i) for i, h in incoming_of.items() if h == host)

    for event in cloud.events:
        now = event.time.timestamp()
        when = event.time.isoformat()
        for instance_id, (_g, until) in list(impacted.items()):
            if until <= now:
                del impacted[instance_id]
        if event.kind == "instance_added" and event.instance_id and event.host:
            where[event.instance_id] = event.host
            projects[event.instance_id] = cloud.project_of(event.instance_id)
        elif event.kind == "instance_removed" and event.instance_id:
            where.pop(event.instance_id, None)
        elif event.kind == "disable_host" and event.host:
            disabled.add(event.host)
            if max_parallel_hosts is not None and len(disabled) > max_parallel_hosts:
                found.append(f"{when}: {len(disabled)} hosts disabled at once")
        elif event.kind == "enable_host":
            disabled.discard(event.host or "")
        elif event.kind == "migration_started" and event.instance_id and event.detail:
            iid, target = event.instance_id, event.detail
            g = group_of(iid)
            r = rule(g, iid)
            impacted[iid] = (g, float("inf"))
            count = sum(1 for grp, _ in impacted.values() if grp == g)
            if count > r.max_impacted_members:
                found.append(
                    f"{when}: group {g} has {count} members impacted "
                    f"(max_impacted_members {r.max_impacted_members})"
                )
            limit = 1 if r.anti_affinity_group else (r.max_instances_per_host or None)
            if limit is not None and members_on(g, target) + 1 > limit:
                found.append(
                    f"{when}: {iid} sent to {target}, which would hold "
                    f"{members_on(g, target) + 1} members of group {g} (limit {limit})"
                )
            if load(target) + cloud.size_of(iid) > cloud.host_capacity(target):
                found.append(f"{when}: {iid} sent to {target}, beyond its vcpus")
            incoming_of[iid] = target
            incoming[target] += 1
        elif event.kind in ("migration_done", "migration_failed") and event.instance_id:
            iid = event.instance_id
            arrived = incoming_of.pop(iid, None)
            if arrived is not None:
                incoming[arrived] -= 1
            if event.kind == "migration_done" and event.host:
                where[iid] = event.host
            g = group_of(iid)
            impacted[iid] = (g, now + rule(g, iid).recovery_time)
    return found
