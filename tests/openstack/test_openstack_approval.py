"""Approve, then execute through the real openstacksdk against the fake Nova:
a session awaiting approval only reads the cloud (the fake's request log has
no write), a server group created before the approval makes it re-plan, and
the approved plan then runs."""

from __future__ import annotations

import pytest
from fake_openstack_fixtures import build, clock, fake, make_engine  # noqa: F401

from fenix_core.errors import Replanned

LAYOUT = {
    "cmp-0": [("vm-a1", "pa", 2), ("vm-a2", "pa", 2)],
    "cmp-1": [("vm-b1", "pb", 2)],
    "cmp-2": [],
}


def writes(requests: list[dict[str, object]]) -> list[tuple[object, object]]:
    """Requests that change something (a Keystone token is only a login)."""
    return [
        (r["method"], r["path"])
        for r in requests
        if r["method"] != "GET" and r["endpoint"] != "tokens"
    ]


def test_waiting_reads_only_and_a_new_server_group_replans(fake, make_engine):
    build(fake, LAYOUT)
    engine = make_engine()
    sid = engine.create_session({"approval": "required", "workflow": "constrained"})
    engine.run_until_idle()
    first = engine.get_plan(sid)
    assert engine.get_session(sid).state == "AWAITING_APPROVAL"
    assert first.plan["state"] == "MAINTENANCE_DONE"
    assert writes(fake.requests) == []
    assert all(fake.service(h)["status"] == "enabled" for h in LAYOUT)

    fake.add_server_group("sg-a", "pa", ["vm-a1", "vm-a2"], policy="anti-affinity")
    with pytest.raises(Replanned) as info:
        engine.approve_session(sid, first.plan_id)
    assert any(line.startswith("instances changed group") for line in info.value.changes)
    assert writes(fake.requests) == []

    engine.approve_session(sid, info.value.plan_id)
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert writes(fake.requests)  # now it does its work
