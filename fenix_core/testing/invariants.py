"""Checking a run from the simulated cloud's point of view.

:func:`violations` replays ``cloud.events`` from where the instances were when
the engine attached and reports every instant at which the cloud was in a
state maintenance must never cause: a disabled host holding an instance, an
instance arriving on a disabled host, a host holding more vcpus than it has.
Use it in your own tests of workflows and managers::

    assert violations(cloud) == []
"""

from __future__ import annotations

from collections import Counter

from .cloud import SimulatedCloud

__all__ = ["migrations_per_instance", "violations"]


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
            held = sorted(i for i, h in where.items() if h == event.host)
            if held:
                found.append(f"{when}: {event.host} disabled while holding {', '.join(held)}")
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
