"""Rolling maintenance on a cloud with server groups, through openstacksdk
against the fake Nova, which runs its scheduler filters on a requested host
as real Nova does from microversion 2.30: the engine picks targets the cloud
accepts, never asks again for a host the cloud refused, lets the scheduler
choose when no explicit host is left, and names the group it cannot move."""

from __future__ import annotations

from fake_openstack_fixtures import build, clock, fake, make_engine  # noqa: F401

from fenix_core import SessionRequest
from fenix_core.testing import ScriptedManager, violations

# The anti-affinity pair vm-a / vm-b sits on cmp-0 and cmp-1. Without the
# group, vm-a would go to cmp-1: its project has the fewest instances there.
PAIR = {
    "cmp-0": [("vm-a", "pa", 2)],
    "cmp-1": [("vm-b", "pa", 2)],
    "cmp-2": [("vm-c", "pa", 1), ("vm-d", "pa", 1)],
}


def _live_requests(fake):
    return [
        (r["path"].split("/")[-2], (r["body"]["os-migrateLive"] or {}).get("host"))
        for r in fake.requests
        if r["endpoint"] == "action" and "os-migrateLive" in (r["body"] or {})
    ]


def _run(make_engine, **request):
    engine = make_engine()
    ScriptedManager(engine, "pa", action="LIVE_MIGRATE")
    sid = engine.create_session(SessionRequest(**request))
    return engine, engine.run_until_done(sid)


def test_an_anti_affinity_pair_is_maintained_without_a_refused_migration(fake, make_engine):
    build(fake, PAIR)
    fake.add_server_group("sg-pair", "pa", ["vm-a", "vm-b"])
    _engine, view = _run(make_engine)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert violations(fake) == []
    # Every migration asked for was accepted, each with the engine's host.
    assert not [m for m in fake.migrations() if m["status"] == "error"]
    requests = _live_requests(fake)
    assert requests
    assert all(host is not None for _, host in requests)
    assert len(requests) == len(fake.migrations())
    # The members never shared a host (the fake would have refused it).
    assert fake.host_of("vm-a") != fake.host_of("vm-b")
    assert next(host for server, host in requests if server == "vm-a") == "cmp-2"


def test_a_refused_host_is_not_asked_again_the_scheduler_chooses(fake, make_engine):
    # cmp-2 is empty, maintained first, then the engine's only acceptable
    # host for vm-a (cmp-1 holds its anti-affinity partner). Nova refuses it
    # once for a reason the engine cannot see: the engine does not ask for
    # cmp-2 again, it lets Nova's scheduler choose.
    build(fake, {"cmp-0": [("vm-a", "pa", 2)], "cmp-1": [("vm-b", "pa", 2)], "cmp-2": []})
    fake.add_server_group("sg-pair", "pa", ["vm-a", "vm-b"])
    fake.fail_next_migration("vm-a", "No valid host was found. Claim raced", at_request=True)
    _engine, view = _run(make_engine, hosts=["cmp-0", "cmp-1", "cmp-2"])
    assert view.state == "MAINTENANCE_DONE", view.reason
    moves_of_a = [host for server, host in _live_requests(fake) if server == "vm-a"]
    assert moves_of_a[:2] == ["cmp-2", None]  # refused, then the scheduler's choice
    first = next(m for m in fake.migrations() if m["instance_uuid"] == "vm-a")
    assert first["dest_compute"] == "cmp-2"  # it kept the group apart
    assert violations(fake) == []


def test_a_move_nova_refuses_everywhere_fails_naming_every_refusal(fake, make_engine):
    build(fake, {"cmp-0": [("vm-a", "pa", 2)], "cmp-1": []})
    # A round asks cmp-1, then the scheduler; the room may come back, so a
    # round is retried after a back-off, max_migration_retries times.
    rounds = SessionRequest(hosts=["cmp-0", "cmp-1"]).max_migration_retries + 1
    for _ in range(2 * rounds):
        fake.fail_next_migration("vm-a", "No valid host was found. Claim raced", at_request=True)
    _engine, view = _run(make_engine, hosts=["cmp-0", "cmp-1"])
    assert view.state == "MAINTENANCE_FAILED"
    assert _live_requests(fake) == [("vm-a", "cmp-1"), ("vm-a", None)] * rounds
    assert "the cloud refused every host for instance vm-a" in view.reason
    assert "cmp-1: TargetRefused: nova refused LIVE_MIGRATE of vm-a to cmp-1" in view.reason
    assert "its scheduler: TargetRefused: nova refused LIVE_MIGRATE of vm-a (HTTP" in view.reason


def test_a_round_nova_refuses_everywhere_is_tried_again_after_a_back_off(fake, make_engine):
    build(fake, {"cmp-0": [("vm-a", "pa", 2)], "cmp-1": []})
    for _ in range(2):  # cmp-1, then the scheduler: a claim raced, the room comes back
        fake.fail_next_migration("vm-a", "No valid host was found. Claim raced", at_request=True)
    _engine, view = _run(make_engine, hosts=["cmp-0", "cmp-1"])
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert _live_requests(fake)[:3] == [("vm-a", "cmp-1"), ("vm-a", None), ("vm-a", "cmp-1")]


def test_no_host_outside_the_anti_affinity_group_fails_naming_the_group(fake, make_engine):
    # Two computes, one member on each: emptying either needs the other.
    build(fake, {"cmp-0": [("vm-a", "pa", 2)], "cmp-1": [("vm-b", "pa", 2)]})
    fake.add_server_group("sg-pair", "pa", ["vm-a", "vm-b"], name="db")
    _engine, view = _run(make_engine)
    assert view.state == "MAINTENANCE_FAILED"
    assert "holds members of its anti-affinity server group sg-pair (db)" in view.reason
    assert not fake.migrations()  # nothing was asked that Nova would refuse


def test_a_member_of_an_affinity_group_is_left_to_its_manager(fake, make_engine):
    build(fake, {"cmp-0": [("vm-a", "pa", 2), ("vm-b", "pa", 2)], "cmp-1": []})
    fake.add_server_group("sg-together", "pa", ["vm-a", "vm-b"], policy="affinity")
    _engine, view = _run(make_engine)
    assert view.state == "MAINTENANCE_FAILED"
    assert "affinity server group sg-together" in view.reason
    assert "OWN_ACTION" in view.reason
    assert not fake.migrations()


def test_soft_anti_affinity_spreads_members_when_it_can(fake, make_engine):
    build(fake, PAIR)
    fake.add_server_group("sg-soft", "pa", ["vm-a", "vm-b"], policy="soft-anti-affinity")
    _engine, view = _run(make_engine)
    assert view.state == "MAINTENANCE_DONE", view.reason
    # Not to cmp-1 with vm-b, although its project has the fewest instances there.
    assert next(host for server, host in _live_requests(fake) if server == "vm-a") == "cmp-2"
