"""Stuck work and skipped hosts in the v2 rolling workflow, on the contract
driver: today's expectations (tests/test_lifecycle_controls.py: under
``skip_host`` the session ends MAINTENANCE_DONE with the host SKIPPED and
left disabled; under ``fail`` it fails naming the work; without a policy the
workflow's own handling applies)."""

from __future__ import annotations

from contract_driver import Driver, LoggingContext
from test_rolling_v2 import fleet

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import EnableHost, Move
from fenix_core.states import HostState, InstanceAction, InstanceState, SessionState
from fenix_core.workflows import RollingWorkflow

UPGRADE = ActionSpec("upgrade", "host")


def layout(escalation: dict[str, str] | None = None, **request: object) -> LoggingContext:
    # c3 is empty: maintained first; then c1 (a, b) and c2 (c) are drained.
    return fleet(
        {"c1": 4, "c2": 4, "c3": 4},
        {"a": ("pa", "c1", 2), "b": ("pa", "c1", 1), "c": ("pb", "c2", 1)},
        request=SessionRequest(
            hosts=("c1", "c2", "c3"),
            controls={"escalation": escalation or {}},
            **request,  # type: ignore[arg-type]
        ),
    )


def drive(ctx: LoggingContext, **kwargs: object) -> Driver:
    driver = Driver(ctx, RollingWorkflow(), **kwargs)  # type: ignore[arg-type]
    driver.run()
    return driver


def state(ctx: LoggingContext, host: str) -> HostState:
    view = ctx.hosts.get(host)
    assert view is not None
    return view.state


def enables(ctx: LoggingContext) -> list[str]:
    return [op.host for _, op in ctx.submitted if isinstance(op, EnableHost)]


def test_a_stuck_action_under_fail_fails_the_session_naming_it() -> None:
    ctx = layout({"action": "fail"}, actions=[UPGRADE])
    drive(ctx, stuck={("RunAction", "c3"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == "action 'upgrade' on c3 is stuck: not finished by its deadline"
    assert state(ctx, "c3") == HostState.FAILED
    assert enables(ctx) == ["c3"]  # put back into service as after any failure


def test_a_stuck_action_under_skip_host_skips_it_and_the_session_completes() -> None:
    ctx = layout({"action": "skip_host"}, actions=[UPGRADE])
    drive(ctx, stuck={("RunAction", "c3"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert state(ctx, "c3") == HostState.SKIPPED
    assert ctx.skipped == {"c3": "action 'upgrade' on c3 is stuck: not finished by its deadline"}
    view = ctx.hosts.get("c3")
    assert view is not None
    assert not view.enabled
    assert "c3" not in enables(ctx)
    assert state(ctx, "c1") == state(ctx, "c2") == HostState.MAINTAINED


def test_a_stuck_migration_under_skip_host_skips_the_host_it_leaves() -> None:
    ctx = layout({"migration": "skip_host"})
    driver = drive(ctx, stuck={("Move", "a"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert state(ctx, "c1") == HostState.SKIPPED
    assert ctx.skipped["c1"].startswith("migration of a off c1 is stuck")
    # The stuck one is not followed any more; the other waits on the skipped host.
    assert ctx.instances.get("a").state == InstanceState.FAILED  # type: ignore[union-attr]
    assert ctx.instances.get("b").state == InstanceState.PENDING  # type: ignore[union-attr]
    assert "b" not in [m[0] for m in driver.moves]
    assert "c1" not in enables(ctx)
    assert state(ctx, "c2") == HostState.MAINTAINED


def test_without_a_policy_a_stuck_migration_is_retried_as_a_failed_one() -> None:
    ctx = layout(max_migration_retries=2)
    drive(ctx, stuck={("Move", "a"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    tries = [op for _, op in ctx.submitted if isinstance(op, Move) and op.instance_id == "a"]
    assert len(tries) == 2
    assert ctx.instances.get("a").state == InstanceState.DONE  # type: ignore[union-attr]
    assert ctx.skipped == {}


def test_a_stuck_own_action_under_fail_fails_naming_the_manager() -> None:
    def own(p: str, s: str, ids: tuple[str, ...]) -> tuple[str, dict[str, str]]:
        return f"ACK_{s}", dict.fromkeys(ids, InstanceAction.OWN_ACTION.value)

    ctx = layout({"own_action": "fail"})
    drive(ctx, answer=own, stuck={("Watch", "a"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == (
        "the manager's own action on a (off c1) is stuck: not finished by its deadline"
    )
    assert ctx.instances.get("a").state == InstanceState.PENDING  # type: ignore[union-attr]
    assert enables(ctx) == ["c3", "c1"]  # c3 maintained; c1 enabled after the failure


def test_the_admin_skips_the_host_being_drained_and_the_session_goes_on() -> None:
    ctx = layout()
    driver = Driver(ctx, RollingWorkflow(), admin_skips={"c1": HostState.DRAINING})
    driver.run()
    assert not driver.admin_skips  # it happened
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert state(ctx, "c1") == HostState.SKIPPED
    assert "c1" not in enables(ctx)  # left disabled, as the admin found it
    assert state(ctx, "c2") == state(ctx, "c3") == HostState.MAINTAINED
    left = {i.instance_id: i.state for i in ctx.instances.on("c1")}
    assert left
    assert set(left.values()) <= {InstanceState.PENDING, InstanceState.FAILED}
    assert not [n for n in ctx.timers if n.startswith("retry_move:")]
