"""Starting and polling a working set's operations, on
:class:`~fenix_core.core.working_set.OpRec` records.

The calls into the cloud driver, the action plug-ins and the gates are
:class:`fenix_core.operations.OperationRunner` (one table of kinds,
one place where a plug-in's exception becomes a failed status); this
module hands it a light stand-in for the ORM row it was written for and
records the answer into the working set with its setter, so the change is
written by the session's next step. The poll intervals are
:func:`fenix_core.operations.poll_interval`'s.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from ..model import OperationStatus, SessionRequest
from ..operations import OperationRunner, poll_interval
from ..store.schema import OperationRow
from .working_set import OpRec, WorkingSet

__all__ = ["CoreOperations", "record"]

#: The longest wait a plug-in's ``retry_after`` may ask for (a day), as today.
_MAX_HINT = 86400.0


class _Call:
    """What OperationRunner reads and writes of an operation row."""

    __slots__ = (
        "created_at", "deadline", "detail", "handle", "host", "instance_id", "key", "kind",
        "params", "session_id", "started_at",
    )  # fmt: skip

    def __init__(self, session_id: str, rec: OpRec) -> None:
        self.session_id = session_id
        self.key = rec.key
        self.kind = rec.kind
        self.host = rec.host
        self.instance_id = rec.instance_id
        self.params = rec.params
        self.handle = rec.handle
        self.started_at = rec.started_at
        self.created_at = rec.created_at
        self.deadline = rec.deadline
        self.detail = rec.detail


def record(ws: WorkingSet, key: str, status: OperationStatus, now: datetime, **also: Any) -> None:
    """Today's ``record_status`` on an OpRec, through the working set's
    setters (``also``: the other fields the call changed)."""
    op = ws.ops[key]
    polls = op.polls + 1
    if status.state == "running":
        hint = status.retry_after
        if hint is None or not math.isfinite(hint):
            wait = poll_interval(polls)
        else:
            wait = min(max(0.0, hint), _MAX_HINT)
        detail = status.detail or op.detail  # a poll without a word keeps the last one
        ws.answer_op(key, "running", polls, now + timedelta(seconds=wait), detail, also=also)
        return
    result = {**dict(status.result), "host": status.host, "gone": status.gone}
    ws.answer_op(key, status.state, polls, None, status.detail or None, (now, result), also)


class CoreOperations:
    """Starts and polls the operations of a working set."""

    def __init__(self, runner: OperationRunner) -> None:
        self._runner = runner

    def _call(
        self, ws: WorkingSet, key: str, request: SessionRequest, now: datetime, start: bool,
        in_doubt: bool,
    ) -> None:  # fmt: skip
        rec = ws.ops[key]
        call = _Call(ws.session.id, rec)
        row: OperationRow = call  # type: ignore[assignment]  # (what it reads of one)
        if start:
            status = self._runner.start(row, request, now, in_doubt=in_doubt)
        else:
            status = self._runner.poll(row, request, now)
        also: dict[str, Any] = {}
        if call.handle != rec.handle:
            also["handle"] = call.handle
        if call.started_at != rec.started_at:
            also["started_at"] = call.started_at
        if call.params is not rec.params:
            also["params"] = call.params
        record(ws, key, status, now, **also)

    def start(
        self, ws: WorkingSet, key: str, request: SessionRequest, now: datetime, *, in_doubt: bool
    ) -> None:
        """Start a pending operation (``in_doubt``: it may have been started
        by a process that died before its status was written)."""
        self._call(ws, key, request, now, True, in_doubt)

    def poll(self, ws: WorkingSet, key: str, request: SessionRequest, now: datetime) -> None:
        self._call(ws, key, request, now, False, False)
