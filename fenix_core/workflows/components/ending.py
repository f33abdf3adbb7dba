"""What a workflow does once its session has ended without completing
(failed, or cancelled by the admin). Stateless: the caller remembers that
it ran (one flag) and which host it disabled."""

from __future__ import annotations

from ...contract import SessionContext
from ...states import HostState, InstanceState
from .dialogue import deadline_timer

__all__ = ["NOT_ENABLED_AGAIN", "wind_down"]

#: Hosts a session that ended leaves as they are: skipped on purpose,
#: retired for good, or gone from the cloud.
NOT_ENABLED_AGAIN = frozenset({HostState.SKIPPED, HostState.DECOMMISSIONED, HostState.REMOVED})


def wind_down(ctx: SessionContext, reason: str) -> None:
    """Stop asking (no project is awaited, no deadline runs), give the
    instances asked about or waiting for their move back to PENDING (moves
    in flight are followed to their end by the caller), put a host being
    drained back to PENDING and mark a host in maintenance FAILED."""
    for project in list(ctx.projects.awaiting()):
        ctx.stop_awaiting(project.project_id)
        ctx.cancel_timer(deadline_timer(project.project_id))
    for state in (InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN):
        for inst in list(ctx.instances.in_state(state)):
            ctx.set_instance_state(inst.instance_id, InstanceState.PENDING)
    for host in list(ctx.hosts.in_state(HostState.DRAINING, HostState.DRAINED)):
        ctx.set_host_state(host.name, HostState.PENDING)
    for host in list(ctx.hosts.in_state(HostState.IN_MAINTENANCE)):
        ctx.set_host_state(host.name, HostState.FAILED, reason=host.reason or reason)
