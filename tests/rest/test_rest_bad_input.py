"""Bad input: the right status, a JSON error naming the field, nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fenix_core import Engine

from .conftest import ADMIN, PA, PB, error_of

JSON = {**ADMIN, "content-type": "application/json"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b"[1, 2]", "body"),
        (b'{"hosts": "cmp-0"}', "hosts"),
        (b'{"hosts": [1]}', "hosts[0]"),
        (b'{"hostz": []}', "hostz"),
        (b'{"state": "GO"}', "state"),
        (b'{"maintenance_at": 5}', "maintenance_at"),
        (b'{"maintenance_at": "next tuesday"}', "maintenance_at"),
        (b'{"actions": [{"plugin": "x"}]}', "actions[0].type"),
        (b'{"actions": [{"plugin": "x", "type": "host", "order": "1"}]}', "actions[0].order"),
        (b'{"actions": [{"plugin": "nope", "type": "host"}]}', "actions[0].plugin"),
        (b'{"hosts": ["cmp-9"]}', "hosts"),
        (b'{"workflow": "parallel-magic"}', "workflow"),
        (b'{"metadata": []}', "metadata"),
    ],
)
def test_bad_session_request_is_400_naming_the_field(
    client: TestClient, engine: Engine, body: bytes, field: str
) -> None:
    response = client.post("/v1/maintenance", content=body, headers=JSON)
    assert error_of(response) == (400, "invalid_input", field), response.text
    assert engine.list_sessions() == []


@pytest.fixture
def session_id(client: TestClient, engine: Engine) -> str:
    engine.subscribe("pa")
    session_id = engine.create_session({"hosts": ["cmp-0"]})
    engine.run_until_idle()
    return session_id


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"state": "ACK_MAINTENANCE", "instance_actions": []}, 400, "instance_actions"),
        ({"state": 1}, 400, "state"),
        ({"state": "YES"}, 400, "state"),
        ({"state": "ACK_MAINTENANCE", "colour": "red"}, 400, "colour"),
        ({"state": "ACK_MAINTENANCE", "project_id": "pb"}, 400, "project_id"),
        ({"state": "ACK_MAINTENANCE", "session_id": "other"}, 400, "session_id"),
        ({"state": "ACK_MAINTENANCE", "instance_action": "MIGRATE"}, 400, "instance_action"),
        (
            {"state": "ACK_MAINTENANCE", "instance_ids": ["vm-a1"], "instance_action": "MIGRATE"},
            400,
            "instance_actions",
        ),
        (
            {
                "state": "ACK_MAINTENANCE",
                "instance_actions": {"vm-a1": "MIGRATE"},
                "instance_action": "MIGRATE",
            },
            400,
            "instance_action",
        ),
        ({"state": "ACK_PLANNED_MAINTENANCE"}, 409, None),
    ],
)
def test_bad_reply_is_rejected_and_not_recorded(
    client: TestClient,
    engine: Engine,
    session_id: str,
    body: dict[str, object],
    status: int,
    field: str | None,
) -> None:
    response = client.put(f"/v1/maintenance/{session_id}/pa", json=body, headers=PA)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    # Nothing was recorded: the right reply is still accepted.
    good = client.put(
        f"/v1/maintenance/{session_id}/pa", json={"state": "ACK_MAINTENANCE"}, headers=PA
    )
    assert good.status_code == 200, good.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/maintenance/no-such-session", None),
        ("put", "/v1/maintenance/no-such-session", {"retry": True}),
        ("delete", "/v1/maintenance/no-such-session", None),
        ("get", "/v1/maintenance/no-such-session/pa", None),
        ("put", "/v1/maintenance/no-such-session/pa", {"state": "ACK_MAINTENANCE"}),
        ("get", "/v1/instance/vm-zz", None),
        ("delete", "/v1/instance_group/g-zz", None),
    ],
)
def test_unknown_objects_are_404(
    client: TestClient, method: str, path: str, body: dict[str, object] | None
) -> None:
    headers = ADMIN if "/pa" not in path else PA
    response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "not_found"


def test_project_not_in_session_is_404(client: TestClient, session_id: str) -> None:
    response = client.get(f"/v1/maintenance/{session_id}/pz", headers=ADMIN)
    assert error_of(response) == (404, "not_found", None)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/instance/vm-a1", {"max_interruption_time": "5"}, "max_interruption_time"),
        ("/v1/instance/vm-a1", {"migration_type": "TELEPORT"}, "migration_type"),
        ("/v1/instance/vm-a1", {"instance_id": "vm-a2"}, "instance_id"),
        ("/v1/instance/vm-a1", {"lead_time": -1}, "lead_time"),
        ("/v1/instance/vm-a1", {"group_id": "no-such-group"}, "group_id"),
        ("/v1/instance_group/g1", {"max_impacted_members": 0}, "max_impacted_members"),
        ("/v1/instance_group/g1", {"anti_affinity_group": "yes"}, "anti_affinity_group"),
        ("/v1/instance_group/g1", {"size": 3}, "size"),
        ("/v1/subscription/pa", {"url": "ftp://pa.test/x"}, "url"),
        ("/v1/subscription/pa", {"url": "http://pa.test", "body_shape": "xml"}, "body_shape"),
        ("/v1/subscription/pa", {}, "url"),
        ("/v1/subscription/pa", {"url": ""}, "url"),
        ("/v1/subscription/pa", {"url": "http://[::1"}, "url"),  # httpx: not a URL
    ],
)
def test_bad_constraints_and_subscriptions_are_400(
    client: TestClient, engine: Engine, path: str, body: dict[str, object], field: str
) -> None:
    response = client.put(path, json=body, headers=PA)
    assert error_of(response) == (400, "invalid_input", field), response.text
    assert engine.list_instance_constraints() == []
    assert engine.list_group_constraints() == []
    assert engine.subscriptions() == []


def test_deleting_a_subscription_nobody_made_is_404(client: TestClient, engine: Engine) -> None:
    response = client.delete("/v1/subscription/pa", headers=PA)
    assert error_of(response) == (404, "not_found", None), response.text
    assert engine.subscriptions() == []


def test_naming_the_holder_of_a_constraint_is_for_the_admin_and_the_holder(
    client: TestClient, engine: Engine
) -> None:
    """``?project_id=`` names whose row a GET or DELETE means: the admin may
    name any project, a project only itself; a refusal deletes nothing."""
    assert client.put("/v1/instance/vm-a1", json={"lead_time": 60}, headers=PA).status_code == 200
    read = client.get("/v1/instance/vm-a1", params={"project_id": "pa"}, headers=ADMIN)
    assert read.status_code == 200, read.text
    assert (read.json()["project_id"], read.json()["lead_time"]) == ("pa", 60)
    own = client.get("/v1/instance/vm-a1", params={"project_id": "pa"}, headers=PA)
    assert own.status_code == 200, own.text
    for method in ("get", "delete"):
        refused = client.request(method, "/v1/instance/vm-a1?project_id=pa", headers=PB)
        assert error_of(refused)[0] == 403, refused.text
    assert [c.project_id for c in engine.list_instance_constraints()] == ["pa"]


def test_oversize_bodies_are_413(client: TestClient, engine: Engine) -> None:
    big = b'{"metadata": {"x": "' + b"a" * 5000 + b'"}}'
    declared = client.post("/v1/maintenance", content=big, headers=JSON)
    assert error_of(declared) == (413, "too_large", "body")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"metadata": {"x": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}}'

    streamed = client.post("/v1/maintenance", content=chunks(), headers=JSON)
    assert error_of(streamed) == (413, "too_large", "body")
    assert engine.list_sessions() == []


def test_wrong_method_is_a_json_error(client: TestClient) -> None:
    response = client.patch("/v1/maintenance", json={}, headers=ADMIN)
    assert error_of(response) == (405, "method_not_allowed", None)
