"""A custom workflow written against the workflow contract (fenix_core.contract).

``EmptyHostsOnly`` maintains the session's hosts one at a time in their
order without moving any instance: disable, run the request's ``host``
actions, enable. A compute host with an instance on it fails the session.
It keeps its own small typed state (``EmptyHostsState``) and starts work on
a host only once ``ctx.admit`` said yes: maintenance windows, pacing, pause
and health gates apply to it as to the built-in workflows (the context
refuses host work without an admission anyway).

``on_an_engine`` registers it through the ``fenix_workflows`` hook and runs
it on the engine over a :class:`~fenix_core.testing.SimulatedCloud`, in
simulated time; ``run`` plays the engine's part on
:class:`~fenix_core.testing.contract.FakeContext` (it reports every submitted
operation as done), the way a workflow is unit-tested without an engine.

    python examples/custom_workflow.py
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import attrs

from fenix_core import ActionSpec, Engine, SessionRequest, hookimpl
from fenix_core.clock import SimClock
from fenix_core.contract import (
    ComponentState,
    DisableHost,
    EnableHost,
    HostView,
    InstanceView,
    Operation,
    OpRef,
    OpResult,
    OpStatus,
    RunAction,
    SessionContext,
    Workflow,
)
from fenix_core.model import SessionView
from fenix_core.states import HostState, InstanceState, SessionState
from fenix_core.testing import SimulatedCloud, TimedAction
from fenix_core.testing.contract import FakeContext


@attrs.define(slots=True)
class EmptyHostsState(ComponentState):
    """What the workflow keeps between steps: constant in size."""

    component = "empty-hosts"
    host: str | None = None  # the host in maintenance
    stage: int = 0  # how many of its operations are done
    waiting_for: str | None = None  # the key of the operation running


class EmptyHostsOnly(Workflow):
    name = "empty-hosts"
    action_types = ("host",)
    state = EmptyHostsState

    def start(self, ctx: SessionContext) -> None:
        ctx.transition(SessionState.START_MAINTENANCE)

    def advance(self, ctx: SessionContext) -> None:
        me = ctx.state_of(EmptyHostsState)
        if ctx.session.state is not SessionState.START_MAINTENANCE or me.waiting_for:
            return
        if me.host is None and not self._take_next_host(ctx, me):
            return
        assert me.host is not None
        stages = self._stages(ctx, me.host)
        if me.stage < len(stages):
            me.waiting_for = ctx.submit(stages[me.stage]).key
            return
        ctx.host_done(me.host)
        ctx.set_host_state(me.host, HostState.MAINTAINED)
        me.host, me.stage = None, 0
        self.advance(ctx)  # the next host, if the pipeline lets it start

    def _take_next_host(self, ctx: SessionContext, me: EmptyHostsState) -> bool:
        host = next((h for h in ctx.hosts if h.state is HostState.PENDING), None)
        if host is None:
            ctx.transition(SessionState.MAINTENANCE_COMPLETE)
            ctx.transition(SessionState.MAINTENANCE_DONE)
            return False
        if host.type == "compute" and ctx.instances.on(host.name):
            ctx.fail(f"{host.name} is not empty")
            return False
        if not ctx.admit(host.name).admitted:
            return False  # a window, pacing, a gate or a pause: asked again next step
        ctx.set_host_state(host.name, HostState.IN_MAINTENANCE)
        me.host = host.name
        return True

    @staticmethod
    def _stages(ctx: SessionContext, host: str) -> list[Operation]:
        actions = [a for a in ctx.request.actions if a.type == "host"]
        return [
            DisableHost(host),
            *(RunAction(a, "host", host) for a in actions),
            EnableHost(host),
        ]

    def on_operation(self, ctx: SessionContext, result: OpResult) -> None:
        me = ctx.state_of(EmptyHostsState)
        if result.ref.key != me.waiting_for:
            return
        me.waiting_for = None
        if result.status is not OpStatus.DONE:
            ctx.fail(f"{result.ref.kind} on {me.host} {result.status}: {result.detail}")
            return
        me.stage += 1


def run(
    workflow: Workflow,
    ctx: SessionContext,
    submitted: list[tuple[OpRef, Operation]],
    *,
    started: bool = False,
) -> None:
    """Play the engine's part for one session: start it (unless ``started``),
    advance, and report every operation submitted as done, until the workflow
    submits nothing more. ``submitted`` is where the context records them."""
    if not started:
        workflow.start(ctx)
    seen = len(submitted)
    while True:
        workflow.advance(ctx)
        new: Sequence[tuple[OpRef, Operation]] = submitted[seen:]
        seen = len(submitted)
        if not new:
            return
        for ref, op in new:
            workflow.on_operation(ctx, OpResult(ref, op, OpStatus.DONE))


def fleet(*, closed: dict[str, str] | None = None, controls: object = None) -> FakeContext:
    """Two hosts to maintain (a controller and an empty compute host) and a
    third, out of scope, where ``vm-1`` runs. ``closed``: hosts FakeContext
    does not admit; ``controls``: the request's (windows, pacing ...)."""
    return FakeContext(
        now=datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
        request=SessionRequest.from_dict(
            {
                "hosts": ["ctl-0", "cmp-0"],
                "workflow": "empty-hosts",
                "actions": [ActionSpec("upgrade", "host").to_dict()],
                "controls": controls,
            }
        ),
        hosts=[
            HostView("ctl-0", "controller", HostState.PENDING, 16, True, 0),
            HostView("cmp-0", "compute", HostState.PENDING, 16, True, 1),
            HostView("cmp-1", "compute", HostState.OUT_OF_SCOPE, 16, True, 2),
        ],
        instances=[InstanceView("vm-1", "web", "cmp-1", 2, InstanceState.DONE)],
        closed=closed,
        workflow="empty-hosts",
    )


class EmptyHostsPlugin:
    @hookimpl
    def fenix_workflows(self) -> dict[str, type[Workflow]]:
        return {EmptyHostsOnly.name: EmptyHostsOnly}


def on_an_engine(controls: object = None) -> tuple[SessionView, TimedAction]:
    """Maintain ctl-0 and cmp-0 with the workflow on an engine, starting at
    noon (simulated); ``controls`` are the request's (a window, pacing ...)."""
    cloud = SimulatedCloud()
    cloud.add_host("ctl-0", type="controller")
    cloud.add_host("cmp-0")
    cloud.add_host("cmp-1")
    cloud.add_instance("vm-1", project_id="web", host="cmp-1")
    upgrade = TimedAction("upgrade", seconds=600)
    clock = SimClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    engine = Engine(clock=clock, plugins=[cloud, upgrade, EmptyHostsPlugin()])
    session_id = engine.create_session(
        {
            "hosts": ["ctl-0", "cmp-0"],
            "workflow": "empty-hosts",
            "actions": [{"plugin": "upgrade", "type": "host"}],
            "controls": controls,
        }
    )
    return engine.run_until_done(session_id), upgrade


def main() -> int:
    ctx = fleet()
    run(EmptyHostsOnly(), ctx, ctx.submitted)
    for ref, op in ctx.submitted:
        print(ref.key, op)
    print("on FakeContext:", ctx.session.state)
    view, upgrade = on_an_engine({"windows": [{"start": "22:00", "end": "04:00"}]})
    for started, host in upgrade.runs:
        print(f"upgrade of {host} started at {started:%Y-%m-%d %H:%M}")
    print("session", view.state)
    return 0 if view.state == SessionState.MAINTENANCE_DONE else 1


if __name__ == "__main__":
    raise SystemExit(main())
