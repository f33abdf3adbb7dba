"""Hosts that leave the cloud during a session.

The engine marks a host the cloud no longer lists REMOVED (and ends the
operations on it); the workflow follows what was on it: the projects asked
only about its instances are no longer awaited, and its instances are looked
up (``Locate``; the engine places each where the cloud reports it) and are
then GONE (lost with the host) or pending/done where they are now.
Stateless: the caller keeps one flag while a ``Locate`` runs."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ...contract import SessionContext
from ...states import HostState, InstanceState
from .dialogue import deadline_timer

__all__ = ["ASKED_STATES", "apply_located", "lost_instances", "stop_asking_about_nothing"]

#: The questions about how to move instances off a host.
ASKED_STATES = ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE")
#: Instances still to be followed: not moving (a move ends by itself), not lost.
_FOLLOWED = frozenset(
    {
        InstanceState.PENDING,
        InstanceState.ACTION_REQUESTED,
        InstanceState.ACTION_CHOSEN,
        InstanceState.DONE,
    }
)


def lost_instances(ctx: SessionContext) -> tuple[str, ...]:
    """The instances of one removed host that are still to be looked up
    (the first such host in position order), or () if there are none."""
    removed = ctx.hosts.in_state(HostState.REMOVED)
    if not removed:  # asked at every step: most find none
        return ()
    for host in sorted(removed, key=lambda h: h.position):
        ids = tuple(i.instance_id for i in ctx.instances.on(host.name) if i.state in _FOLLOWED)
        if ids:
            return ids
    return ()


def apply_located(
    ctx: SessionContext, instance_ids: Iterable[str], stays: Collection[HostState]
) -> None:
    """A ``Locate`` ended (the engine placed the instances where the cloud
    says they are): one still on a removed host went with it (GONE); one
    elsewhere is DONE where it can stay, else PENDING (it moves again)."""
    for instance_id in instance_ids:
        inst = ctx.instances.get(instance_id)
        if inst is None or inst.state not in _FOLLOWED:
            continue
        host = ctx.hosts.get(inst.host)
        if host is None or host.state == HostState.REMOVED:
            ctx.set_instance_state(instance_id, InstanceState.GONE)
        else:
            done = host.state in stays
            ctx.set_instance_state(
                instance_id, InstanceState.DONE if done else InstanceState.PENDING
            )


def stop_asking_about_nothing(ctx: SessionContext) -> None:
    """Projects asked how to move instances of which none waits for an
    answer any more (their host was skipped or left): no longer awaited."""
    for state in ASKED_STATES:
        for project in list(ctx.projects.awaiting(state)):
            if not any(
                i.state == InstanceState.ACTION_REQUESTED
                for i in ctx.instances.of(project.project_id)
            ):
                ctx.stop_awaiting(project.project_id)
                ctx.cancel_timer(deadline_timer(project.project_id))
