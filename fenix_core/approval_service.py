"""Approve, then execute, as the engines run it: the plan record a session
awaiting approval keeps, the refusals of an approval, and the check that the
plan still fits the cloud.

The :class:`~fenix_core.engine.Engine` calls it; its reads and writes are
:mod:`fenix_core.core.approvals`. The record (kept in the session's
``session`` component) is::

    {"plan_id": ..., "planned_at": ISO time, "changes": [...], "plan": {...},
     "facts": {...}, "approved_at": None}

The facts and their comparison are the pure :mod:`fenix_core.approval`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from . import approval
from .constraints import CloudConstraints, ConstraintSet
from .errors import Conflict, InvalidInput
from .model import Host, Instance, SessionRequest
from .states import SessionState

__all__ = ["ApprovalService", "CloudListing", "check_plan_id"]


class CloudListing(Protocol):
    """What a plan is made from: the cloud as read for the session, checked
    against its request (``core.factory.CloudRead`` is one)."""

    @property
    def scope(self) -> Sequence[str]: ...
    @property
    def hosts(self) -> Sequence[Host]: ...
    @property
    def instances(self) -> Sequence[Instance]: ...
    @property
    def found(self) -> CloudConstraints | None: ...


def check_plan_id(plan_id: object) -> None:
    """An approval's ``plan_id``: None or a non-empty string."""
    if plan_id is not None and (not isinstance(plan_id, str) or not plan_id):
        raise InvalidInput("plan_id", f"expected a non-empty string, got {plan_id!r}")


class ApprovalService:
    """Plans and approval checks over an engine's constraints and managers.

    ``constraints(cloud)``: the constraints in force with the cloud's
    defaults; ``managed()``: the projects with an application manager;
    ``previewer``: makes the plan (None: the record says it is unavailable)."""

    def __init__(
        self,
        *,
        previewer: approval.Previewer | None,
        constraints: Callable[[CloudConstraints | None], ConstraintSet],
        managed: Callable[[], Sequence[str]],
        now: Callable[[], datetime],
    ) -> None:
        self.previewer = previewer
        self._constraints = constraints
        self._managed = managed
        self._now = now

    def facts(self, read: CloudListing) -> dict[str, Any]:
        """What the plan over ``read`` depends on (:func:`approval.facts`)."""
        return approval.facts(
            scope=read.scope,
            hosts=read.hosts,
            instances=read.instances,
            constraints=self._constraints(read.found),
            managed=self._managed(),
        )

    def plan(
        self, req: SessionRequest, read: CloudListing, changes: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The plan record: the facts, the plan's id, and the preview
        simulated over them; ``changes``: why it replaces a plan."""
        facts = self.facts(read)
        constraints = self._constraints(read.found)
        now = self._now()
        plan = (
            self.previewer(
                req,
                scope=read.scope,
                hosts=read.hosts,
                instances=read.instances,
                cloud=read.found,
                groups=constraints.groups.values(),
                instance_constraints=constraints.instances.values(),
                now=now,
            )
            if self.previewer is not None
            else {"unavailable": "this engine has no previewer (Engine(previewer=...))"}
        )
        return {
            "plan_id": approval.plan_id(facts, req.to_dict()),
            "planned_at": now.isoformat(),
            "changes": list(changes),
            "plan": plan,
            "facts": facts,
            "approved_at": None,
        }

    def changes(self, stored: Mapping[str, Any], read: CloudListing) -> list[str]:
        """What differs between the stored plan's facts and ``read`` (empty:
        the plan still fits)."""
        facts = self.facts(read)
        if facts == stored["facts"]:
            return []
        return approval.changes(stored["facts"], facts) or ["the cloud's listing differs"]

    @staticmethod
    def require_awaiting(
        session_id: str, state: str, record: Mapping[str, Any] | None, plan_id: str | None
    ) -> None:
        """Conflict unless the session awaits approval of ``plan_id`` (None:
        of whatever plan it has)."""
        if state != SessionState.AWAITING_APPROVAL or record is None:
            raise Conflict(
                f"session does not await approval (it is {state})",
                session_id=session_id,
                state=state,
            )
        current = record["plan_id"]
        if plan_id is not None and plan_id != current:
            raise Conflict(
                f"plan {plan_id} is not the session's plan any more: it was re-planned as "
                f"{current} (review it, then approve that one)",
                session_id=session_id,
                state=state,
            )

    @staticmethod
    def approved(record: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The record of a plan approved at ``now``."""
        return {**record, "approved_at": now.isoformat()}
