"""Stuck work: an operation that ended because its deadline passed
(``OpResult.timed_out``), escalated with the request's
``controls.escalation`` per kind of work.

The workflow applies ``fail`` and ``skip_host``. ``wait_and_notify`` (keep
following the operation with a new deadline and tell the admin) is the
engine's: it renews the operation instead of ending it, so a workflow never
receives a timed-out operation of a kind under that policy; if it does, its
own handling applies, as for a kind without a policy. Stateless."""

from __future__ import annotations

import attrs

from ...contract import Move, OpResult, RunAction, SessionContext, Watch
from ...contract.ops import OpKind, kind_of

__all__ = ["ESCALATED", "STUCK_KIND", "Stuck", "stuck_work"]

#: Operation kind -> kind of stuck work (``controls.escalation`` keys).
STUCK_KIND = {
    OpKind.MOVE: "migration",
    OpKind.WATCH: "own_action",
    OpKind.ACTION: "action",
    OpKind.HOST_UP: "host_up",
}
#: The policies a workflow applies itself.
ESCALATED = frozenset({"fail", "skip_host"})


@attrs.frozen
class Stuck:
    policy: str  # fail | skip_host
    host: str | None  # the host the work was on (a move: the host it leaves)
    why: str  # "<what> is stuck: <detail>"


def stuck_work(ctx: SessionContext, result: OpResult) -> Stuck | None:
    """How to escalate ``result``, or None: not stuck, or no policy the
    workflow applies (its own handling goes on)."""
    if not result.timed_out or result.ref.kind not in STUCK_KIND:
        return None
    kind = STUCK_KIND[kind_of(result.op)]
    policy = ctx.request.controls.policy(kind)
    if policy not in ESCALATED:
        return None
    op = result.op
    host: str | None
    if isinstance(op, Move | Watch):
        inst = ctx.instances.get(op.instance_id)
        host = inst.host if inst is not None else None
        what = (
            f"migration of {op.instance_id} off {host}"
            if isinstance(op, Move)
            else f"the manager's own action on {op.instance_id} (off {host})"
        )
    elif isinstance(op, RunAction):
        host = op.host
        what = f"action {op.spec.plugin!r} on {host or 'the session'}"
    else:
        host = getattr(op, "host", None)
        what = f"host {host} coming back up"
    assert policy is not None
    return Stuck(policy, host, f"{what} is stuck: {result.detail}")
