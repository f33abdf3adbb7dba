"""Authentication (401) and isolation between the admin and projects (403 / 404)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fenix_core import Engine
from fenix_core.errors import InvalidInput
from fenix_core.rest import Identity, TokenAuthenticator, WebhookOutbox, create_app
from fenix_core.testing import SimClock, SimulatedCloud

from .conftest import ADMIN, PA, PB, TOKENS, error_of, small_cloud

ADMIN_ONLY = [
    ("post", "/v1/maintenance", {}),
    ("get", "/v1/maintenance", None),
    ("get", "/v1/maintenance/{sid}", None),
    ("put", "/v1/maintenance/{sid}", {"retry": True}),
    ("delete", "/v1/maintenance/{sid}", None),
    ("get", "/v1/subscription", None),
]
PA_ONLY = [
    ("get", "/v1/maintenance/{sid}/pa", None),
    ("put", "/v1/maintenance/{sid}/pa", {"state": "ACK_MAINTENANCE"}),
    ("get", "/v1/subscription/pa", None),
    ("put", "/v1/subscription/pa", {"url": "http://pb.test/steal"}),
    ("delete", "/v1/subscription/pa", None),
]
EVERY = [*ADMIN_ONLY, *PA_ONLY, ("get", "/v1/instance/vm-a1", None)]


@pytest.fixture
def sid(engine: Engine) -> str:
    engine.subscribe("pa")
    session_id = engine.create_session({"hosts": ["cmp-0"]})
    engine.run_until_idle()
    return session_id


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[TestClient, Engine, str]]:
    """One app for the refusal matrices: a refused request changes nothing."""
    engine = Engine(
        clock=SimClock(), plugins=[small_cloud(SimulatedCloud())], load_entry_points=False
    )
    engine.subscribe("pa")
    session_id = engine.create_session({"hosts": ["cmp-0"]})
    engine.run_until_idle()
    outbox = WebhookOutbox(engine).connect()
    with TestClient(create_app(engine, TOKENS, outbox=outbox)) as test_client:
        yield test_client, engine, session_id
    outbox.disconnect()
    engine.close()


@pytest.mark.parametrize(("method", "path", "body"), EVERY)
@pytest.mark.parametrize("headers", [{}, {"X-Auth-Token": "forged"}, {"X-Auth-Token": ""}])
def test_no_or_invalid_token_is_401(
    shared: tuple[TestClient, Engine, str],
    method: str,
    path: str,
    body: object,
    headers: dict[str, str],
) -> None:
    client, _, sid = shared
    response = client.request(method, path.format(sid=sid), json=body, headers=headers)
    assert error_of(response) == (401, "unauthorized", None)
    assert response.headers["www-authenticate"].startswith("Token")


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
def test_project_token_on_admin_route_is_403(
    shared: tuple[TestClient, Engine, str], method: str, path: str, body: object
) -> None:
    client, engine, sid = shared
    response = client.request(method, path.format(sid=sid), json=body, headers=PA)
    assert error_of(response) == (403, "forbidden", None)
    assert [s.session_id for s in engine.list_sessions()] == [sid]


@pytest.mark.parametrize(("method", "path", "body"), PA_ONLY)
def test_other_projects_token_is_403(
    shared: tuple[TestClient, Engine, str], method: str, path: str, body: object
) -> None:
    client, engine, sid = shared
    response = client.request(method, path.format(sid=sid), json=body, headers=PB)
    assert error_of(response) == (403, "forbidden", None)
    assert engine.project_view(sid, "pa").state == "MAINTENANCE"  # not answered by pb


def test_project_cannot_answer_for_an_instance_of_another_project(
    client: TestClient, engine: Engine, sid: str
) -> None:
    client.put(f"/v1/maintenance/{sid}/pa", json={"state": "ACK_MAINTENANCE"}, headers=PA)
    engine.run_until_idle()
    assert engine.project_view(sid, "pa").state == "PREPARE_MAINTENANCE"
    stolen = {"state": "ACK_PREPARE_MAINTENANCE", "instance_actions": {"vm-b1": "MIGRATE"}}
    response = client.put(f"/v1/maintenance/{sid}/pa", json=stolen, headers=PA)
    assert error_of(response) == (403, "forbidden", None)


def test_constraints_of_another_project_are_not_found(client: TestClient, engine: Engine) -> None:
    assert client.put("/v1/instance_group/g-a", json={}, headers=PA).status_code == 200
    assert client.put("/v1/instance/vm-a1", json={"group_id": "g-a"}, headers=PA).status_code == 200
    for method, path, body in [
        ("get", "/v1/instance/vm-a1", None),
        ("put", "/v1/instance/vm-a1", {}),
        ("delete", "/v1/instance/vm-a1", None),
        ("get", "/v1/instance_group/g-a", None),
        ("delete", "/v1/instance_group/g-a", None),
    ]:
        response = client.request(method, path, json=body, headers=PB)
        assert response.status_code == 404, (method, path, response.text)
    put_as_other = client.put("/v1/instance_group/g-b", json={"project_id": "pa"}, headers=PB)
    assert put_as_other.status_code == 403
    assert engine.get_group_constraints("g-a").max_impacted_members == 1
    assert [g.group_id for g in engine.list_group_constraints()] == ["g-a"]


def test_admin_reads_every_project(client: TestClient, sid: str) -> None:
    assert client.get(f"/v1/maintenance/{sid}/pa", headers=ADMIN).status_code == 200


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"admin": ["a1"], "projects": {"t1": "p1"}}))
    auth = TokenAuthenticator.from_file(path)
    assert auth.authenticate("a1") == Identity(admin=True)
    assert auth.authenticate("t1") == Identity(admin=False, project_id="p1")
    assert auth.authenticate("t2") is None
    path.write_text(json.dumps({"admins": ["a1"]}))
    with pytest.raises(InvalidInput, match="token_file"):
        TokenAuthenticator.from_file(path)
    path.write_text(json.dumps({"projects": {"t1": ""}}))
    with pytest.raises(InvalidInput):
        TokenAuthenticator.from_file(path)
