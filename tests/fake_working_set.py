"""A WorkingSetPort (fenix_core.core.context) over a FakeContext's in-memory
structures, so StepContext is tested before the working set (P1) exists.

It shows what the adapter to P1's WorkingSet must provide: the four views,
one setter per change, a counter of operation numbers, timers by name,
components handed out (and counted as changed), and the instances moved
off a host. The views are FakeContext's brute-force ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from fenix_core.budgets import Labels
from fenix_core.constraints import ConstraintSet
from fenix_core.contract import Operation, OpKind, OpRef, SessionInfo
from fenix_core.contract.context import S
from fenix_core.model import SessionRequest
from fenix_core.states import HostState, InstanceState, SessionState, budget_hosts
from fenix_core.testing.contract import FakeContext, _Capacity, _Hosts, _Instances, _Projects


class FakeWorkingSet:
    def __init__(self, fake: FakeContext) -> None:
        self.fake = fake
        self.ops: list[tuple[str, OpKind, Operation | None, dict[str, Any]]] = []
        self.emitted: list[tuple[str, dict[str, Any]]] = []
        self.moved: dict[str, list[str]] = {}
        self.dirty: set[str] = set()
        self.timeouts: dict[str, float] = {}
        #: Topology labels by host (what the session's data keeps).
        self.labels: dict[str, Labels] = {}

    @property
    def session(self) -> SessionInfo:
        return self.fake.session

    @property
    def request(self) -> SessionRequest:
        return self.fake.request

    @property
    def hosts(self) -> _Hosts:
        return self.fake.hosts

    @property
    def instances(self) -> _Instances:
        return self.fake.instances

    @property
    def projects(self) -> _Projects:
        return self.fake.projects

    @property
    def capacity(self) -> _Capacity:
        return self.fake.capacity

    @property
    def constraints(self) -> ConstraintSet:
        return self.fake.constraints

    def set_host_stage(self, host: str, stage: int) -> None:
        self.fake.set_host_stage(host, stage)

    def set_instance_plan(
        self,
        instance_id: str,
        wave: int | None,
        not_before: datetime | None,
        impacted_until: datetime | None,
    ) -> None:
        self.fake.set_instance_plan(
            instance_id, wave=wave, not_before=not_before, impacted_until=impacted_until
        )

    def set_session_state(self, state: SessionState, reason: str | None) -> None:
        self.fake.transition(state, reason=reason)

    def set_host_state(self, host: str, state: HostState, reason: str | None) -> None:
        view = self.fake._hosts[host]
        self.fake._hosts[host] = attrs.evolve(view, state=state, reason=reason)

    def set_host_times(
        self, host: str, *, started_at: datetime | None, finished_at: datetime | None
    ) -> None:
        view = self.fake._hosts[host]
        self.fake._hosts[host] = attrs.evolve(view, started_at=started_at, finished_at=finished_at)

    def set_instance_state(
        self, instance_id: str, state: InstanceState, action: str | None
    ) -> None:
        view = self.fake._instances[instance_id]
        self.fake._instances[instance_id] = attrs.evolve(
            view, state=state, action=action if action is not None else view.action
        )

    def ask_project(
        self,
        project_id: str,
        state: str,
        instance_ids: Sequence[str],
        allowed_actions: Sequence[str],
        metadata: Mapping[str, Any] | None,
        actions_at: datetime | None = None,
    ) -> None:
        project = self.fake._projects[project_id]
        self.fake._projects[project_id] = attrs.evolve(project, state=state, awaiting=state)
        self.fake.asked.append((project_id, {state: tuple(instance_ids)}))

    def stop_awaiting(self, project_id: str, state: str | None) -> None:
        project = self.fake._projects[project_id]
        self.fake._projects[project_id] = attrs.evolve(
            project, awaiting=None, state=state if state is not None else project.state
        )

    def notify_host(self, host: str, state: str) -> None:
        self.fake.notified.append((host, state))

    def notify_project(self, project_id: str, state: str, instance_ids: Sequence[str]) -> None:
        self.fake.told.append((project_id, state, tuple(instance_ids)))

    def emit(self, signal: str, payload: dict[str, Any]) -> None:
        self.emitted.append((signal, payload))

    def next_op_number(self) -> int:
        return len(self.ops) + 1

    def add_op(
        self,
        key: str,
        kind: OpKind,
        op: Operation | None,
        params: Mapping[str, Any],
        timeout: float | None = None,
    ) -> None:
        self.ops.append((key, kind, op, dict(params)))
        if timeout is not None:
            self.timeouts[key] = timeout
        if op is not None:  # FakeContext's capacity counts moves in flight from here
            self.fake.submitted.append((OpRef(key, kind), op))

    def set_timer(self, name: str, due: datetime, data: Mapping[str, str]) -> None:
        self.fake.timers[name] = (due, dict(data))

    def cancel_timer(self, name: str) -> None:
        self.fake.timers.pop(name, None)

    def component(self, kind: type[S]) -> S:
        self.dirty.add(kind.component)
        return self.fake.state_of(kind)

    def moved_off(self, host: str) -> Sequence[str]:
        return self.moved.get(host, [])

    def budget_hosts(self) -> int:
        return budget_hosts(h.state for h in self.fake.hosts)

    #: No cloud driver guard (``HostGuard``) in these sessions.
    host_guard = False

    def host_labels(self, host: str) -> Labels:
        return self.labels.get(host, {})
