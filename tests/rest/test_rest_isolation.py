"""Two tenants against every constraint and subscription route, before, during
and after a session: neither writes, reads nor learns the owner of the other's
instances and groups (issue 23). Project ids are long and distinctive, so that
"the owner's id is not in the answer" is a real check."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.rest import TokenAuthenticator, WebhookOutbox, create_app
from fenix_core.store.schema import ConstraintRevisionRow, InstanceConstraintRow
from fenix_core.testing import SimulatedCloud

ALPHA, BETA = "tenant-alpha-7f3", "tenant-beta-9c1"
TOKENS = TokenAuthenticator(["root"], {"tok-alpha": ALPHA, "tok-beta": BETA})
HEADERS = {ALPHA: {"X-Auth-Token": "tok-alpha"}, BETA: {"X-Auth-Token": "tok-beta"}}
ADMIN = {"X-Auth-Token": "root"}
VM = {ALPHA: "vm-1", BETA: "vm-2"}
GRP = {ALPHA: "grp-1", BETA: "grp-2"}
OTHER = {ALPHA: BETA, BETA: ALPHA}


@pytest.fixture
def engine(fenix_cloud: SimulatedCloud, fenix_engine_factory: Any) -> Engine:
    for host in ("cmp-0", "cmp-1", "cmp-2"):
        fenix_cloud.add_host(host, vcpus=8)
    fenix_cloud.add_instance("vm-1", project_id=ALPHA, host="cmp-0", vcpus=2)
    fenix_cloud.add_instance("vm-2", project_id=BETA, host="cmp-1", vcpus=2)
    made: Engine = fenix_engine_factory()
    return made


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    box = WebhookOutbox(engine, public_url="http://fenix.test").connect()
    with TestClient(create_app(engine, TOKENS, outbox=box)) as test_client:
        yield test_client
    box.disconnect()


def own_state(client: TestClient, project: str) -> dict[str, Any]:
    """Everything the project has, as the admin sees it."""
    who = {"project_id": project}
    return {
        "instance": client.get(f"/v1/instance/{VM[project]}", params=who, headers=ADMIN).json(),
        "group": client.get(f"/v1/instance_group/{GRP[project]}", params=who, headers=ADMIN).json(),
        "subscription": client.get(f"/v1/subscription/{project}", headers=ADMIN).json(),
    }


def set_up(client: TestClient, project: str) -> None:
    me = HEADERS[project]
    put = client.put(
        f"/v1/instance_group/{GRP[project]}", json={"max_impacted_members": 2}, headers=me
    )
    assert put.status_code == 200, put.text
    body = {"group_id": GRP[project], "lead_time": 5}
    assert client.put(f"/v1/instance/{VM[project]}", json=body, headers=me).status_code == 200
    hook = {"url": f"http://{project}.test/hook"}
    assert client.put(f"/v1/subscription/{project}", json=hook, headers=me).status_code == 200


def attack(client: TestClient, attacker: str) -> None:
    """Every route, aimed at the other project's ids."""
    victim = OTHER[attacker]
    me = HEADERS[attacker]
    theirs_before = own_state(client, victim)
    vm, grp = VM[victim], GRP[victim]
    answers = []

    def call(method: str, path: str, expected: int, **kw: Any) -> None:
        response = client.request(method, path, headers=me, **kw)
        assert response.status_code == expected, (method, path, response.text)
        answers.append(response)

    # Instances: the victim's is not found, whatever the method.
    call("GET", f"/v1/instance/{vm}", 404)
    call("PUT", f"/v1/instance/{vm}", 404, json={})
    call("PUT", f"/v1/instance/{vm}", 404, json={"lead_time": 9999, "migration_type": "EVICT"})
    call("DELETE", f"/v1/instance/{vm}", 404)
    # An id the cloud does not have answers the same.
    call("PUT", "/v1/instance/vm-nobody", 404, json={})
    # Acting for the victim, by body or query, is refused without naming anyone else.
    call("PUT", f"/v1/instance/{VM[attacker]}", 403, json={"project_id": victim})
    call("GET", f"/v1/instance/{vm}", 403, params={"project_id": victim})
    call("DELETE", f"/v1/instance_group/{grp}", 403, params={"project_id": victim})
    call("PUT", f"/v1/instance_group/{grp}", 403, json={"project_id": victim})
    # Pointing an own instance at the victim's group: no such group (of mine).
    call("PUT", f"/v1/instance/{VM[attacker]}", 400, json={"group_id": grp})
    # Groups: the victim's is not found; a PUT of that id makes the attacker's own.
    call("GET", f"/v1/instance_group/{grp}", 404)
    call("DELETE", f"/v1/instance_group/{grp}", 404)
    call("PUT", f"/v1/instance_group/{grp}", 200, json={"max_impacted_members": 9})
    assert answers[-1].json()["project_id"] == attacker
    call("DELETE", f"/v1/instance_group/{grp}", 204)
    # Lists show the attacker's own rows only.
    call("GET", "/v1/instance", 200)
    assert {c["project_id"] for c in answers[-1].json()} <= {attacker}
    call("GET", "/v1/instance_group", 200)
    assert {c["project_id"] for c in answers[-1].json()} <= {attacker}
    # Subscriptions: the victim's are out of reach; the list is the admin's.
    call("GET", f"/v1/subscription/{victim}", 403)
    call("PUT", f"/v1/subscription/{victim}", 403, json={"url": "http://evil.test/"})
    call("DELETE", f"/v1/subscription/{victim}", 403)
    call("GET", "/v1/subscription", 403)

    for response in answers:
        assert victim not in response.text, (response.request.url, response.text)
    assert own_state(client, victim) == theirs_before
    # The victim is not locked out of anything it owns.
    set_up(client, victim)


def test_two_tenants_before_during_and_after_a_session(
    client: TestClient, engine: Engine, fenix_clock: SimClock
) -> None:
    # Before any session: the owner comes from the cloud, not from who writes first.
    for project in (BETA, ALPHA):
        attack(client, project)
    for project in (ALPHA, BETA):
        set_up(client, project)
    for project in (ALPHA, BETA):
        attack(client, project)
    # During one.
    start = fenix_clock.now() + timedelta(hours=1)
    body = {"hosts": ["cmp-0", "cmp-1"], "workflow": "vnf", "maintenance_at": start.isoformat()}
    created = client.post("/v1/maintenance", json=body, headers=ADMIN)
    assert created.status_code == 200, created.text
    sid = created.json()["session_id"]
    engine.run_until_idle()
    for project in (ALPHA, BETA):
        attack(client, project)
    # After it.
    for _ in range(10_000):
        if engine.get_session(sid).state in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED"):
            break
        fenix_clock.advance_to(engine.next_wake() or fenix_clock.now() + timedelta(seconds=30))
        engine.run_until_idle()
    assert engine.get_session(sid).state in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")
    for project in (ALPHA, BETA):
        attack(client, project)
    assert engine.get_session(sid).ignored_constraints == ()


@pytest.mark.no_cover
def test_a_stored_row_the_cloud_contradicts_is_ignored_and_reported(
    client: TestClient, engine: Engine, fenix_clock: SimClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A row written before fenix-core asked the cloud (or by a driver that
    # cannot say): beta's constraints for alpha's vm-1, an hour of lead time.
    # Written as another worker writes: with the revision every worker checks.
    with Session(engine.database) as orm, orm.begin():
        orm.add(
            InstanceConstraintRow(
                project_id=BETA,
                instance_id="vm-1",
                group_id=None,
                instance_name="",
                max_interruption_time=None,
                migration_type="OWN_ACTION",
                resource_mitigation=False,
                lead_time=3600,
                updated_at=fenix_clock.now(),
            )
        )
        # As every writer does: a new revision, so that the engines read again.
        revision = orm.get(ConstraintRevisionRow, 1)
        if revision is None:
            orm.add(ConstraintRevisionRow(id=1, revision=1))
        else:
            revision.revision += 1
    with caplog.at_level(logging.WARNING, logger="fenix_core"):
        sid = engine.create_session({"hosts": ["cmp-0"], "workflow": "constrained"})
    assert any("vm-1" in r.getMessage() and BETA in r.getMessage() for r in caplog.records)
    view = client.get(f"/v1/maintenance/{sid}", headers=ADMIN).json()
    assert view["ignored_constraints"] == [
        {"kind": "instance", "ident": "vm-1", "project_id": BETA, "cloud_project_id": ALPHA}
    ]
    began = fenix_clock.now()
    for _ in range(10_000):
        if engine.get_session(sid).state in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED"):
            break
        fenix_clock.advance_to(engine.next_wake() or fenix_clock.now() + timedelta(seconds=30))
        engine.run_until_idle()
    assert engine.get_session(sid).state == "MAINTENANCE_DONE"
    # vm-1 moved without beta's hour of lead time and not by beta's OWN_ACTION.
    assert fenix_clock.now() - began < timedelta(minutes=30)
    moves = [op for op in engine.list_operations(sid) if op.kind == "move"]
    assert [op.instance_id for op in moves] == ["vm-1"]
    # Alpha still sets its own constraints for vm-1.
    response = client.put("/v1/instance/vm-1", json={"lead_time": 1}, headers=HEADERS[ALPHA])
    assert response.status_code == 200
