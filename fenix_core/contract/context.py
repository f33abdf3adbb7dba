"""``SessionContext``: everything a workflow may see and do in one step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import attrs

from ..constraints import ConstraintSet
from ..model import SessionRequest
from ..states import HostState, InstanceState, SessionState
from .ops import Operation, OpRef
from .state import ComponentState
from .views import CapacityView, HostsView, InstancesView, ProjectsView, SessionInfo

__all__ = ["HostAdmission", "S", "SessionContext"]

S = TypeVar("S", bound=ComponentState)


@attrs.frozen
class HostAdmission:
    """The shared per-host pipeline's answer: start now, or wait (why, and
    until when if known: a window opening, pacing, a gate, a pause)."""

    host: str
    admitted: bool
    reason: str | None = None
    until: datetime | None = None


class SessionContext(Protocol):
    @property
    def session_id(self) -> str: ...
    @property
    def now(self) -> datetime: ...
    @property
    def request(self) -> SessionRequest: ...
    @property
    def session(self) -> SessionInfo: ...
    @property
    def hosts(self) -> HostsView: ...
    @property
    def instances(self) -> InstancesView: ...
    @property
    def projects(self) -> ProjectsView: ...
    @property
    def capacity(self) -> CapacityView: ...
    @property
    def constraints(self) -> ConstraintSet:
        """The ETSI constraints in force now: those set through the API over
        the cloud's defaults, the request's ``default_group_constraints`` for
        a project's implicit group. Managers may change them mid-session: read
        them at each decision."""

    # hosts go through the shared pipeline: the only way to start work on one
    def admit(self, host: str) -> HostAdmission: ...
    def host_done(self, host: str) -> None: ...
    def skip_host(self, host: str, why: str) -> None: ...
    def set_host_state(self, host: str, state: HostState, *, reason: str | None = None) -> None: ...
    def set_host_stage(self, host: str, stage: int) -> None:
        """The workflow's progress on ``host`` (``HostView.stage``; its meaning
        is the workflow's)."""

    # instances and projects
    def set_instance_state(
        self, instance_id: str, state: InstanceState, *, action: str | None = None
    ) -> None: ...
    def set_instance_plan(
        self,
        instance_id: str,
        *,
        wave: int | None,
        not_before: datetime | None,
        impacted_until: datetime | None,
    ) -> None:
        """The workflow's plan for the instance (``InstanceView.wave``,
        ``not_before``, ``impacted_until``), all three set at once."""

    def ask(
        self,
        state: str,
        instances: Mapping[str, Sequence[str]],
        *,
        allowed_actions: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        actions_at: datetime | None = None,
    ) -> None:
        """Send ``state`` to each project about its ``instances`` and await its
        answer. ``actions_at``: when the engine will act on the instances at
        the earliest (a lead time), told in the notice; default: the reply
        deadline."""

    def stop_awaiting(self, project_id: str, *, state: str | None = None) -> None:
        """The project's answer is no longer awaited (its deadline passed, or
        what it was asked about is gone); ``state`` (e.g. ``DEFAULT_<S>``: the
        workflow acts for it) becomes its state, None keeps it, even when
        the project awaits nothing any more (the engine took its NACK before
        ``on_reply``); without ``state`` such a project is left as it is."""

    def notify_host(self, host: str, state: str) -> None: ...
    def notify_project(self, project_id: str, state: str, instance_ids: Sequence[str]) -> None: ...

    # operations: recorded now, started by the engine after the step commits
    def submit(self, op: Operation) -> OpRef: ...

    # named timers: at most one per name; setting one again moves it
    def set_timer(self, name: str, due: datetime, **data: str) -> None: ...
    def cancel_timer(self, name: str) -> None: ...

    # the session's state and the components' own state
    def transition(self, state: SessionState, *, reason: str | None = None) -> None: ...
    def fail(self, reason: str) -> None: ...
    def state_of(self, kind: type[S]) -> S: ...
