"""Decommission on the contract (the v2 DecommissionWorkflow, and
decommission_hosts inside a rolling session), on the contract driver:
today's expectations (tests/test_lifecycle.py: retired hosts are emptied,
get their actions, end DECOMMISSIONED and disabled, are never a target;
their drain questions say ``host_returns: false``)."""

from __future__ import annotations

from collections import Counter

import pytest
from contract_driver import Driver, LoggingContext, start_time

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import EnableHost, HostView, InstanceView, ProjectView, RunAction
from fenix_core.errors import InvalidInput
from fenix_core.states import HostState, InstanceState, SessionState
from fenix_core.workflows import DecommissionWorkflow, RollingWorkflow

#: host -> instances (id, project, vcpus)
LAYOUT = {
    "c0": [("a1", "pa", 1), ("b1", "pb", 1)],
    "c1": [("a2", "pa", 1)],
    "c2": [],
    "c3": [],
}


def context(request: SessionRequest, in_scope: tuple[str, ...]) -> LoggingContext:
    return LoggingContext(
        now=start_time(),
        request=request,
        hosts=[
            HostView(
                name,
                "compute",
                HostState.PENDING if name in in_scope else HostState.OUT_OF_SCOPE,
                4,
                True,
                n,
            )
            for n, name in enumerate(LAYOUT)
        ],
        instances=[
            InstanceView(
                i,
                p,
                host,
                v,
                InstanceState.PENDING if host in in_scope else InstanceState.OUT_OF_SCOPE,
            )
            for host, insts in LAYOUT.items()
            for i, p, v in insts
        ],
        projects=[ProjectView(p, True, None, None) for p in ("pa", "pb")],
    )


def test_decommission_of_two_hosts() -> None:
    request = SessionRequest(
        hosts=("c0", "c1"),
        workflow="decommission",
        actions=[ActionSpec("wipe", "host"), ActionSpec("report", "post")],
        metadata={"reason": "end of life"},
    )
    ctx = context(request, ("c0", "c1"))
    driver = Driver(ctx, DecommissionWorkflow())
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    for host in ("c0", "c1"):
        view = ctx.hosts.get(host)
        assert view is not None
        assert view.state == HostState.DECOMMISSIONED
        assert view.reason == "decommissioned: left disabled"
        assert not view.enabled
        assert ctx.instances.on(host) == []
        assert [s for h, s in ctx.log if h == host] == ["IN_MAINTENANCE"]
    assert sorted(driver.host_actions) == ["c0", "c1"]
    posts = [op for _, op in ctx.submitted if isinstance(op, RunAction) and op.host is None]
    assert [op.spec.plugin for op in posts] == ["report"]
    # Every instance moved once, never onto a retired host.
    assert Counter(m[0] for m in driver.moves) == {"a1": 1, "b1": 1, "a2": 1}
    assert {ctx.instances.get(i).host for i in ("a1", "b1", "a2")} <= {"c2", "c3"}  # type: ignore[union-attr]
    drains = [q for q in ctx.questions if q[1].endswith("_MAINTENANCE") and q[1] != "MAINTENANCE"]
    assert drains
    assert all(meta == {"reason": "end of life", "host_returns": False} for *_, meta in drains)
    assert ctx.done == {"c0", "c1"}
    assert not [op for _, op in ctx.submitted if isinstance(op, EnableHost)]


def test_decommission_hosts_in_a_rolling_session() -> None:
    request = SessionRequest(decommission_hosts=("c2",), metadata={"x": "y"})
    ctx = context(request, tuple(LAYOUT))
    driver = Driver(ctx, RollingWorkflow())
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert {h.name: h.state for h in ctx.hosts} == {
        "c0": HostState.MAINTAINED,
        "c1": HostState.MAINTAINED,
        "c2": HostState.DECOMMISSIONED,
        "c3": HostState.MAINTAINED,
    }
    c2 = ctx.hosts.get("c2")
    assert c2 is not None
    assert not c2.enabled
    assert "c2" not in {m[1] for m in driver.moves}
    assert ctx.instances.on("c2") == []
    # Hosts that come back are drained with the request's metadata as it is.
    assert all(meta == {"x": "y"} for *_, meta in ctx.questions)


def test_the_decommission_workflow_needs_hosts() -> None:
    with pytest.raises(InvalidInput) as info:
        DecommissionWorkflow.validate_request(SessionRequest(workflow="decommission"), [])
    assert info.value.field == "hosts"
    assert DecommissionWorkflow.retiring(
        SessionRequest(hosts=("c0",), decommission_hosts=("c0",))
    ) == frozenset({"c0"})
