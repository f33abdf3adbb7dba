"""``controls.escalation`` "wait_and_notify", the engine's part (today's
``SessionControls.stuck``): work that passed its deadline is followed on —
the same operation, key and handle, polled again at once with a new
deadline of the kind's timeout (``gate_timeout`` for a gate) — and the
admin is told (``maintenance_session``, reason "<what> is stuck: <detail>;
still waiting"). The workflow never sees it end: a renewed operation is
not an ended one. The other policies are the workflow's
(``workflows/v2/components/escalation.py``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..contract import OpStatus
from ..controls import STUCK_KIND_OF_OPERATION, describe_stuck
from .working_set import OpRec
from .ws_port import WorkingSetAdapter

__all__ = ["WAIT_AND_NOTIFY", "timed_out", "wait_longer"]

WAIT_AND_NOTIFY = "wait_and_notify"


def timed_out(rec: OpRec) -> bool:
    """Whether the operation failed because its deadline passed."""
    return (
        rec.status == OpStatus.FAILED.value
        and rec.deadline is not None
        and rec.finished_at is not None
        and rec.finished_at >= rec.deadline
    )


def wait_longer(adapter: WorkingSetAdapter, key: str, now: datetime) -> bool:
    """Renew operation ``key`` if it timed out under ``wait_and_notify``
    (and tell the admin); False if it did not, or another policy applies."""
    rec = adapter.ws.ops[key]
    kind = STUCK_KIND_OF_OPERATION.get(rec.kind)
    if kind is None or rec.handled or not timed_out(rec):
        return False
    request = adapter.request
    if request.controls.policy(kind) != WAIT_AND_NOTIFY:
        return False
    period = request.controls.gate_timeout if kind == "gate" else request.timeout(kind)
    params = rec.params or {}
    host = rec.host or params.get("source") or params.get("host")
    why = f"{describe_stuck(kind, rec.instance_id, params, host)} is stuck: {rec.detail}"
    adapter.ws.update_op(
        key,
        status=OpStatus.RUNNING.value,
        finished_at=None,
        next_poll=now,
        deadline=now + timedelta(seconds=period),
    )
    s = adapter.ws.session
    adapter.emit(
        "maintenance_session",
        {
            "session_id": s.id,
            "state": s.state,
            "percent_done": s.percent_done,
            "reason": f"{why}; still waiting",
        },
    )
    return True
