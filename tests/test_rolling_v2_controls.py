"""Operational controls the v2 rolling workflow must respect, on the contract
driver: pause (tests/test_lifecycle_controls.py and the engine's rule in
core/context.py: while paused no host starts and no new move starts, work
under way on a host in maintenance goes on)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contract_driver import Driver, LoggingContext
from test_rolling_v2 import fleet

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import DisableHost, RunAction, Watch
from fenix_core.states import HostState, SessionState
from fenix_core.workflows.v2 import RollingWorkflow


class Recording(LoggingContext):
    """Logs what it is sent with whether the session was paused then, and
    pauses itself on a chosen notice or question."""

    pause_on: tuple[str, str] | None = None  # (host or project, state)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeline: list[tuple[str, str, bool]] = []

    def _maybe_pause(self, who: str, state: str) -> None:
        if self.pause_on == (who, state) and self.paused is None:
            self.paused = "by the admin"
            self.pause_on = None

    def notify_host(self, host: str, state: str) -> None:
        super().notify_host(host, state)
        self.timeline.append((host, state, self.paused is not None))
        self._maybe_pause(host, state)

    def ask(self, state: str, instances: Mapping[str, Sequence[str]], **kwargs: Any) -> None:
        super().ask(state, instances, **kwargs)
        for p in instances:
            self._maybe_pause(p, state)

    def submit(self, op: Any) -> Any:
        ref = super().submit(op)
        name = type(op).__name__
        self.timeline.append(
            (name, getattr(op, "host", None) or getattr(op, "instance_id", ""), False)
        )
        return ref


def recording(ctx: LoggingContext) -> Recording:
    rec = Recording(
        now=ctx.now,
        request=ctx.request,
        hosts=list(ctx.hosts),
        instances=list(ctx._instances.values()),
        projects=list(ctx._projects.values()),
    )
    return rec


def test_a_pause_while_a_host_is_drained_starts_no_move_until_resumed() -> None:
    # c2 is empty and maintained first; c1 is drained in PLANNED_MAINTENANCE.
    ctx = recording(fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1), "b": ("p1", "c1", 1)}))
    ctx.pause_on = ("p1", "PLANNED_MAINTENANCE")
    driver = Driver(ctx, RollingWorkflow())
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert len(driver.resumed_at) == 1
    # The moves start only after the resume: FakeContext refuses one while
    # paused (ContractError), as the engine's context does.
    assert sorted(m[0] for m in driver.moves) == ["a", "b"]
    assert [m for m in ctx.submitted if isinstance(m[1], Watch)] == []


def test_a_host_in_maintenance_goes_on_while_paused_and_the_next_waits() -> None:
    upgrade = ActionSpec("upgrade", "host")
    ctx = recording(
        fleet(
            {"c1": 4, "c2": 4, "c3": 4},
            {},
            request=SessionRequest(hosts=("c1", "c2", "c3"), actions=[upgrade]),
        )
    )
    ctx.pause_on = ("c1", "IN_MAINTENANCE")
    driver = Driver(ctx, RollingWorkflow())
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert len(driver.resumed_at) == 1
    # c1's action, enable and MAINTENANCE_COMPLETE happen while paused ...
    paused_part = ctx.timeline[: ctx.timeline.index(("c2", "IN_MAINTENANCE", False))]
    assert ("RunAction", "c1", False) in paused_part
    assert ("c1", "MAINTENANCE_COMPLETE", True) in paused_part
    # ... and nothing of c2 or c3 starts before the resume.
    assert not [t for t in paused_part if t[1] in ("c2", "c3")]
    assert {h.name for h in ctx.hosts.in_state(HostState.MAINTAINED)} == {"c1", "c2", "c3"}
    assert [type(op) for _, op in ctx.submitted].count(RunAction) == 3
    assert [op.host for _, op in ctx.submitted if isinstance(op, DisableHost)] == [
        "c1",
        "c2",
        "c3",
    ]
