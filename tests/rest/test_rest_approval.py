"""Approve, then execute over REST: the plan in the session view, ``POST
.../approve`` (admin only), a re-plan answered 409 ``replanned`` with the new
plan id and the changes, a stale plan id refused; as a Fenix-era client sends
raw JSON, and through our own ApiClient against a real fenix-api."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from fenix_core import Engine
from fenix_core.cli.api_client import ApiClient
from fenix_core.errors import Replanned
from fenix_core.testing import SimulatedCloud

from .conftest import ADMIN, PA, error_of
from .db_snapshot import snapshot
from .test_rest_api import create
from .test_rest_cli_sessions import api, run  # noqa: F401  (api: the fenix-api fixture)

WRITES = ("disable_host", "enable_host", "migration_started")


def test_plan_approve_and_replan_over_http(
    client: TestClient, engine: Engine, fenix_cloud: SimulatedCloud
) -> None:
    sid = create(client, approval="required")
    view = client.get(f"/v1/maintenance/{sid}", headers=ADMIN).json()
    assert view["state"] == "AWAITING_APPROVAL"
    approval = view["approval"]
    assert view["waiting"] == f"awaiting approval of plan {approval['plan_id']}"
    assert approval["approved_at"] is None
    assert approval["changes"] == []
    assert sorted(approval["plan"]["hosts"]) == ["cmp-0", "cmp-1", "cmp-2"]
    assert approval["plan"]["state"] == "MAINTENANCE_DONE"
    assert "facts" not in approval  # what it was made from stays inside

    # Projects may not approve; refusals write nothing.
    before = snapshot(engine)
    refused = client.post(f"/v1/maintenance/{sid}/approve", headers=PA)
    assert error_of(refused) == (403, "forbidden", None)
    stale = client.post(f"/v1/maintenance/{sid}/approve", json={"plan_id": "0" * 16}, headers=ADMIN)
    assert error_of(stale)[:2] == (409, "conflict")
    assert f"re-planned as {approval['plan_id']}" in stale.json()["error"]["message"]
    bad = client.post(f"/v1/maintenance/{sid}/approve", json={"plan": "x"}, headers=ADMIN)
    assert error_of(bad) == (400, "invalid_input", "plan")
    assert snapshot(engine) == before

    # The cloud changes: approving re-plans, keeps waiting, says what changed.
    fenix_cloud.remove_host("cmp-2")
    replanned = client.post(
        f"/v1/maintenance/{sid}/approve", json={"plan_id": approval["plan_id"]}, headers=ADMIN
    )
    assert error_of(replanned)[:2] == (409, "replanned")
    error = replanned.json()["error"]
    assert error["message"].startswith(f"re-planned, approve again (plan {error['plan_id']})")
    assert "hosts gone from the cloud: cmp-2" in error["changes"]
    view = client.get(f"/v1/maintenance/{sid}", headers=ADMIN).json()
    assert view["state"] == "AWAITING_APPROVAL"
    assert view["approval"]["plan_id"] == error["plan_id"] != approval["plan_id"]
    assert view["approval"]["changes"] == error["changes"]

    # Approved without a body: it starts.
    started = client.post(f"/v1/maintenance/{sid}/approve", headers=ADMIN)
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "MAINTENANCE"
    assert started.json()["approval"]["approved_at"] is not None
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    again = client.post(f"/v1/maintenance/{sid}/approve", headers=ADMIN)
    assert error_of(again)[:2] == (409, "conflict")


def test_cancel_while_waiting_over_http(
    client: TestClient, engine: Engine, fenix_cloud: SimulatedCloud
) -> None:
    sid = create(client, approval="required", hosts=["cmp-0"])
    cancelled = client.post(f"/v1/maintenance/{sid}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "MAINTENANCE_CANCELLED"
    engine.run_until_idle()
    assert [e for e in fenix_cloud.events if e.kind in WRITES] == []


def test_the_api_client_reads_the_plan_and_approves(
    api: str,  # noqa: F811
    engine: Engine,
    fenix_cloud: SimulatedCloud,
) -> None:
    sid = engine.create_session({"approval": "required"})
    with ApiClient(api, "admin-token") as remote:
        view = remote.get_session(sid)
        assert view == engine.get_session(sid)
        assert view.approval is not None
        fenix_cloud.add_instance("vm-new", project_id="pb", host="cmp-2", vcpus=1)
        with pytest.raises(Replanned) as info:
            remote.approve(sid, view.approval.plan_id)
        assert info.value.session_id == sid
        assert info.value.changes == ("instances new: vm-new",)
        assert info.value.plan_id == engine.get_plan(sid).plan_id
        started = remote.approve(sid, engine.get_plan(sid).plan_id)
        assert started.state == "MAINTENANCE"
        assert started == engine.get_session(sid)


def test_fenix_sessions_plan_and_approve_with_api(
    api: str,  # noqa: F811
    engine: Engine,
    fenix_cloud: SimulatedCloud,
) -> None:
    admin = ["--api", api, "--token", "admin-token"]
    sid = engine.create_session({"approval": "required", "hosts": ["cmp-0", "cmp-1"]})
    first = engine.get_plan(sid)
    code, out, err = run("plan", sid[:8], *admin, "--json")
    assert code == 0, err
    assert json.loads(out)["plan_id"] == first.plan_id
    code, out, err = run("show", sid[:8], *admin)
    assert code == 0, err
    assert f"plan {first.plan_id} (awaiting approval)" in " ".join(out.split())
    refused = run("approve", sid, *admin, "--plugin", "x:y")
    assert refused[0] == 2
    assert "drop --plugin with --api" in refused[2]

    fenix_cloud.remove_host("cmp-1")
    code, out, err = run("approve", sid, *admin, "--plan-id", first.plan_id, "--json")
    assert code == 2
    error = json.loads(out)
    second = engine.get_plan(sid)
    assert error["plan_id"] == second.plan_id
    assert "hosts gone from the cloud: cmp-1" in error["changes"]
    assert error["error"].startswith(f"re-planned, approve again (plan {second.plan_id})")
    code, out, err = run("approve", sid, *admin, "--plan-id", second.plan_id)
    assert code == 0, err
    assert out.strip() == f"session {sid}: plan approved, MAINTENANCE"
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
