"""``FakeContext``: an in-memory :class:`~fenix_core.contract.SessionContext`
over plain dicts, with brute-force indexes (every query scans). It is the
oracle the engine's indexed context is compared with, and the bed on which
workflows are tested without an engine.

It enforces the contract's rules, each refusal a ``ContractError`` raised
before anything is recorded: host work (``DisableHost``, ``RunAction`` on a
host, a ``Move`` off a host) needs the host admitted by the pipeline first;
``Move`` puts the instance IN_ACTION itself (from PENDING, ACTION_REQUESTED
or ACTION_CHOSEN; any other state is refused by name); unknown hosts and
instances are refused. ``closed`` hosts stand for the pipeline saying
"wait" (a window, pacing, a gate): ``admit`` answers not admitted.
``paused`` (a reason, or None) stands for the admin's pause, with the
engine's rule: ``admit`` answers not admitted for every host (work already
under way on a host goes on), and a new ``Move`` or ``Watch`` is refused."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import count
from typing import Any

import attrs

from ..constraints import DEFAULT_GROUP, ConstraintSet
from ..contract import (
    ComponentState,
    ContractError,
    DisableHost,
    EnableHost,
    HostAdmission,
    HostUp,
    HostView,
    InstanceView,
    Move,
    Operation,
    OpRef,
    ProjectView,
    RunAction,
    SessionContext,
    SessionInfo,
    Watch,
)
from ..contract.context import S
from ..contract.ops import kind_of
from ..model import SessionRequest
from ..placement_rules import HostLimits, PlacementRule, host_limits
from ..states import (
    HOST_TRANSITIONS,
    INSTANCE_TRANSITIONS,
    HostState,
    InstanceState,
    SessionState,
)

__all__ = ["MOVABLE", "FakeContext"]

#: Instance states a Move may start from.
MOVABLE = frozenset(
    {InstanceState.PENDING, InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN}
)


_MARKS_KEPT = 64
#: Where every FakeContext takes its capacity marks.
_CAPACITY_MARKS = count(1)


class _Hosts:
    def __init__(self, ctx: FakeContext) -> None:
        self._ctx = ctx

    def get(self, name: str) -> HostView | None:
        return self._ctx._hosts.get(name)

    def in_state(self, *states: HostState, type: str | None = None) -> Collection[HostView]:
        return [h for h in self if h.state in states and (type is None or h.type == type)]

    def without_instances(self, *states: HostState) -> Collection[HostView]:
        gone = (InstanceState.GONE, InstanceState.OUT_OF_SCOPE)
        busy = {i.host for i in self._ctx._instances.values() if i.state not in gone}
        return [h for h in self.in_state(*states) if h.name not in busy]

    def changes(self) -> int:
        return self._ctx._changes()

    def __len__(self) -> int:
        return len(self._ctx._hosts)

    def __iter__(self) -> Iterator[HostView]:
        return iter(sorted(self._ctx._hosts.values(), key=lambda h: h.position))


class _Instances:
    def __init__(self, ctx: FakeContext) -> None:
        self._ctx = ctx

    def get(self, instance_id: str) -> InstanceView | None:
        return self._ctx._instances.get(instance_id)

    def _where(self, **match: Any) -> list[InstanceView]:
        return sorted(
            (
                i
                for i in self._ctx._instances.values()
                if all(getattr(i, k) == v for k, v in match.items())
            ),
            key=lambda i: i.instance_id,
        )

    def on(self, host: str) -> Collection[InstanceView]:
        return self._where(host=host)

    def of(self, project_id: str) -> Collection[InstanceView]:
        return self._where(project_id=project_id)

    def of_on(self, project_id: str, host: str) -> Collection[InstanceView]:
        return self._where(project_id=project_id, host=host)

    def in_state(self, state: InstanceState) -> Collection[InstanceView]:
        return self._where(state=state)

    def changes(self) -> int:
        return self._ctx._changes()

    def change_mark(self) -> int:
        return self._ctx._change_mark()

    def changed_since(self, mark: int) -> Collection[str] | None:
        return self._ctx._changed_since(mark)


class _Projects:
    def __init__(self, ctx: FakeContext) -> None:
        self._ctx = ctx

    def get(self, project_id: str) -> ProjectView | None:
        return self._ctx._projects.get(project_id)

    def awaiting(self, state: str | None = None) -> Collection[ProjectView]:
        return [
            p
            for p in self._ctx._projects.values()
            if p.awaiting is not None and (state is None or p.awaiting == state)
        ]

    def awaiting_count(self, state: str | None = None) -> int:
        return len(self.awaiting(state))

    def managed(self) -> Collection[ProjectView]:
        return [p for p in self._ctx._projects.values() if p.managed]


class _Capacity:
    def __init__(self, ctx: FakeContext) -> None:
        self._ctx = ctx

    def free(self, host: str) -> int:
        view = self._ctx._require_host(host, "capacity")
        return view.vcpus - self._taken().get(host, 0)

    def _taken(self) -> dict[str, int]:
        """Host -> vCPUs taken: its instances (a GONE one, scaled in or
        re-created elsewhere, takes no room) and the moves heading to it (an
        incoming instance takes its room from the start of the move)."""
        instances = self._ctx._instances
        taken: dict[str, int] = {}
        for i in instances.values():
            if i.state is not InstanceState.GONE:
                taken[i.host] = taken.get(i.host, 0) + i.vcpus
        for instance_id, to in self._ctx._in_flight():
            taken[to] = taken.get(to, 0) + instances[instance_id].vcpus
        return taken

    def limits(self, instance_id: str) -> HostLimits:
        self._ctx._require_instance(instance_id, "capacity")
        return host_limits(instance_id, self._ctx.rules, self._ctx._placements())

    def most_free(self, placement_class: str) -> Iterator[tuple[str, int]]:
        taken = self._taken()
        found = sorted(
            (-(h.vcpus - taken.get(h.name, 0)), h.name)
            for h in self._ctx._hosts.values()
            if h.type == placement_class and h.enabled and h.vcpus > 0
        )
        return iter((name, -minus) for minus, name in found)

    def room(
        self,
        placement_class: str,
        first: int,
        states: Collection[HostState],
        *,
        exclude: Collection[str] = (),
        least: int = 1,
    ) -> int:
        hosts = self._ctx._hosts
        kept = [
            (n, f)
            for n, f in self.most_free(placement_class)
            if n not in exclude and f >= max(1, least)
        ]
        return sum(max(0, f) for n, f in kept[: max(0, first)] if hosts[n].state in states)

    def changes(self) -> int:
        return self._ctx._changes()

    def change_mark(self) -> int:
        return self._ctx._capacity_mark(self._stands())

    def changed_since(self, mark: int) -> Collection[str] | None:
        then = self._ctx._capacity_marks.get(mark)
        if then is None:
            return None
        now = self._stands()
        return {h for h, stand in now.items() if then.get(h) != stand}

    def _stands(self) -> dict[str, tuple[int, bool, HostState, str, int]]:
        """Host -> what ``changed_since`` answers for: (free vCPUs, enabled,
        state, type, vCPUs)."""
        taken = self._taken()
        return {
            h.name: (h.vcpus - taken.get(h.name, 0), h.enabled, h.state, h.type, h.vcpus)
            for h in self._ctx._hosts.values()
        }

    def targets(self, instance_id: str, *, exclude: Collection[str] = ()) -> Iterator[str]:
        inst = self._ctx._require_instance(instance_id, "capacity")
        limits = self.limits(instance_id)
        classes = limits.types or {self._ctx._hosts[inst.host].type}
        taken = self._taken()
        fits = [
            (limits.penalty.get(h.name, 0), -(h.vcpus - taken.get(h.name, 0)), h.name)
            for h in self._ctx._hosts.values()
            if h.type in classes
            and h.enabled
            and h.name != inst.host
            and h.name not in exclude
            and limits.allows(h.name)
            and h.vcpus - taken.get(h.name, 0) >= inst.vcpus
        ]
        return iter(name for *_, name in sorted(fits))


class FakeContext:
    """A session's step in memory. ``submitted``, ``asked``, ``notified`` (hosts),
    ``told`` (projects, informational), ``timers`` and ``transitions`` record
    what the workflow did."""

    def __init__(
        self,
        *,
        now: datetime,
        request: SessionRequest | None = None,
        hosts: Iterable[HostView] = (),
        instances: Iterable[InstanceView] = (),
        projects: Iterable[ProjectView] = (),
        closed: Mapping[str, str] | None = None,
        rules: Iterable[PlacementRule] = (),
        session_id: str = "s-1",
        workflow: str = "rolling",
        allowed_actions: Sequence[str] = (),
        constraints: ConstraintSet | None = None,
    ) -> None:
        self._now = now
        self._request = request if request is not None else SessionRequest()
        #: What ``constraints`` hands out (a test replaces it: a manager's change).
        self.constraint_set = (
            constraints
            if constraints is not None
            else ConstraintSet(
                default_group=self._request.default_group_constraints or DEFAULT_GROUP
            )
        )
        self._hosts = {h.name: h for h in hosts}
        self._instances = {i.instance_id: i for i in instances}
        for inst in self._instances.values():
            self._require_host(inst.host, f"instance {inst.instance_id}")
        self._projects = {p.project_id: p for p in projects}
        self.closed = dict(closed or {})
        self.paused: str | None = None
        self.rules = tuple(rules)
        self._session = SessionInfo(
            session_id, workflow, SessionState.MAINTENANCE, None, 0, tuple(allowed_actions)
        )
        self.admitted: set[str] = set()
        self.done: set[str] = set()
        self.skipped: dict[str, str] = {}
        self.submitted: list[tuple[OpRef, Operation]] = []
        self.asked: list[tuple[str, dict[str, tuple[str, ...]]]] = []
        self.notified: list[tuple[str, str]] = []
        self.told: list[tuple[str, str, tuple[str, ...]]] = []
        self.timers: dict[str, tuple[datetime, dict[str, str]]] = {}
        self.transitions: list[tuple[SessionState, str | None]] = []
        self.components: dict[type[ComponentState], ComponentState] = {}
        self._seen: tuple[Any, ...] | None = None
        self._changed = 0
        # Mark -> the instances as they were when it was read (the last
        # _MARKS_KEPT marks: an older one is unknown, as the engine's log
        # forgets old changes).
        self._marks: dict[int, dict[str, InstanceView]] = {}
        self._last_mark = 0
        # The same for the capacity (``capacity.change_mark``): mark -> each
        # host's free vCPUs, enabled flag, state, type and vCPUs as they were.
        # The marks are this process's (no two contexts share one: a mark of
        # another context is unknown here).
        self._capacity_marks: dict[int, dict[str, tuple[int, bool, HostState, str, int]]] = {}

    # ------------------------------------------------------------------ reads

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def now(self) -> datetime:
        return self._now

    @now.setter
    def now(self, value: datetime) -> None:
        self._now = value

    @property
    def request(self) -> SessionRequest:
        return self._request

    @property
    def session(self) -> SessionInfo:
        return self._session

    @property
    def hosts(self) -> _Hosts:
        return _Hosts(self)

    @property
    def instances(self) -> _Instances:
        return _Instances(self)

    @property
    def projects(self) -> _Projects:
        return _Projects(self)

    @property
    def capacity(self) -> _Capacity:
        return _Capacity(self)

    @property
    def constraints(self) -> ConstraintSet:
        return self.constraint_set

    # ------------------------------------------------------------------ hosts

    def _require_host(self, host: str, what: str) -> HostView:
        view = self._hosts.get(host)
        if view is None:
            raise ContractError(f"host {host!r}", f"not a host of this session ({what})")
        return view

    def _require_instance(self, instance_id: str, what: str) -> InstanceView:
        view = self._instances.get(instance_id)
        if view is None:
            raise ContractError(
                f"instance {instance_id!r}", f"not an instance of this session ({what})"
            )
        return view

    def _placements(self) -> dict[str, set[str]]:
        """Instance -> the hosts it occupies: its own, and a Move's target
        while the move is in flight (the cloud counts the arrival there)."""
        where = {
            i.instance_id: {i.host} if i.state is not InstanceState.GONE else set()
            for i in self._instances.values()
        }
        for instance_id, target in self._in_flight():
            where[instance_id].add(target)
        return where

    def _changes(self) -> int:
        """What the views' ``changes`` answer (one number for the three): it
        moves on when the hosts, the instances or the moves in flight differ
        from the last look, compared whole (a test may change them directly)."""
        seen = (
            tuple(self._hosts.items()),
            tuple(self._instances.items()),
            tuple(self._in_flight()),
        )
        if seen != self._seen:
            self._seen = seen
            self._changed += 1
        return self._changed

    def _change_mark(self) -> int:
        self._last_mark += 1
        self._marks[self._last_mark] = dict(self._instances)
        if len(self._marks) > _MARKS_KEPT:
            del self._marks[next(iter(self._marks))]
        return self._last_mark

    def _changed_since(self, mark: int) -> set[str] | None:
        """The instances whose view differs from the one at ``mark`` (or
        added since), compared whole (a test may change them directly)."""
        then = self._marks.get(mark)
        if then is None:
            return None
        return {i for i, view in self._instances.items() if then.get(i) != view}

    def _capacity_mark(self, stands: dict[str, tuple[int, bool, HostState, str, int]]) -> int:
        mark = next(_CAPACITY_MARKS)
        self._capacity_marks[mark] = stands
        if len(self._capacity_marks) > _MARKS_KEPT:
            del self._capacity_marks[next(iter(self._capacity_marks))]
        return mark

    def reloaded(self) -> None:
        """The session as loaded again (another process stepped it, a
        crash): no mark read before is known any more."""
        self._marks.clear()
        self._capacity_marks.clear()

    def _in_flight(self) -> Iterator[tuple[str, str]]:
        """(instance, target) of every Move with a target still under way."""
        for _, op in self.submitted:
            if not isinstance(op, Move) or op.target is None:
                continue
            moving = self._instances[op.instance_id]
            if moving.state is InstanceState.IN_ACTION and moving.host != op.target:
                yield op.instance_id, op.target

    def admit(self, host: str) -> HostAdmission:
        self._require_host(host, "admit")
        if self.paused is not None:
            return HostAdmission(host, False, f"paused: {self.paused}")
        if host in self.closed:
            return HostAdmission(host, False, self.closed[host])
        self.admitted.add(host)
        return HostAdmission(host, True)

    def host_done(self, host: str) -> None:
        self._require_host(host, "host_done")
        if host not in self.admitted:
            raise ContractError(f"host {host!r}", "host_done of a host never admitted")
        self.done.add(host)

    def skip_host(self, host: str, why: str) -> None:
        view = self._require_host(host, "skip_host")
        if view.state is HostState.SKIPPED:
            return
        if HostState.SKIPPED not in HOST_TRANSITIONS[view.state]:
            raise ContractError(f"host {host!r}", f"cannot go from {view.state} to SKIPPED")
        self._hosts[host] = attrs.evolve(view, state=HostState.SKIPPED, reason=f"skipped: {why}")
        self.skipped[host] = why

    def set_host_state(self, host: str, state: HostState, *, reason: str | None = None) -> None:
        view = self._require_host(host, "set_host_state")
        if view.state != state and state not in HOST_TRANSITIONS[view.state]:
            raise ContractError(f"host {host!r}", f"cannot go from {view.state} to {state}")
        self._hosts[host] = attrs.evolve(view, state=state, reason=reason)

    def set_host_stage(self, host: str, stage: int) -> None:
        view = self._require_host(host, "set_host_stage")
        self._hosts[host] = attrs.evolve(view, stage=stage)

    # ------------------------------------------------------------------ instances, projects

    def set_instance_plan(
        self,
        instance_id: str,
        *,
        wave: int | None,
        not_before: datetime | None,
        impacted_until: datetime | None,
    ) -> None:
        view = self._require_instance(instance_id, "set_instance_plan")
        self._instances[instance_id] = attrs.evolve(
            view, wave=wave, not_before=not_before, impacted_until=impacted_until
        )

    def set_instance_state(
        self, instance_id: str, state: InstanceState, *, action: str | None = None
    ) -> None:
        view = self._require_instance(instance_id, "set_instance_state")
        if view.state != state and state not in INSTANCE_TRANSITIONS[view.state]:
            raise ContractError(
                f"instance {instance_id!r}", f"cannot go from {view.state} to {state}"
            )
        self._instances[instance_id] = attrs.evolve(
            view, state=state, action=action if action is not None else view.action
        )

    def _require_instances_of(self, project_id: str, ids: Sequence[str], what: str) -> None:
        if project_id not in self._projects:
            raise ContractError(f"project {project_id!r}", "not a project of this session")
        for instance_id in ids:
            inst = self._require_instance(instance_id, what)
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
            self._require_instances_of(project_id, ids, f"ask {state}")
        for project_id, ids in instances.items():
            project = self._projects[project_id]
            self._projects[project_id] = attrs.evolve(project, state=state, awaiting=state)
            self.asked.append((project_id, {state: tuple(ids)}))

    def stop_awaiting(self, project_id: str, *, state: str | None = None) -> None:
        project = self._projects.get(project_id)
        if project is None:
            raise ContractError(f"project {project_id!r}", "not a project of this session")
        if project.awaiting is None and state is None:
            return
        self._projects[project_id] = attrs.evolve(
            project, awaiting=None, state=state if state is not None else project.state
        )

    def notify_host(self, host: str, state: str) -> None:
        self._require_host(host, "notify_host")
        self.notified.append((host, state))

    def notify_project(self, project_id: str, state: str, instance_ids: Sequence[str]) -> None:
        self._require_instances_of(project_id, instance_ids, f"notify {state}")
        self.told.append((project_id, state, tuple(instance_ids)))

    # ------------------------------------------------------------------ operations

    def submit(self, op: Operation) -> OpRef:
        if isinstance(op, DisableHost | RunAction) and op.host is not None:
            self._require_host(op.host, type(op).__name__)
            self._require_admitted(op.host, op)
        elif isinstance(op, EnableHost | HostUp):
            self._require_host(op.host, type(op).__name__)
        elif isinstance(op, Move | Watch):
            inst = self._require_instance(op.instance_id, type(op).__name__)
            if isinstance(op, Move) and op.target is not None:
                self._require_host(op.target, "Move target")
                if op.target == inst.host:
                    raise ContractError(
                        f"instance {op.instance_id!r}",
                        f"Move to the host it is on ({op.target}): the cloud refuses a "
                        "migration to the instance's own host",
                    )
            self._require_admitted(inst.host, op)
            if self.paused is not None:
                raise ContractError(
                    f"instance {op.instance_id!r}",
                    f"{type(op).__name__} while the session is paused (admit says so): "
                    "no new move starts until it resumes",
                )
            if inst.state not in MOVABLE:
                raise ContractError(
                    f"instance {op.instance_id!r}",
                    f"cannot start {type(op).__name__} from state {inst.state}",
                )
            target = op.target if isinstance(op, Move) else None
            self._instances[inst.instance_id] = attrs.evolve(
                inst, state=InstanceState.IN_ACTION, target=target
            )
        ref = OpRef(f"{self.session_id}:{len(self.submitted) + 1}", kind_of(op))
        self.submitted.append((ref, op))
        return ref

    def _require_admitted(self, host: str, op: Operation) -> None:
        if host not in self.admitted:
            raise ContractError(
                f"host {host!r}",
                f"{type(op).__name__} needs the host admitted by the pipeline first (admit)",
            )

    # ------------------------------------------------------------------ timers, session

    def set_timer(self, name: str, due: datetime, **data: str) -> None:
        self.timers[name] = (due, dict(data))

    def cancel_timer(self, name: str) -> None:
        self.timers.pop(name, None)

    def transition(self, state: SessionState, *, reason: str | None = None) -> None:
        self._session = attrs.evolve(self._session, state=state, reason=reason)
        self.transitions.append((state, reason))

    def fail(self, reason: str) -> None:
        self.transition(SessionState.MAINTENANCE_FAILED, reason=reason)

    def state_of(self, kind: type[S]) -> S:
        found = self.components.get(kind)
        if found is None:
            found = self.components[kind] = kind()
        assert isinstance(found, kind)
        return found

    # ------------------------------------------------------------------ what the engine does

    # A test driver plays the engine and the cloud with these: they change the
    # views as the engine does when it applies a reply, an operation's result
    # or an inventory, before it calls the workflow's hook.

    def answered(self, project_id: str, state: str) -> None:
        """The engine accepted ``project_id``'s reply ``state`` (ACK_x/NACK_x)."""
        project = self._projects[project_id]
        self._projects[project_id] = attrs.evolve(project, state=state, awaiting=None)

    def placed(self, instance_id: str, host: str) -> None:
        """The instance is on ``host`` now (a move ended)."""
        self._require_host(host, "placed")
        view = self._instances[instance_id]
        moved = 1 if host != view.host else 0
        self._instances[instance_id] = attrs.evolve(
            view, host=host, moves=view.moves + moved, target=None
        )

    def host_enabled(self, host: str, enabled: bool) -> None:
        """A DisableHost / EnableHost ended."""
        self._hosts[host] = attrs.evolve(self._hosts[host], enabled=enabled)

    def listed(self, host: str, vcpus: int, enabled: bool) -> None:
        """The cloud listed ``host`` with these facts (a host being added)."""
        self._hosts[host] = attrs.evolve(self._hosts[host], vcpus=vcpus, enabled=enabled)

    def vanished(self, instance_id: str) -> None:
        """An inventory no longer finds the instance (scaled in, deleted)."""
        self._instances[instance_id] = attrs.evolve(
            self._instances[instance_id], state=InstanceState.GONE
        )


def _conforms(ctx: FakeContext) -> SessionContext:
    """mypy checks here that FakeContext implements the whole Protocol."""
    return ctx
