"""Run a :class:`~fenix_core.sim.scenario.Scenario` on simulated time.

:class:`Simulation` builds what the scenario describes (a
:class:`~fenix_core.clock.SimClock`, a
:class:`~fenix_core.testing.SimulatedCloud` with its faults, one
:class:`~fenix_core.testing.TimedAction` per action, a
:class:`~fenix_core.testing.ScriptedManager` per managed project, the
constraints, an :class:`~fenix_core.engine.Engine` and the
:class:`~fenix_core.model.SessionRequest`) and runs the session to its end.
:func:`plan` estimates the waves and the makespan by running the same
scenario with every manager answering at once and no faults. Tests and
benchmarks reuse both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import attrs

from .. import signals
from ..constraints import InstanceConstraints
from ..engine import Engine
from ..model import SessionRequest, SessionView
from ..testing import (
    KubeScheduledCloud,
    PlacedCloud,
    ScriptedManager,
    SimClock,
    SimulatedCloud,
    TimedAction,
)
from .preview import Ask, build_preview
from .scenario import Scenario
from .timeline import Timeline, build_timeline, with_implicit_groups

__all__ = ["Plan", "Simulation", "SimulationResult", "plan"]

#: Notifications after which a project's instances are asked to leave their host.
_DRAIN_ASKS = ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE")


@attrs.frozen
class SimulationResult:
    """The end of a simulated session: its view, timeline, the notifications
    each project got and the migrations the cloud made."""

    view: SessionView
    timeline: Timeline
    #: project -> notification state -> how many ``maintenance_planned`` it got
    notifications: dict[str, dict[str, int]]
    migrations_done: int
    migrations_failed: int
    #: instance id -> how many times it was moved (migrations done)
    moves: dict[str, int] = attrs.field(factory=dict)
    #: every ``maintenance_planned`` notification, in the order sent
    asks: tuple[Ask, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.timeline.to_dict(),
            "notifications": {
                project: {"total": sum(states.values()), "by_state": states}
                for project, states in sorted(self.notifications.items())
            },
            "migrations": {"done": self.migrations_done, "failed": self.migrations_failed},
        }


class Simulation:
    """The engine, simulated cloud, managers and request of one scenario."""

    def __init__(self, scenario: Scenario, *, database_url: str = "sqlite://") -> None:
        self.scenario = scenario
        self.clock = SimClock(start=scenario.start)
        # The scheduler keeps the scenario's server-group rules, as Nova does;
        # on a Kubernetes snapshot it places each move as kube-scheduler would.
        self.cloud: SimulatedCloud = (
            KubeScheduledCloud(
                scenario.migration_seconds,
                scenario.live_migration_seconds,
                placement=scenario.placement,
                scheduling=scenario.scheduler,
            )
            if scenario.scheduler is not None
            else PlacedCloud(
                scenario.migration_seconds,
                scenario.live_migration_seconds,
                placement=scenario.placement,
            )
            if scenario.placement
            else SimulatedCloud(scenario.migration_seconds, scenario.live_migration_seconds)
        )
        for host in scenario.hosts:
            self.cloud.add_host(
                host.name,
                type=host.type,
                vcpus=host.vcpus,
                enabled=host.enabled,
                labels=host.labels,
            )
        for inst in scenario.instances:
            self.cloud.add_instance(
                inst.id,
                project_id=inst.project,
                host=inst.host,
                vcpus=inst.vcpus,
                live_migratable=inst.live_migratable,
            )
        for fault in scenario.faults.failed_migrations:
            for _ in range(fault.times):
                self.cloud.fail_next_migration(fault.instance, error=fault.error)
        for host_name in scenario.faults.hosts_stay_down:
            self.cloud.host_stays_down(host_name)
        self.actions = [
            TimedAction(
                plan.plugin,
                seconds=plan.seconds,
                fail_on=plan.fail_on,
                per_host={h.name: plan.seconds_on(h) for h in scenario.hosts},
            )
            for plan in scenario.actions
        ]
        self.engine = Engine(
            database_url=database_url,
            clock=self.clock,
            plugins=[self.cloud, *self.actions],
            load_entry_points=False,
        )
        self.managers = [
            ScriptedManager(
                self.engine,
                m.project,
                cloud=self.cloud,
                action=m.action,
                actions=m.actions,
                nack=m.nack,
                silent=m.silent,
                delay=m.delay,
                scale_in=m.scale_in,
            )
            for m in scenario.managers
        ]
        self.notifications: dict[str, Counter[str]] = {}
        self.drain_seen: dict[str, datetime] = {}
        self.asks: list[Ask] = []
        signals.maintenance_planned.connect(self._on_planned, sender=self.engine, weak=False)
        self.session_id: str | None = None

    # ------------------------------------------------------------------ running

    def request(self) -> SessionRequest:
        options = self.scenario.session
        request = options.request
        if options.maintenance_in is not None:
            start = self.scenario.start + timedelta(seconds=options.maintenance_in)
            request = attrs.evolve(request, maintenance_at=start)
        return request

    def start(self) -> str:
        """Set the constraints and create the session; returns its id."""
        self._set_constraints()
        self.session_id = self.engine.create_session(self.request())
        return self.session_id

    def run(self, on_start: Callable[[str], None] | None = None) -> SimulationResult:
        """Run the session to its end (simulated time: returns quickly)."""
        session_id = self.session_id or self.start()
        if on_start is not None:
            on_start(session_id)
        view = self.engine.run_until_done(session_id)
        return self.result(view)

    def result(self, view: SessionView) -> SimulationResult:
        events = self.cloud.events
        return SimulationResult(
            view=view,
            timeline=self.timeline(view),
            notifications={p: dict(sorted(c.items())) for p, c in self.notifications.items()},
            migrations_done=sum(1 for e in events if e.kind == "migration_done"),
            migrations_failed=sum(1 for e in events if e.kind == "migration_failed"),
            moves=dict(
                Counter(
                    e.instance_id for e in events if e.kind == "migration_done" and e.instance_id
                )
            ),
            asks=tuple(self.asks),
        )

    def timeline(self, view: SessionView) -> Timeline:
        scenario = self.scenario
        projects = {i.id: i.project for i in scenario.instances}
        members = {i.id: i.group for i in scenario.instances if i.group}
        return build_timeline(
            view,
            self.engine.list_operations(view.session_id),
            projects=projects,
            groups=with_implicit_groups(
                scenario.groups,
                projects,
                members,
                view.workflow,
                view.request.get("default_group_constraints"),
            ),
            members=members,
            drain_seen=self.drain_seen,
        )

    def close(self) -> None:
        signals.maintenance_planned.disconnect(self._on_planned, sender=self.engine)
        for manager in self.managers:
            manager.close()
        self.engine.close()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _set_constraints(self) -> None:
        scenario = self.scenario
        for group in scenario.groups:
            self.engine.set_group_constraints(group)
        for inst in scenario.instances:
            if inst.constraints is not None:
                self.engine.set_instance_constraints(inst.constraints)
            elif inst.group is not None:
                self.engine.set_instance_constraints(
                    InstanceConstraints(
                        instance_id=inst.id, project_id=inst.project, group_id=inst.group
                    )
                )

    def _on_planned(self, sender: Engine, payload: dict[str, Any]) -> None:
        project, state = payload["project_id"], payload["state"]
        self.notifications.setdefault(project, Counter())[state] += 1
        named = payload.get("instance_ids")
        # MAINTENANCE names the instances by a URL (as Fenix did), not a list.
        ids = tuple(str(i) for i in named) if isinstance(named, list | tuple) else ()
        self.asks.append(Ask(self.clock.now(), project, state, ids))
        if state in _DRAIN_ASKS:
            now = self.clock.now()
            for instance_id in payload["instance_ids"]:
                host = self.cloud.host_of(instance_id)
                if host is not None and host not in self.drain_seen:
                    self.drain_seen[host] = now


@attrs.frozen
class Plan:
    """The waves and makespan of a scenario when everything goes to plan.

    ``moved_again`` lists the moves that land on a host the instance leaves
    again later (instance, from, to, why): the second moves the plan makes.
    """

    scenario: str
    result: SimulationResult
    #: what an operator decides on (fenix_core.sim.preview); None when not built
    preview: dict[str, Any] | None = None
    #: moves onto a host the instance has to leave again, and why (second_moves)
    moved_again: tuple[dict[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        timeline = self.result.timeline.to_dict()
        return {
            "scenario": self.scenario,
            "method": ("simulated on SimClock with every manager answering at once and no faults"),
            "workflow": timeline["workflow"],
            "state": timeline["state"],
            "reason": timeline["reason"],
            "estimated_makespan_seconds": timeline["makespan_seconds"],
            # How instances without group constraints are held (constrained workflow).
            "default_group_constraints": self.result.view.request.get("default_group_constraints"),
            "waves": timeline["waves"],
            "hosts": [h["name"] for h in timeline["hosts"]],
            "migrations": self.result.migrations_done,
            "moved_again": [dict(m) for m in self.moved_again],
            **({"preview": self.preview} if self.preview is not None else {}),
        }

    @classmethod
    def of(cls, scenario: Scenario, result: SimulationResult, engine: Engine) -> Plan:
        """The plan of a scenario's planned run on ``engine``, with its preview
        and the moves that land where the instance must leave again."""
        preview = build_preview(scenario, result.timeline, result.moves, result.asks)
        again = tuple(
            {
                "instance": str(op.instance_id),
                "from": str(op.source),
                "to": str(op.target),
                "why": op.moves_again,
            }
            for op in engine.list_operations(result.view.session_id)
            if op.moves_again and op.status == "done"
        )
        return cls(scenario.name, result, preview, again)


def plan(scenario: Scenario) -> Plan:
    """Estimate the waves and makespan without touching anything real.

    The scenario runs on simulated time with every manager answering at once
    (no reply delay, no NACK, no silence) and without its faults; the hosts
    are reported grouped by the waves they were maintained in.
    """
    with Simulation(scenario.without_faults(answer_at_once=True)) as sim:
        return Plan.of(scenario, sim.run(), sim.engine)
