"""How the v2 rolling workflow ends a failed session and how a retry picks
it up again, on the contract driver: today's expectations
(tests/test_rolling.py: a NACK mid-session leaves no host disabled, a host
that never comes back stays disabled, an action that fails re-enables the
host; base.Workflow._end / cleanup / retry)."""

from __future__ import annotations

from collections.abc import Mapping

from contract_driver import Driver, LoggingContext
from test_rolling_v2 import fleet

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import (
    EnableHost,
    HostUp,
    InstanceView,
    Inventory,
    OpKind,
    OpRef,
    OpResult,
    OpStatus,
    RunAction,
)
from fenix_core.states import HostState, InstanceState, SessionState
from fenix_core.workflows import RollingState, RollingWorkflow

UPGRADE = ActionSpec("upgrade", "host")
PRE = ActionSpec("snapshot", "pre")


def layout(**request: object) -> LoggingContext:
    # c3 is empty: maintained first; then a's host c1 is drained (PLANNED).
    return fleet(
        {"c1": 4, "c2": 4, "c3": 4},
        {"a": ("pa", "c1", 1), "b": ("pa", "c1", 1), "c": ("pb", "c2", 1)},
        request=SessionRequest(hosts=("c1", "c2", "c3"), **request),  # type: ignore[arg-type]
    )


def drive(ctx: LoggingContext, **kwargs: object) -> Driver:
    driver = Driver(ctx, RollingWorkflow(), **kwargs)  # type: ignore[arg-type]
    driver.run()
    return driver


def enabled(ctx: LoggingContext) -> dict[str, bool]:
    return {h.name: h.enabled for h in ctx.hosts}


def test_nack_planned_maintenance_mid_session_leaves_no_host_disabled() -> None:
    def nack(p: str, state: str, ids: tuple[str, ...]) -> tuple[str, Mapping[str, str]]:
        return ("NACK_" if state == "PLANNED_MAINTENANCE" else "ACK_") + state, {}

    ctx = layout(actions=[UPGRADE])
    driver = drive(ctx, answer=nack)
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == "project pa answered NACK_PLANNED_MAINTENANCE"
    # c1 was disabled before its projects were asked: enabled again.
    assert ("EnableHost", "c1") in [
        (type(op).__name__, getattr(op, "host", "")) for _, op in ctx.submitted
    ]
    assert all(enabled(ctx).values())
    assert ctx.hosts.get("c3").state == HostState.MAINTAINED  # type: ignore[union-attr]
    assert ctx.hosts.get("c1").state == HostState.PENDING  # type: ignore[union-attr]
    assert driver.host_actions == ["c3"]
    assert {i.state for i in ctx.instances.on("c1")} == {InstanceState.PENDING}
    assert ctx.projects.awaiting_count() == 0
    assert not any(n.startswith("reply_deadline:") for n in ctx.timers)


def test_a_host_that_never_comes_back_fails_the_session_and_stays_disabled() -> None:
    ctx = layout()
    drive(ctx, fail_ops={("HostUp", "c3"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == "host c3 did not come back after maintenance: it broke"
    c3 = ctx.hosts.get("c3")
    assert c3 is not None
    assert c3.state == HostState.FAILED
    assert not c3.enabled
    assert c3.reason == "host c3 did not come back after maintenance: it broke; left disabled"
    assert EnableHost("c3") not in [op for _, op in ctx.submitted]


def test_an_action_that_fails_fails_the_session_and_re_enables_the_host() -> None:
    ctx = layout(actions=[UPGRADE])
    drive(ctx, fail_ops={("RunAction", "c3"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == "host action 'upgrade' failed on c3: it broke"
    c3 = ctx.hosts.get("c3")
    assert c3 is not None
    assert c3.state == HostState.FAILED
    assert c3.enabled
    assert all(enabled(ctx).values())


def test_a_migration_failing_past_its_retries_leaves_the_rest_pending_and_enabled() -> None:
    ctx = layout(max_migration_retries=1)
    driver = drive(ctx, fail_moves={"b": 5})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason is not None
    assert "instance b from c1 failed after 2" in ctx.session.reason
    assert ctx.instances.get("b").state == InstanceState.FAILED  # type: ignore[union-attr]
    assert ctx.hosts.get("c1").state == HostState.PENDING  # type: ignore[union-attr]
    assert all(enabled(ctx).values())
    assert not [n for n in ctx.timers if n.startswith("retry_move:")]
    assert driver.fail_moves == {"b": 3}


def test_retry_after_a_failed_action_completes_and_runs_pre_actions_once() -> None:
    ctx = layout(actions=[UPGRADE, PRE])
    driver = drive(ctx, fail_ops={("RunAction", "c3"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    driver.retry()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert {h.state for h in ctx.hosts} == {HostState.MAINTAINED}
    pre = [op for _, op in ctx.submitted if isinstance(op, RunAction) and op.sequence == "pre"]
    assert len(pre) == 1
    assert sorted(driver.host_actions) == ["c1", "c2", "c3", "c3"]
    assert ctx.state_of(RollingState).ended is False
    assert all(enabled(ctx).values())


def test_retry_after_a_failed_migration_moves_the_instance_again() -> None:
    ctx = layout(max_migration_retries=0)
    driver = drive(ctx, fail_moves={"b": 1})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    driver.retry()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert ctx.instances.get("b").state == InstanceState.DONE  # type: ignore[union-attr]


def test_instances_appearing_on_an_emptied_host_are_drained_before_it_goes_in() -> None:
    """A project scales out onto the host right after it was emptied: the
    listing before IN_MAINTENANCE finds it and the host is drained again."""
    ctx = layout()
    new = InstanceView("new", "pa", "c1", 1, InstanceState.PENDING)
    arrived: list[bool] = []

    def emptied(c: LoggingContext) -> bool:  # listed for its drain, being emptied
        return c.hosts.get("c1").state == HostState.DRAINING  # type: ignore[union-attr]

    def scale_out(c: LoggingContext) -> None:
        driver.arrive["c1"] = [new]  # listed at c1's next listing
        arrived.append(True)

    driver = Driver(ctx, RollingWorkflow(), when=[(emptied, scale_out)])
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert arrived
    assert not driver.arrive  # it arrived
    assert "new" in [m[0] for m in driver.moves]
    assert ctx.instances.get("new").host != "c1"  # type: ignore[union-attr]
    # c1 went into maintenance once, after the second drain.
    assert [s for h, s in ctx.log if h == "c1"] == ["IN_MAINTENANCE", "MAINTENANCE_COMPLETE"]
    asked = [s for p, s in ctx.log if p == "pa" and s == "PLANNED_MAINTENANCE"]
    assert len(asked) == 2


def test_every_compute_host_is_listed_before_it_goes_into_maintenance() -> None:
    ctx = layout()
    Driver(ctx, RollingWorkflow()).run()
    ops = [op for _, op in ctx.submitted]
    for host in ("c1", "c2", "c3"):  # HostUp comes after IN_MAINTENANCE
        assert ops.index(Inventory((host,))) < ops.index(HostUp(host))


def test_a_failure_while_a_host_is_listed_before_maintenance_still_enables_it() -> None:
    # The session was cancelled while c1's instances were listed before
    # IN_MAINTENANCE: c1, disabled for its drain, is enabled once that
    # listing has ended, not before (nothing runs on it then).
    ctx = layout()
    ctx.host_enabled("c1", False)
    wf = RollingWorkflow()
    st = ctx.state_of(RollingState)
    st.current_host, st.host_op, st.we_disabled, st.phase = "c1", True, "c1", ""
    ctx.transition(SessionState.MAINTENANCE_CANCELLED, reason="by the admin")
    wf.advance(ctx)
    assert EnableHost("c1") not in [op for _, op in ctx.submitted]  # the listing runs
    ref = OpRef("s-1:9", OpKind.INVENTORY)
    wf.on_operation(ctx, OpResult(ref, Inventory(("c1",)), OpStatus.DONE))
    assert [op for _, op in ctx.submitted] == [EnableHost("c1")]
