"""Hosts that leave the cloud or join it during a v2 rolling session, on
the contract driver: today's expectations (tests/test_lifecycle.py and
test_lifecycle_controls.py: a host removed mid-session does not fail it, its
instances are followed to where the cloud reports them or are gone, projects
asked only about it are no longer awaited; a host added is a target)."""

from __future__ import annotations

from collections.abc import Mapping

from contract_driver import Driver, LoggingContext
from test_rolling_v2 import fleet

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import (
    DisableHost,
    EnableHost,
    HostView,
    Inventory,
    ListHosts,
    Locate,
    RunAction,
)
from fenix_core.states import HostState, InstanceState, SessionState
from fenix_core.workflows import RollingWorkflow


def removed(host: str):  # type: ignore[no-untyped-def]
    def happen(ctx: LoggingContext) -> None:  # the engine saw the cloud lose it
        ctx.set_host_state(host, HostState.REMOVED, reason="removed from the cloud")
        ctx.host_enabled(host, False)

    return happen


def in_state(host: str, state: HostState):  # type: ignore[no-untyped-def]
    def condition(ctx: LoggingContext) -> bool:
        view = ctx.hosts.get(host)
        return view is not None and view.state == state

    return condition


def layout(**request: object) -> LoggingContext:
    # c3 is empty: maintained first; then c1 (a of pa, b of pb), then c2.
    return fleet(
        {"c1": 4, "c2": 4, "c3": 4},
        {"a": ("pa", "c1", 1), "b": ("pb", "c1", 1), "c": ("pc", "c2", 1)},
        request=SessionRequest(hosts=("c1", "c2", "c3"), **request),  # type: ignore[arg-type]
    )


def states(ctx: LoggingContext) -> dict[str, HostState]:
    return {h.name: h.state for h in ctx.hosts}


def test_a_host_removed_while_it_is_drained_does_not_fail_the_session() -> None:
    def pb_silent(p: str, s: str, ids: tuple[str, ...]) -> tuple[str, Mapping[str, str]] | None:
        return None if (p, s) == ("pb", "PLANNED_MAINTENANCE") else (f"ACK_{s}", {})

    ctx = layout(reply_policy="fail")
    driver = Driver(
        ctx,
        RollingWorkflow(),
        answer=pb_silent,
        when=[(in_state("c1", HostState.DRAINING), removed("c1"))],
        where={"a": "c3"},  # a was evacuated to c3; b went with its host
    )
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert states(ctx) == {
        "c1": HostState.REMOVED,
        "c2": HostState.MAINTAINED,
        "c3": HostState.MAINTAINED,
    }
    # pb, asked only about b, is no longer awaited: its silence fails nothing.
    assert ctx.projects.get("pb").awaiting is None  # type: ignore[union-attr]
    assert ctx.instances.get("a").host == "c3"  # type: ignore[union-attr]
    assert ctx.instances.get("a").state == InstanceState.DONE  # type: ignore[union-attr]
    assert ctx.instances.get("b").state == InstanceState.GONE  # type: ignore[union-attr]
    locates = [op for _, op in ctx.submitted if isinstance(op, Locate)]
    assert locates == [Locate(("a", "b"))]
    assert "a" not in [m[0] for m in driver.moves]


def test_a_host_removed_mid_migration_is_a_removal_not_a_failure() -> None:
    def moving(ctx: LoggingContext) -> bool:
        return any(i.state == InstanceState.IN_ACTION for i in ctx.instances.on("c1"))

    ctx = layout(max_migration_retries=0)
    driver = Driver(ctx, RollingWorkflow(), when=[(moving, removed("c1"))], where={"b": "c2"})
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert states(ctx)["c1"] == HostState.REMOVED
    # The migration under way ended with its host: followed, not failed.
    assert {i.instance_id: i.state for i in ctx.instances.in_state(InstanceState.FAILED)} == {}
    assert ctx.instances.get("a").state == InstanceState.GONE  # type: ignore[union-attr]
    b = ctx.instances.get("b")
    assert b is not None
    assert b.state in (InstanceState.DONE, InstanceState.PENDING)
    assert states(ctx)["c2"] == HostState.MAINTAINED
    assert b.host != "c1"


def test_a_host_removed_during_its_action_is_a_removal_not_a_failure() -> None:
    upgrade = ActionSpec("upgrade", "host")
    ctx = layout(actions=[upgrade], controls={"escalation": {"action": "fail"}})

    def acting(ctx: LoggingContext) -> bool:
        return any(isinstance(op, RunAction) and op.host == "c3" for _, op in ctx.submitted)

    driver = Driver(ctx, RollingWorkflow(), when=[(acting, removed("c3"))])
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert states(ctx) == {
        "c1": HostState.MAINTAINED,
        "c2": HostState.MAINTAINED,
        "c3": HostState.REMOVED,
    }
    assert sorted(driver.host_actions) == ["c1", "c2", "c3"]


def test_a_host_that_appears_mid_session_is_a_target_where_instances_stay() -> None:
    def appears(ctx: LoggingContext) -> None:  # the engine lists it: ADDED
        ctx._hosts["c9"] = HostView("c9", "compute", HostState.ADDED, 8, True, 9)

    # c1 and c2 are full: nothing fits until c9 appears; then both drain onto it.
    ctx = fleet(
        {"c1": 2, "c2": 2},
        {"a": ("pa", "c1", 2), "b": ("pb", "c2", 2)},
    )
    driver = Driver(
        ctx,
        RollingWorkflow(),
        when=[(lambda c: any(s == "MAINTENANCE" for _, s in c.log), appears)],
    )
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert sorted(driver.moves) == [("a", "c9", frozenset()), ("b", "c9", frozenset())]
    assert {i.state for i in ctx.instances.on("c9")} == {InstanceState.DONE}
    assert states(ctx)["c9"] == HostState.ADDED


def with_adding(request: SessionRequest, *names: str) -> LoggingContext:
    # c1 and c2 are full: nothing fits until a host of add_hosts is in.
    ctx = fleet({"c1": 2, "c2": 2}, {"a": ("pa", "c1", 2), "b": ("pb", "c2", 2)}, request=request)
    for k, name in enumerate(names):  # as the session factory creates them
        ctx._hosts[name] = HostView(name, "compute", HostState.ADDING, 0, False, 10 + k)
    return ctx


def test_add_hosts_are_listed_enabled_and_then_targets() -> None:
    ctx = with_adding(SessionRequest(hosts=("c1", "c2"), add_hosts=("c9",)), "c9")
    driver = Driver(ctx, RollingWorkflow(), appearing={"c9": (4, False)})
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    c9 = ctx.hosts.get("c9")
    assert c9 is not None
    assert (c9.state, c9.reason, c9.enabled) == (
        HostState.ADDED,
        "added by this session (add_hosts)",
        True,
    )
    ops = [(type(op).__name__, getattr(op, "host", None)) for _, op in ctx.submitted]
    # Listed, enabled, its instances listed: all before the first host is touched.
    first_disable = ops.index(("DisableHost", "c1"))
    assert ops.index(("ListHosts", None)) < ops.index(("EnableHost", "c9")) < first_disable
    assert [op for _, op in ctx.submitted if isinstance(op, ListHosts)] == [ListHosts(("c9",))]
    assert Inventory(("c9",)) in [op for _, op in ctx.submitted]
    # The new host took the first host's instance; the maintained one the second's.
    assert driver.moves == [("a", "c9", frozenset()), ("b", "c1", frozenset())]


def test_an_add_host_that_is_listed_enabled_is_not_enabled_again() -> None:
    ctx = with_adding(SessionRequest(hosts=("c1", "c2"), add_hosts=("c9",)), "c9")
    Driver(ctx, RollingWorkflow(), appearing={"c9": (4, True)}).run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert EnableHost("c9") not in [op for _, op in ctx.submitted]


def test_a_named_host_that_never_appears_fails_the_session_cleanly() -> None:
    ctx = with_adding(SessionRequest(hosts=("c1", "c2"), add_hosts=("c-new",)), "c-new")
    Driver(ctx, RollingWorkflow()).run()
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason is not None
    assert ctx.session.reason.startswith("hosts named in add_hosts did not appear: timed out")
    assert "c-new" in ctx.session.reason
    assert ctx.hosts.get("c-new").state == HostState.ADDING  # type: ignore[union-attr]
    assert not [op for _, op in ctx.submitted if isinstance(op, EnableHost | DisableHost)]


def test_hosts_are_listed_once_before_the_first_decision() -> None:
    ctx = layout()
    Driver(ctx, RollingWorkflow()).run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    kinds = [type(op).__name__ for _, op in ctx.submitted]
    assert kinds.count("ListHosts") == 1
    assert kinds.index("ListHosts") < kinds.index("DisableHost")
