"""The rolling workflow end to end through the real openstacksdk against the
fake Nova: servers really move between fake hypervisors, nova-compute
services are disabled and enabled host by host, the session ends DONE."""

from __future__ import annotations

from fake_openstack_fixtures import build, clock, fake, make_engine  # noqa: F401

from fenix_core import ActionSpec, SessionRequest
from fenix_core.testing import ScriptedManager, TimedAction, violations

LAYOUT = {
    "cmp-0": [("vm-a1", "pa", 2), ("vm-b1", "pb", 2)],
    "cmp-1": [("vm-a2", "pa", 2), ("vm-c1", "pc", 4)],
    "cmp-2": [("vm-b2", "pb", 2)],
}


def test_rolling_session_moves_servers_and_toggles_services_host_by_host(fake, make_engine):
    build(fake, LAYOUT)
    fake.add_host("ctl-0", vcpus=4)
    upgrade = TimedAction("upgrade", seconds=600)
    engine = make_engine(upgrade, controllers=["ctl-0"])
    ScriptedManager(engine, "pa", action="LIVE_MIGRATE")
    ScriptedManager(engine, "pb", action="MIGRATE")
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert {h.name: h.state for h in view.hosts} == dict.fromkeys(
        ["cmp-0", "cmp-1", "cmp-2", "ctl-0"], "MAINTAINED"
    )
    assert violations(fake) == []
    events = fake.events
    # Each compute's service was disabled (naming the session) and enabled
    # again, one host at a time, and never while it held a server.
    toggles = [(e.kind, e.host) for e in events if e.kind in ("disable_host", "enable_host")]
    hosts = [h for kind, h in toggles if kind == "disable_host"]
    assert sorted(hosts) == ["cmp-0", "cmp-1", "cmp-2"]  # the controller is no nova-compute toggle
    assert toggles == [pair for h in hosts for pair in (("disable_host", h), ("enable_host", h))]
    assert {e.detail for e in events if e.kind == "disable_host"} == {f"maintenance session {sid}"}
    assert all(fake.service(h)["status"] == "enabled" for h in LAYOUT)
    # Servers really moved, by the migration type their project asked for.
    moved = {e.instance_id for e in events if e.kind == "migration_done"}
    assert moved >= {"vm-a1", "vm-b1"}
    kinds = {m["instance_uuid"]: m["migration_type"] for m in fake.migrations()}
    assert kinds["vm-a1"] == "live-migration"
    assert kinds["vm-b1"] == "migration"
    assert all(m["status"] in ("completed", "confirmed") for m in fake.migrations())
    # Cold migrations were confirmed; nothing is left in VERIFY_RESIZE.
    assert all(fake.server(s)["status"] == "ACTIVE" for _, ss in LAYOUT.items() for s, _, _ in ss)
    # The move records on the servers were cleaned up.
    assert all(not fake.server(s)["tags"] for ss in LAYOUT.values() for s, _, _ in ss)
    assert all(not fake.server(s)["metadata"] for ss in LAYOUT.values() for s, _, _ in ss)
    assert len(upgrade.runs) == 4


def test_requests_have_the_shapes_real_nova_expects(fake, make_engine):
    build(fake, {"cmp-0": [("vm-1", "p1", 2)], "cmp-1": []})
    fake.add_server_group("sg-1", "p1", ["vm-1"])
    engine = make_engine()
    ScriptedManager(engine, "p1", action="LIVE_MIGRATE")
    sid = engine.create_session(SessionRequest(hosts=["cmp-0", "cmp-1"]))
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"

    requests = fake.requests
    listings = [r for r in requests if r["endpoint"] == "servers"]
    assert listings
    assert all(r["query"]["all_tenants"] == ["True"] for r in listings)
    assert any(r["query"].get("host") == ["cmp-0"] for r in listings)  # compute_host=
    live = [r for r in requests if r["endpoint"] == "action" and "os-migrateLive" in r["body"]]
    assert live[0]["microversion"] == "2.30"
    assert live[0]["body"]["os-migrateLive"]["block_migration"] == "auto"
    updates = [r for r in requests if r["endpoint"] == "service_update"]
    assert updates[0]["body"] == {
        "status": "disabled",
        "disabled_reason": f"maintenance session {sid}",
    }
    assert all(float(r["microversion"].split(".")[1]) >= 53 for r in updates)
    # The engine read the anti-affinity groups across projects (cloud constraints).
    groups = [r for r in requests if r["endpoint"] == "server_groups"]
    assert groups
    assert groups[0]["query"] == {"all_projects": ["True"]}


def test_a_tenant_filling_a_target_outside_the_session_is_listed_and_avoided(fake, make_engine):
    """Nova refuses a requested host without room (400 "No valid host was
    found", TargetRefused): the session lists it again, lists the next host
    before asking it, and finishes."""
    build(
        fake,
        {
            "cmp-0": [("vm-a1", "pa", 4), ("vm-a2", "pa", 2)],
            "cmp-1": [("vm-a3", "pa", 4)],
            "out-0": [],
            "out-1": [],
            "out-2": [("vm-x", "px", 4)],
            "out-3": [],
        },
    )
    engine = make_engine(TimedAction("upgrade", seconds=60))
    sid = engine.create_session(
        SessionRequest(hosts=["cmp-0", "cmp-1"], actions=[ActionSpec("upgrade", "host")])
    )
    fake.add_server("vm-t1", "pt", "out-0", vcpus=8)  # a tenant, after the session's snapshot
    fake.add_server("vm-t2", "pt", "out-1", vcpus=6)

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert violations(fake) == []
    refused = [
        op.target
        for op in engine.list_operations(sid)
        if op.kind == "move" and op.status == "failed"
    ]
    assert refused == ["out-0"]  # refused once, listed again; out-1 listed before it was asked
