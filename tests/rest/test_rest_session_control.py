"""REST parity with the Python API: pause, resume and cancel, every
SessionRequest field, the session view with progress, waiting and stuck work."""

from __future__ import annotations

from fastapi.testclient import TestClient

from fenix_core import Engine
from fenix_core.clock import SimClock

from .conftest import ADMIN, PA, error_of
from .db_snapshot import snapshot
from .test_rest_api import create


def test_pause_resume_cancel_round_trip_with_an_admin_token(
    client: TestClient, engine: Engine
) -> None:
    session_id = create(client, hosts=["cmp-0", "cmp-1"])
    paused = client.post(f"/v1/maintenance/{session_id}/pause", headers=ADMIN)
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert engine.get_session(session_id).paused
    resumed = client.post(f"/v1/maintenance/{session_id}/resume", headers=ADMIN)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False
    assert not engine.get_session(session_id).paused
    cancelled = client.post(f"/v1/maintenance/{session_id}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.text
    engine.run_until_idle()
    assert engine.get_session(session_id).state == "MAINTENANCE_CANCELLED"
    again = client.post(f"/v1/maintenance/{session_id}/pause", headers=ADMIN)
    assert error_of(again)[:2] == (409, "conflict")
    missing = client.post("/v1/maintenance/no-such-session/resume", headers=ADMIN)
    assert error_of(missing)[:2] == (404, "not_found")


def test_pause_resume_cancel_refused_with_a_project_token(
    client: TestClient, engine: Engine
) -> None:
    session_id = create(client, hosts=["cmp-0", "cmp-1"])
    before = snapshot(engine)
    for action in ("pause", "resume", "cancel"):
        refused = client.post(f"/v1/maintenance/{session_id}/{action}", headers=PA)
        assert error_of(refused) == (403, "forbidden", None)
        anonymous = client.post(f"/v1/maintenance/{session_id}/{action}")
        assert error_of(anonymous)[:2] == (401, "unauthorized")
    assert snapshot(engine) == before
    view = engine.get_session(session_id)
    assert not view.paused
    assert view.state == "MAINTENANCE"


def test_every_session_request_field_over_rest(client: TestClient, engine: Engine) -> None:
    controls = {
        "windows": [{"days": ["mon", "tue"], "start": "22:00", "end": "04:00"}],
        "timezone": "Europe/Paris",
        "max_hosts_per_hour": 2,
        "settle_seconds": 60,
        "escalation": {"migration": "wait_and_notify"},
    }
    session_id = create(
        client,
        hosts=["cmp-0", "cmp-1"],
        workflow="constrained",
        max_parallel_hosts=1,
        controls=controls,
        decommission_hosts=["cmp-1"],
        add_hosts=[],
        reply_windows={"MAINTENANCE": 120},
        timeouts={"migration": 600},
        max_migration_retries=1,
    )
    request = engine.get_session(session_id).request
    assert request["max_parallel_hosts"] == 1
    assert request["decommission_hosts"] == ["cmp-1"]
    assert request["controls"]["timezone"] == "Europe/Paris"
    assert request["controls"]["windows"] == [
        {"days": ["mon", "tue"], "start": "22:00", "end": "04:00"}
    ]
    view = client.get(f"/v1/maintenance/{session_id}", headers=ADMIN).json()
    assert view["request"]["max_parallel_hosts"] == 1
    assert view["request"]["controls"]["max_hosts_per_hour"] == 2


def test_null_means_the_default_for_every_optional_field(client: TestClient) -> None:
    """The description marks these nullable, so null is accepted."""
    nullable = [
        "workflow",
        "maintenance_at",
        "actions",
        "metadata",
        "project_policy",
        "reply_policy",
        "state",
        "download",
        "reply_windows",
        "timeouts",
        "max_migration_retries",
        "max_parallel_hosts",
        "controls",
        "add_hosts",
        "decommission_hosts",
    ]
    spec = client.get("/openapi.json").json()["components"]["schemas"]["SessionRequestSchema"]
    for name in nullable:
        assert {"type": "null"} in spec["properties"][name]["anyOf"], name
    session_id = create(client, hosts=["cmp-0"], **dict.fromkeys(nullable))
    view = client.get(f"/v1/maintenance/{session_id}", headers=ADMIN).json()
    assert view["workflow"] == "rolling"


def test_the_session_view_shows_waiting_progress_and_eta(
    client: TestClient, engine: Engine
) -> None:
    session_id = create(
        client,
        hosts=["cmp-0", "cmp-1", "cmp-2"],
        controls={"max_hosts_per_hour": 1, "host_seconds": 600},
    )
    clock = engine.clock
    assert isinstance(clock, SimClock)
    for _ in range(40):  # 40 simulated minutes: one host done, the next held by the rate
        engine.run_until_idle()
        clock.advance(60)
        if engine.get_session(session_id).progress.hosts_done:  # type: ignore[union-attr]
            break
    engine.run_until_idle()
    view = client.get(f"/v1/maintenance/{session_id}", headers=ADMIN).json()
    assert view["waiting"] is not None
    assert "hour" in view["waiting"]
    progress = view["progress"]
    assert progress["hosts_done"] + progress["hosts_in_progress"] >= 1
    assert progress["estimated_end"] is not None
    assert progress["eta_seconds"] > 0
    assert view["stuck"] == []


def test_a_body_that_is_not_utf8_names_the_body(client: TestClient, engine: Engine) -> None:
    before = snapshot(engine)
    response = client.post(
        "/v1/maintenance",
        content=b'{"hosts": ["\xff\xfe"]}',
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert error_of(response) == (400, "invalid_input", "body")
    assert snapshot(engine) == before


def test_every_problem_of_a_body_is_answered_at_once(client: TestClient, engine: Engine) -> None:
    before = snapshot(engine)
    response = client.post(
        "/v1/maintenance",
        json={"hosts": ["cmp-0", "cmp-0"], "max_parallel_hosts": 0, "colour": "blue"},
        headers=ADMIN,
    )
    assert error_of(response) == (400, "invalid_input", "hosts[1]")
    fields = [e["field"] for e in response.json()["error"]["errors"]]
    assert fields == ["hosts[1]", "max_parallel_hosts", "colour"]
    assert snapshot(engine) == before


def test_the_described_answers_have_the_views_fields(client: TestClient) -> None:
    """The OpenAPI answers of the session routes list exactly the view's attributes."""
    import attrs

    from fenix_core.model import HostView, IgnoredConstraint, Progress, SessionView, StuckWork

    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for body, view in (
        ("SessionViewBody", SessionView),
        ("HostViewBody", HostView),
        ("StuckWorkBody", StuckWork),
        ("ProgressBody", Progress),
        ("IgnoredConstraintBody", IgnoredConstraint),
    ):
        assert set(schemas[body]["properties"]) == {f.name for f in attrs.fields(view)}, body
