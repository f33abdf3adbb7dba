"""``StepContext``: the engine's :class:`~fenix_core.contract.SessionContext`
for one step of one session, over a working set.

Every rule of the contract is checked here before anything is recorded
(a ``ContractError`` naming the host or instance and the rule). Host work
goes through the session's :class:`~fenix_core.core.pipeline.HostPipeline`:
``submit`` refuses ``DisableHost``, ``RunAction`` on a host and a ``Move``
or ``Watch`` off a host that the pipeline has not admitted, so pause,
windows, pacing and gates apply to every workflow.

What the context needs of a working set is :class:`WorkingSetPort`, kept
narrow; the working set implements it through a thin adapter
(:mod:`fenix_core.core.ws_port`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any, Protocol

from ..budgets import Labels
from ..constraints import ConstraintSet
from ..contract import (
    ContractError,
    DisableHost,
    EnableHost,
    HostAdmission,
    HostUp,
    HostView,
    InstanceView,
    Move,
    Operation,
    OpKind,
    OpRef,
    RunAction,
    SessionContext,
    SessionInfo,
    Watch,
)
from ..contract.context import S
from ..contract.ops import kind_of
from ..contract.views import CapacityView, HostsView, InstancesView, ProjectsView
from ..model import SessionRequest
from ..states import (
    DONE_HOST_STATES,
    FINAL_SESSION_STATES,
    HOST_TRANSITIONS,
    INSTANCE_TRANSITIONS,
    SESSION_TRANSITIONS,
    HostState,
    InstanceState,
    SessionState,
)
from .pipeline import HostPipeline, PipelineState

__all__ = ["MOVABLE", "PIPELINE_TIMER", "StepContext", "WorkingSetPort", "session_may_go"]

#: Instance states a Move or Watch may start from (the same as FakeContext's).
MOVABLE = frozenset(
    {InstanceState.PENDING, InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN}
)
#: The timer the pipeline sets when a wait ends by itself (a window, pacing).
PIPELINE_TIMER = "pipeline:wait"
#: Host states in which an admitted host's work has ended without a finish.
_RELEASED = frozenset({HostState.SKIPPED, HostState.REMOVED})


def session_may_go(source: SessionState, dest: SessionState) -> bool:
    """Whether the session lifecycle (states.SESSION_TRANSITIONS) has a
    transition from ``source`` to ``dest``."""
    for t in SESSION_TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        if t["dest"] == dest and source in sources:
            return True
    return False


class WorkingSetPort(Protocol):
    """What ``StepContext`` needs of a loaded session. Reads are the indexed
    views; every change is one method, so the working set knows what is dirty."""

    @property
    def session(self) -> SessionInfo: ...
    @property
    def request(self) -> SessionRequest: ...
    @property
    def hosts(self) -> HostsView: ...
    @property
    def instances(self) -> InstancesView: ...
    @property
    def projects(self) -> ProjectsView: ...
    @property
    def capacity(self) -> CapacityView: ...
    @property
    def constraints(self) -> ConstraintSet: ...

    def set_session_state(self, state: SessionState, reason: str | None) -> None: ...
    def set_host_state(self, host: str, state: HostState, reason: str | None) -> None: ...
    def set_host_times(
        self, host: str, *, started_at: datetime | None, finished_at: datetime | None
    ) -> None: ...
    def set_instance_state(
        self, instance_id: str, state: InstanceState, action: str | None
    ) -> None:
        """Set the state, and the project's chosen action unless ``action`` is None."""

    def set_host_stage(self, host: str, stage: int) -> None: ...
    def set_instance_plan(
        self,
        instance_id: str,
        wave: int | None,
        not_before: datetime | None,
        impacted_until: datetime | None,
    ) -> None: ...

    def ask_project(
        self,
        project_id: str,
        state: str,
        instance_ids: Sequence[str],
        allowed_actions: Sequence[str],
        metadata: Mapping[str, Any] | None,
        actions_at: datetime | None = None,
    ) -> None:
        """Set the project awaiting ``state`` and queue the question to it."""

    def stop_awaiting(self, project_id: str, state: str | None) -> None:
        """The project awaits nothing any more; ``state`` (unless None) is its state."""

    def notify_host(self, host: str, state: str) -> None: ...
    def notify_project(self, project_id: str, state: str, instance_ids: Sequence[str]) -> None:
        """Queue an informational notice to the project (nothing awaited)."""

    def emit(self, signal: str, payload: dict[str, Any]) -> None: ...
    def next_op_number(self) -> int: ...
    def add_op(
        self,
        key: str,
        kind: OpKind,
        op: Operation | None,
        params: Mapping[str, Any],
        timeout: float | None = None,
    ) -> None:
        """Record a pending operation (``op`` None: a pipeline gate, ``params``
        say which); ``timeout`` seconds set its deadline (None: the request's)."""

    def set_timer(self, name: str, due: datetime, data: Mapping[str, str]) -> None: ...
    def cancel_timer(self, name: str) -> None: ...
    def component(self, kind: type[S]) -> S:
        """The component's state, created with its defaults if absent; whatever
        is handed out counts as changed in this step."""

    def moved_off(self, host: str) -> Sequence[str]:
        """Instances moved off ``host`` in this session (what a gate checks)."""

    def budget_hosts(self) -> int:
        """How many hosts a percent cap is a percent of (``states.budget_hosts``),
        from counts kept up to date: no pass over the hosts."""

    def host_labels(self, host: str) -> Labels:
        """The topology labels of ``host`` that the request's caps name (kept
        in the session's data at creation)."""

    @property
    def host_guard(self) -> bool:
        """The cloud driver guards its controllers (``HostGuard``, kept in the
        session's data at creation)."""


class StepContext:
    """One step's context over ``ws`` at ``now`` (see the module docstring)."""

    def __init__(self, ws: WorkingSetPort, now: datetime) -> None:
        self._ws = ws
        self._now = now
        self._session_id = ws.session.session_id  # never changes: read once
        # The port's read views never change: attributes, not properties (a
        # workflow reads them dozens of times a step).
        self.hosts: HostsView = ws.hosts
        self.instances: InstancesView = ws.instances
        self.projects: ProjectsView = ws.projects
        self.capacity: CapacityView = ws.capacity
        self._pipeline = HostPipeline(
            ws.request.controls,
            ws.component(PipelineState),
            hosts=ws.budget_hosts(),
            labels=ws.host_labels,
        )

    # ------------------------------------------------------------------ reads

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def now(self) -> datetime:
        return self._now

    # Read through the port by a C getter, without a Python frame of their
    # own: a workflow reads them several times a step.
    request: SessionRequest = property(  # type: ignore[assignment]
        attrgetter("_ws.request"), doc="The session's request (``maintenance_at`` as moved)."
    )
    session: SessionInfo = property(  # type: ignore[assignment]
        attrgetter("_ws.session"), doc="The session's facts as they are now."
    )

    @property
    def constraints(self) -> ConstraintSet:
        return self._ws.constraints

    @property
    def pipeline(self) -> HostPipeline:
        return self._pipeline

    def _host(self, host: str, what: str) -> HostView:
        view = self.hosts.get(host)
        if view is None:
            raise ContractError(f"host {host!r}", f"not a host of this session ({what})")
        return view

    def _instance(self, instance_id: str, what: str) -> InstanceView:
        view = self.instances.get(instance_id)
        if view is None:
            raise ContractError(
                f"instance {instance_id!r}", f"not an instance of this session ({what})"
            )
        return view

    # ------------------------------------------------------------------ the pipeline

    def admit(self, host: str) -> HostAdmission:
        view = self._host(host, "admit")
        if view.in_flight:
            if self._pipeline.state.paused:  # its work goes on; no new move starts
                return HostAdmission(host, False, self._pipeline.state.waiting_reason)
            return HostAdmission(host, True)
        if self.session.state in FINAL_SESSION_STATES:
            return HostAdmission(host, False, f"the session is {self.session.state}")
        before = self._pipeline.state.waiting_cause
        guarded = view.type != "compute" and self._ws.host_guard
        answer, gate = self._pipeline.admit(host, self._now, guarded=guarded)
        if gate is not None:
            key = self._next_key()
            params = gate.params(self._ws.moved_off(gate.last_host or ""))
            self._ws.add_op(key, OpKind.GATE, None, params, gate.timeout)
        if answer.admitted:
            self._ws.set_host_times(host, started_at=self._now, finished_at=None)
            self._ws.cancel_timer(PIPELINE_TIMER)
            return answer
        if answer.until is not None:
            self._ws.set_timer(PIPELINE_TIMER, answer.until, {})
        else:
            self._ws.cancel_timer(PIPELINE_TIMER)
        if self._pipeline.state.waiting_cause != before:
            self._announce(answer.reason or "waiting")
        return answer

    def host_done(self, host: str) -> None:
        view = self._host(host, "host_done")
        if view.finished_at is not None:
            return
        if view.started_at is None:
            raise ContractError(f"host {host!r}", "host_done of a host never admitted")
        self._finish(view)

    def _finish(self, view: HostView) -> None:
        assert view.started_at is not None
        self._ws.set_host_times(view.name, started_at=view.started_at, finished_at=self._now)
        self._pipeline.finished(view.name, self._now, started_at=view.started_at)

    def skip_host(self, host: str, why: str) -> None:
        view = self._host(host, "skip_host")
        if view.state is HostState.SKIPPED:
            return
        self._check_host_move(view, HostState.SKIPPED)
        in_flight = view.in_flight
        self._ws.set_host_state(host, HostState.SKIPPED, f"skipped: {why}")
        if in_flight:
            self._pipeline.released(host)
        self._announce(f"skipped host {host}: {why}")

    def set_host_state(self, host: str, state: HostState, *, reason: str | None = None) -> None:
        view = self._host(host, "set_host_state")
        self._check_host_move(view, state)
        in_flight = view.in_flight
        self._ws.set_host_state(host, state, reason)
        if not in_flight or state == view.state:
            return
        # issue 17: a host retired or removed mid-session is finished work
        if state in DONE_HOST_STATES:
            self._finish(view)
        elif state in _RELEASED:
            # A host lost in its work: the cloud settles from here; a
            # skipped one is only let go.
            self._pipeline.released(
                host, settle_from=self._now if state == HostState.REMOVED else None
            )

    def set_host_stage(self, host: str, stage: int) -> None:
        self._host(host, "set_host_stage")
        self._ws.set_host_stage(host, stage)

    @staticmethod
    def _check_host_move(view: HostView, state: HostState) -> None:
        if view.state != state and state not in HOST_TRANSITIONS[view.state]:
            raise ContractError(f"host {view.name!r}", f"cannot go from {view.state} to {state}")

    def pause(self, reason: str) -> None:
        """The admin (or a gate saying stop) paused the session: no host starts."""
        self._pipeline.pause(reason)
        self._ws.cancel_timer(PIPELINE_TIMER)
        self._announce(f"paused: {reason}")

    def resume(self) -> None:
        self._pipeline.resume()
        self._announce("resumed")

    def gate_ended(self, host: str, *, passed: bool, stop: str | None = None) -> None:
        """A gate operation ended (the engine calls this, not the workflow)."""
        was_paused = self._pipeline.state.paused
        self._pipeline.gate_ended(host, passed=passed, stop=stop)
        if self._pipeline.state.paused and not was_paused:
            self._announce(f"paused: {stop}")

    def _announce(self, reason: str) -> None:
        info = self.session
        self._ws.emit(
            "maintenance_session",
            {
                "session_id": info.session_id,
                "state": str(info.state),
                "percent_done": info.percent_done,
                "reason": reason,
            },
        )

    # ------------------------------------------------------------------ instances, projects

    def set_instance_state(
        self, instance_id: str, state: InstanceState, *, action: str | None = None
    ) -> None:
        view = self.instances.get(instance_id) or self._instance(instance_id, "set_instance_state")
        if view.state != state and state not in INSTANCE_TRANSITIONS[view.state]:
            raise ContractError(
                f"instance {instance_id!r}", f"cannot go from {view.state} to {state}"
            )
        self._ws.set_instance_state(instance_id, state, action)

    def set_instance_plan(
        self,
        instance_id: str,
        *,
        wave: int | None,
        not_before: datetime | None,
        impacted_until: datetime | None,
    ) -> None:
        self._instance(instance_id, "set_instance_plan")
        self._ws.set_instance_plan(instance_id, wave, not_before, impacted_until)

    def _instances_of(self, project_id: str, ids: Sequence[str], what: str) -> None:
        if self.projects.get(project_id) is None:
            raise ContractError(f"project {project_id!r}", "not a project of this session")
        get = self.instances.get
        for instance_id in ids:
            inst = get(instance_id) or self._instance(instance_id, what)
            if inst.project_id != project_id:
                raise ContractError(
                    f"instance {instance_id!r}",
                    f"belongs to {inst.project_id!r}, not to {project_id!r}",
                )

    def ask(
        self,
        state: str,
        instances: Mapping[str, Sequence[str]],
        *,
        allowed_actions: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        actions_at: datetime | None = None,
    ) -> None:
        for project_id, ids in instances.items():
            self._instances_of(project_id, ids, f"ask {state}")
        for project_id, ids in instances.items():
            self._ws.ask_project(
                project_id, state, tuple(ids), tuple(allowed_actions), metadata, actions_at
            )

    def stop_awaiting(self, project_id: str, *, state: str | None = None) -> None:
        project = self.projects.get(project_id)
        if project is None:
            raise ContractError(f"project {project_id!r}", "not a project of this session")
        if project.awaiting is not None or state is not None:
            self._ws.stop_awaiting(project_id, state)

    def notify_host(self, host: str, state: str) -> None:
        self._host(host, "notify_host")
        self._ws.notify_host(host, state)

    def notify_project(self, project_id: str, state: str, instance_ids: Sequence[str]) -> None:
        self._instances_of(project_id, instance_ids, f"notify {state}")
        self._ws.notify_project(project_id, state, tuple(instance_ids))

    # ------------------------------------------------------------------ operations

    def submit(self, op: Operation) -> OpRef:
        moving: InstanceView | None = None
        if isinstance(op, Move | Watch):  # the most frequent first
            # The checks of ``_instance``, ``_host`` and ``_require_admitted``
            # written out (a move step submits one); they raise the same errors.
            what = type(op).__name__
            moving = self.instances.get(op.instance_id) or self._instance(op.instance_id, what)
            host_of = self.hosts.get
            target = op.target if isinstance(op, Move) else None
            if target is not None:
                if host_of(target) is None:
                    self._host(target, "Move target")
                if target == moving.host:
                    raise ContractError(
                        f"instance {op.instance_id!r}",
                        f"Move to the host it is on ({target}): the cloud refuses a "
                        "migration to the instance's own host",
                    )
            source = host_of(moving.host) or self._host(moving.host, what)
            if (
                source.started_at is None
                or source.finished_at is not None
                or source.state in _RELEASED
            ):
                self._require_admitted(source, op)
            if self._pipeline.state.paused:
                raise ContractError(
                    f"instance {op.instance_id!r}",
                    f"{type(op).__name__} while the session is paused (admit says so): "
                    "no new move starts until it resumes",
                )
            if moving.state not in MOVABLE:
                raise ContractError(
                    f"instance {op.instance_id!r}",
                    f"cannot start {type(op).__name__} from state {moving.state}",
                )
        elif isinstance(op, DisableHost | RunAction) and op.host is not None:
            self._require_admitted(self._host(op.host, type(op).__name__), op)
        elif isinstance(op, EnableHost | HostUp):
            self._host(op.host, type(op).__name__)
        if moving is not None:
            self._ws.set_instance_state(moving.instance_id, InstanceState.IN_ACTION, None)
        ref = OpRef(f"{self._session_id}:{self._ws.next_op_number()}", kind_of(op))
        self._ws.add_op(ref.key, ref.kind, op, {})
        return ref

    def _require_admitted(self, view: HostView, op: Operation) -> None:
        if not view.in_flight:
            raise ContractError(
                f"host {view.name!r}",
                f"{type(op).__name__} needs the host admitted by the pipeline first (admit)",
            )

    def _next_key(self) -> str:
        return f"{self.session_id}:{self._ws.next_op_number()}"

    # ------------------------------------------------------------------ timers, session

    def set_timer(self, name: str, due: datetime, **data: str) -> None:
        if name == PIPELINE_TIMER:
            raise ContractError(f"timer {name!r}", "reserved for the host pipeline")
        self._ws.set_timer(name, due, data)

    def cancel_timer(self, name: str) -> None:
        if name == PIPELINE_TIMER:
            raise ContractError(f"timer {name!r}", "reserved for the host pipeline")
        self._ws.cancel_timer(name)

    def transition(self, state: SessionState, *, reason: str | None = None) -> None:
        source = self.session.state
        if not session_may_go(source, state):
            raise ContractError(
                f"session {self.session_id!r}", f"cannot go from {source} to {state}"
            )
        self._ws.set_session_state(state, reason)

    def fail(self, reason: str) -> None:
        self.transition(SessionState.MAINTENANCE_FAILED, reason=reason)

    def state_of(self, kind: type[S]) -> S:
        if kind is PipelineState:
            raise ContractError(kind.__name__, "the host pipeline's own state")
        return self._ws.component(kind)


def _conforms(ctx: StepContext) -> SessionContext:
    """mypy checks here that StepContext implements the whole Protocol."""
    return ctx
