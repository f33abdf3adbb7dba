"""The Fenix v1 routes over a real engine (simulated time), through the app."""

from __future__ import annotations

from fastapi.testclient import TestClient

from fenix_core import Engine

from .conftest import ADMIN, PA, PB


def create(client: TestClient, **body: object) -> str:
    response = client.post("/v1/maintenance", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def subscribe(client: TestClient, project: str, headers: dict[str, str], **body: object) -> None:
    payload = {"url": f"http://{project}.test/alarm", **body}
    response = client.put(f"/v1/subscription/{project}", json=payload, headers=headers)
    assert response.status_code == 200, response.text


def test_session_lifecycle_create_list_get_delete(client: TestClient, engine: Engine) -> None:
    session_id = create(
        client,
        hosts=["cmp-0", "cmp-1", "cmp-2"],
        state="MAINTENANCE",
        metadata={"openstack_version": "2026.2"},
        workflow="default",  # Fenix's name for the rolling workflow
        actions=[],
        download=[],
    )
    listed = client.get("/v1/maintenance", headers=ADMIN).json()
    assert listed["session_id"] == [session_id]
    assert listed["sessions"][0]["workflow"] == "rolling"
    view = client.get(f"/v1/maintenance/{session_id}", headers=ADMIN).json()
    assert view["state"] == "MAINTENANCE"
    assert [h["name"] for h in view["hosts"]] == ["cmp-0", "cmp-1", "cmp-2"]
    assert view["request"]["metadata"] == {"openstack_version": "2026.2"}

    running = client.delete(f"/v1/maintenance/{session_id}", headers=ADMIN)
    assert running.status_code == 409
    assert engine.run_until_done(session_id).state == "MAINTENANCE_DONE"
    deleted = client.delete(f"/v1/maintenance/{session_id}", headers=ADMIN)
    assert deleted.status_code == 200  # with a body, as Fenix answered
    assert deleted.json() == {"session_id": session_id, "deleted": True}
    assert client.get(f"/v1/maintenance/{session_id}", headers=ADMIN).status_code == 404
    assert engine.list_sessions() == []


def test_update_moves_the_start_and_retry_needs_a_failed_session(
    client: TestClient, engine: Engine
) -> None:
    session_id = create(client, maintenance_at="2030-01-01T00:00:00Z")
    moved = client.put(
        f"/v1/maintenance/{session_id}",
        json={"maintenance_at": "2031-01-01T00:00:00+00:00"},
        headers=ADMIN,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["maintenance_at"].startswith("2031-01-01T00:00:00")
    retry = client.put(
        f"/v1/maintenance/{session_id}", json={"state": "MAINTENANCE"}, headers=ADMIN
    )
    assert retry.status_code == 409
    assert "only a failed session" in retry.json()["error"]["message"]


def test_project_dialogue_over_http(client: TestClient, engine: Engine) -> None:
    subscribe(client, "pa", PA)
    subscribe(client, "pb", PB)
    session_id = create(client, hosts=["cmp-0", "cmp-1", "cmp-2"])
    engine.run_until_idle()

    url_a = f"/v1/maintenance/{session_id}/pa"
    asked = client.get(url_a, headers=PA).json()
    assert asked["state"] == "MAINTENANCE"
    assert asked["instance_ids"] == ["vm-a1", "vm-a2"]
    assert client.put(url_a, json={"state": "ACK_MAINTENANCE"}, headers=PA).status_code == 200
    again = client.put(url_a, json={"state": "ACK_MAINTENANCE"}, headers=PA)
    assert again.status_code == 409
    reply_b = {"state": "ACK_MAINTENANCE", "session_id": session_id, "project_id": "pb"}
    assert (
        client.put(f"/v1/maintenance/{session_id}/pb", json=reply_b, headers=PB).status_code == 200
    )
    engine.run_until_idle()

    # cmp-2 is empty, so the first host to empty is cmp-0: both projects are asked.
    asked = client.get(url_a, headers=PA).json()
    assert asked["state"] == "PLANNED_MAINTENANCE"
    assert asked["instance_ids"] == ["vm-a1"]  # only what is on the host being emptied
    assert {i["instance_id"] for i in asked["instances"]} == {"vm-a1", "vm-a2"}
    tacker_style = {
        "state": "ACK_PLANNED_MAINTENANCE",
        "instance_ids": asked["instance_ids"],
        "instance_action": "MIGRATE",
    }
    assert client.put(url_a, json=tacker_style, headers=PA).status_code == 200
    fenix_style = {
        "state": "ACK_PLANNED_MAINTENANCE",
        "instance_actions": {"vm-b1": "LIVE_MIGRATE"},
    }
    url_b = f"/v1/maintenance/{session_id}/pb"
    assert client.put(url_b, json=fenix_style, headers=PB).status_code == 200
    engine.run_until_idle()
    view = engine.project_view(session_id, "pa")
    assert {i.instance_id: i.action for i in view.instances}["vm-a1"] == "MIGRATE"
    assert {i.instance_id: i.action for i in engine.project_view(session_id, "pb").instances} == {
        "vm-b1": "LIVE_MIGRATE"
    }


def test_instance_and_group_constraints(client: TestClient, engine: Engine) -> None:
    group = {"group_name": "db", "max_impacted_members": 1, "anti_affinity_group": True}
    put = client.put("/v1/instance_group/g-db", json=group, headers=PA)
    assert put.status_code == 200, put.text
    assert put.json()["project_id"] == "pa"
    instance = {"group_id": "g-db", "migration_type": "LIVE_MIGRATE", "max_interruption_time": 5}
    assert client.put("/v1/instance/vm-a1", json=instance, headers=PA).status_code == 200

    got = client.get("/v1/instance/vm-a1", headers=PA).json()
    assert got == {
        "instance_id": "vm-a1",
        "project_id": "pa",
        "group_id": "g-db",
        "instance_name": "",
        "max_interruption_time": 5,
        "migration_type": "LIVE_MIGRATE",
        "resource_mitigation": False,
        "lead_time": 0,
    }
    assert client.get("/v1/instance_group/g-db", headers=PA).json()["anti_affinity_group"] is True
    assert [c["instance_id"] for c in client.get("/v1/instance", headers=PA).json()] == ["vm-a1"]
    assert client.get("/v1/instance", headers=PB).json() == []
    assert [g["group_id"] for g in client.get("/v1/instance_group", headers=ADMIN).json()] == [
        "g-db"
    ]
    # The engine holds what the API wrote.
    assert engine.get_instance_constraints("vm-a1").group_id == "g-db"

    assert client.delete("/v1/instance/vm-a1", headers=PA).status_code == 204
    assert client.get("/v1/instance/vm-a1", headers=PA).status_code == 404
    assert client.delete("/v1/instance_group/g-db", headers=PA).status_code == 204
    assert engine.list_group_constraints() == []


def test_admin_sets_constraints_for_a_named_project(client: TestClient, engine: Engine) -> None:
    missing = client.put("/v1/instance_group/g1", json={}, headers=ADMIN)
    assert missing.status_code == 400
    assert missing.json()["error"]["field"] == "project_id"
    ok = client.put("/v1/instance_group/g1", json={"project_id": "pb"}, headers=ADMIN)
    assert ok.status_code == 200
    assert engine.get_group_constraints("g1").project_id == "pb"


def test_subscription_registers_the_manager(client: TestClient, engine: Engine) -> None:
    subscribe(client, "pa", PA, event_type="maintenance.scheduled", body_shape="event_alarm")
    assert engine.subscriptions() == ["pa"]
    assert client.get("/v1/subscription/pa", headers=PA).json() == {
        "project_id": "pa",
        "url": "http://pa.test/alarm",
        "event_type": "maintenance.scheduled",
        "body_shape": "event_alarm",
    }
    subscribe(client, "pa", PA, url="https://pa.test/v2")  # replaces
    assert [s["url"] for s in client.get("/v1/subscription", headers=ADMIN).json()] == [
        "https://pa.test/v2"
    ]
    assert client.delete("/v1/subscription/pa", headers=PA).status_code == 204
    assert engine.subscriptions() == []
    assert client.get("/v1/subscription/pa", headers=PA).status_code == 404


def test_openapi_and_health(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/maintenance",
        "/v1/maintenance/{session_id}",
        "/v1/maintenance/{session_id}/{project_id}",
        "/v1/instance/{instance_id}",
        "/v1/instance_group/{group_id}",
        "/v1/subscription/{project_id}",
    ):
        assert path in paths
    assert set(paths["/v1/maintenance/{session_id}"]) == {"get", "put", "delete"}
    for action in ("pause", "resume", "cancel"):
        assert set(paths[f"/v1/maintenance/{{session_id}}/{action}"]) == {"post"}
    assert "SessionRequestSchema" in spec["components"]["schemas"]
    assert client.get("/healthz").json() == {"status": "ok"}


def test_fenix_era_constraints_and_replies(client: TestClient, engine: Engine) -> None:
    """What the OPNFV Doctor VNFM and Tacker's Fenix plug-in send: a
    migration_type of older clients, an ACK_MAINTENANCE with instance_ids, an
    instance_action without instance_ids for the instances asked about."""
    subscribe(client, "pa", PA)
    for instance_id, kind in (("vm-a1", "MIGRATION"), ("vm-a2", "LIVE_MIGRATION")):
        doctor = {"project_id": "pa", "instance_name": instance_id, "migration_type": kind}
        put = client.put(f"/v1/instance/{instance_id}", json=doctor, headers=PA)
        assert put.status_code == 200, put.text
    assert client.get("/v1/instance/vm-a1", headers=PA).json()["migration_type"] == "MIGRATE"
    assert engine.get_instance_constraints("vm-a2").migration_type == "LIVE_MIGRATE"
    unknown = client.put("/v1/instance/vm-a1", json={"migration_type": "TELEPORT"}, headers=PA)
    assert unknown.status_code == 400
    assert unknown.json()["error"]["field"] == "migration_type"

    session_id = create(client, hosts=["cmp-0", "cmp-1", "cmp-2"])
    engine.run_until_idle()
    url = f"/v1/maintenance/{session_id}/pa"
    maintenance = {"session_id": session_id, "state": "ACK_MAINTENANCE"}
    ack = client.put(url, json={**maintenance, "instance_ids": ["vm-a1", "vm-a2"]}, headers=PA)
    assert ack.status_code == 200, ack.text
    engine.run_until_idle()
    asked = client.get(url, headers=PA).json()
    assert asked["state"] == "PLANNED_MAINTENANCE"
    assert asked["instance_ids"] == ["vm-a1"]
    doctor = {"session_id": session_id, "state": "ACK_PLANNED_MAINTENANCE"}
    reply = client.put(url, json={**doctor, "instance_action": "MIGRATE"}, headers=PA)
    assert reply.status_code == 200, reply.text
    engine.run_until_idle()
    actions = {i.instance_id: i.action for i in engine.project_view(session_id, "pa").instances}
    assert actions["vm-a1"] == "MIGRATE"
    # Not asked to choose now: the engine says the reply is not awaited.
    late = client.put(url, json={**doctor, "instance_action": "MIGRATE"}, headers=PA)
    assert late.status_code == 409, late.text
