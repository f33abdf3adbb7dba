"""``controls.escalation`` "wait_and_notify", the engine's part: work that
passed its deadline is followed on —
the same operation, key and handle, polled again at once with a new
deadline of the kind's timeout (``gate_timeout`` for a gate) — and the
admin is told (``maintenance_session``, reason "<what> is stuck: <detail>;
still waiting"). The workflow never sees it end: a renewed operation is
not an ended one. The other policies are the workflow's
(``workflows/components/escalation.py``).

The session view's ``stuck`` list (:func:`stuck_work`) is read from the
operation records, not kept in the session: an operation that failed by
its deadline is stuck work under the policy the request names for its kind
("default": the workflow's own handling); a renewed one carries
:data:`STUCK_MARK` in its ``result`` while it runs — an operation's poll
writes ``result`` only when it ends, so the mark goes with its end (ended
well, it is no longer stuck; timed out again, it is renewed and marked
again)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from ..contract import OpStatus
from ..controls import STUCK_KIND_OF_OPERATION, Controls, describe_stuck
from ..model import StuckWork
from .working_set import OpRec
from .ws_port import WorkingSetAdapter

__all__ = ["STUCK_MARK", "WAIT_AND_NOTIFY", "stuck_work", "timed_out", "wait_longer"]

WAIT_AND_NOTIFY = "wait_and_notify"

#: The key of a renewed operation's ``result`` that says why it is stuck.
STUCK_MARK = "stuck"

#: How the deadline's failure reads (``OperationRunner.poll``).
TIMED_OUT = "timed out"
_FAILED = OpStatus.FAILED.value  # read at each poll: no Enum descriptor call


def timed_out(rec: OpRec) -> bool:
    """Whether the operation failed because its deadline passed (not, say,
    because its host left the cloud at that instant)."""
    return (
        rec.status == _FAILED
        and (rec.detail or "").startswith(TIMED_OUT)
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
    why = _why(rec, kind)
    adapter.ws.update_op(
        key,
        status=OpStatus.RUNNING.value,
        finished_at=None,
        next_poll=now,
        deadline=now + timedelta(seconds=period),
        result={STUCK_MARK: why},
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


def _host(rec: OpRec) -> str | None:
    params = rec.params or {}
    host = rec.host or params.get("source") or params.get("host")
    return None if host is None else str(host)


def _why(rec: OpRec, kind: str) -> str:
    what = describe_stuck(kind, rec.instance_id, rec.params or {}, _host(rec))
    return f"{what} is stuck: {rec.detail}"


def stuck_work(ops: Iterable[OpRec], controls: Controls) -> tuple[StuckWork, ...]:
    """The session view's stuck work among ``ops`` (a session's operation
    records), oldest first: renewed ones still running, and those that
    failed by their deadline (``controls``: the session's, for the policy)."""
    found: list[StuckWork] = []
    for rec in ops:
        kind = STUCK_KIND_OF_OPERATION.get(rec.kind)
        if kind is None:
            continue
        mark = (rec.result or {}).get(STUCK_MARK)
        if rec.status == OpStatus.RUNNING.value and isinstance(mark, str):
            why, policy = mark, WAIT_AND_NOTIFY
        elif timed_out(rec):
            why, policy = _why(rec, kind), controls.policy(kind) or "default"
        else:
            continue
        since = rec.started_at or rec.created_at
        found.append(StuckWork(kind, _host(rec), rec.instance_id, why, since, policy))
    return tuple(sorted(found, key=lambda w: w.since))
