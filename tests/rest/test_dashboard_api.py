"""The dashboard's pages and JSON endpoints without a browser: the HTML shell
carries no data, every JSON endpoint needs a token, the session data has its
documented shape (host lanes, waves, groups, questions, stuck work,
notifications, ETA), and a project token sees only its own project's part.

Project and instance ids are long and distinctive, so that "another
project's id is not in the answer" is a real check."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.errors import TargetRefused
from fenix_core.model import SessionView
from fenix_core.rest import TokenAuthenticator, WebhookOutbox, create_app
from fenix_core.testing import SimulatedCloud, TimedAction

ALPHA, BETA = "tenant-alpha-5d2", "tenant-beta-8e4"
VM_A1, VM_A2, VM_B1 = "vm-alpha-one", "vm-alpha-two", "vm-beta-one"
TOKENS = TokenAuthenticator(["root"], {"tok-alpha": ALPHA, "tok-beta": BETA})
ADMIN = {"X-Auth-Token": "root"}
AS = {ALPHA: {"X-Auth-Token": "tok-alpha"}, BETA: {"X-Auth-Token": "tok-beta"}}
SECRETS = {ALPHA: (ALPHA, VM_A1, VM_A2, "grp-alpha"), BETA: (BETA, VM_B1, "grp-beta")}
OTHER = {ALPHA: BETA, BETA: ALPHA}


@pytest.fixture
def engine(fenix_cloud: SimulatedCloud, fenix_engine_factory: Any) -> Engine:
    for host in ("cmp-0", "cmp-1", "cmp-2"):
        fenix_cloud.add_host(host, vcpus=8)
    fenix_cloud.add_instance(VM_A1, project_id=ALPHA, host="cmp-0", vcpus=2)
    fenix_cloud.add_instance(VM_A2, project_id=ALPHA, host="cmp-1", vcpus=2)
    fenix_cloud.add_instance(VM_B1, project_id=BETA, host="cmp-0", vcpus=2)
    made: Engine = fenix_engine_factory(TimedAction("upgrade", 300, fail_on=["cmp-2"]))
    return made


@pytest.fixture
def client(engine: Engine, outbox: WebhookOutbox) -> Iterator[TestClient]:
    with TestClient(create_app(engine, TOKENS, outbox=outbox)) as test_client:
        yield test_client


def drive(engine: Engine, sid: str, stop: Callable[[SessionView], bool]) -> SessionView:
    """Run on simulated time until ``stop(view)`` or nothing is left to wait for."""
    clock = engine.clock
    assert isinstance(clock, SimClock)
    for _ in range(10_000):
        engine.run_until_idle()
        view = engine.get_session(sid)
        wake = engine.next_wake()
        if stop(view) or wake is None:
            return view
        clock.advance_to(max(wake, clock.now()))
    raise AssertionError("the session did not settle")


def create(client: TestClient, **body: Any) -> str:
    answer = client.post("/v1/maintenance", json=body, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["session_id"])


def page_data(client: TestClient, sid: str, headers: dict[str, str]) -> dict[str, Any]:
    answer = client.get(f"/dashboard/api/sessions/{sid}", headers=headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def assert_nothing_of(project: str, data: Any) -> None:
    text = json.dumps(data)
    for secret in SECRETS[OTHER[project]]:
        assert secret not in text, f"{secret} leaked to {project}"


# --------------------------------------------------------------------------- the HTML shell


def test_the_pages_are_one_shell_without_data(client: TestClient, engine: Engine) -> None:
    sid = create(client, hosts=["cmp-0"])
    for path in ("/dashboard", f"/dashboard/sessions/{sid}"):
        page = client.get(path)  # a plain navigation: no token
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "$" not in page.text  # every placeholder filled
        for secret in (sid, ALPHA, BETA, VM_A1, "cmp-0"):
            assert secret not in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["cache-control"] == "no-store"
        assert '/dashboard/static/dashboard.js"' in page.text
    # The same bytes for the list and a session, apart from the page's name and title.
    a = client.get("/dashboard").text
    b = client.get("/dashboard/sessions/x").text
    assert a.replace("sessions", "session") == b.replace("sessions", "session")


def test_the_script_and_style_are_served_by_fenix_api(client: TestClient) -> None:
    js = client.get("/dashboard/static/dashboard.js")
    css = client.get("/dashboard/static/dashboard.css")
    assert js.status_code == css.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert css.headers["content-type"].startswith("text/css")
    # Nothing from elsewhere: no absolute URL to load scripts, styles or fonts from.
    for text in (js.text, css.text, client.get("/dashboard").text):
        assert "http://" not in text
        assert "https://" not in text
    assert "X-Auth-Token" in js.text
    assert client.get("/dashboard/static/nothing.js").status_code == 404


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("path", ["/dashboard/api/whoami", "/dashboard/api/sessions"])
@pytest.mark.parametrize("headers", [{}, {"X-Auth-Token": "made-up"}])
def test_every_json_endpoint_needs_a_valid_token(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    sid = create(client, hosts=["cmp-0"])
    for url in (path, f"/dashboard/api/sessions/{sid}"):
        answer = client.get(url, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "unauthorized"


def test_whoami(client: TestClient) -> None:
    assert client.get("/dashboard/api/whoami", headers=ADMIN).json() == {
        "admin": True,
        "project_id": None,
    }
    me = client.get("/dashboard/api/whoami", headers=AS[BETA]).json()
    assert me == {"admin": False, "project_id": BETA}


def test_the_json_endpoints_are_described_without_422(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    session = paths["/dashboard/api/sessions/{session_id}"]["get"]["responses"]
    assert set(session) == {"200", "400", "401", "404", "413"}
    assert set(paths["/dashboard/api/sessions"]["get"]["responses"]) == {"200", "401", "413"}
    assert "/dashboard" not in paths  # the HTML shell is not part of the API


# --------------------------------------------------------------------------- the sessions list


def test_a_project_token_lists_only_its_projects_sessions(
    client: TestClient, engine: Engine
) -> None:
    both = create(client, hosts=["cmp-0"])  # alpha's and beta's instances
    alpha_only = create(client, hosts=["cmp-1"])
    nobody = create(client, hosts=["cmp-2"])
    listed = client.get("/dashboard/api/sessions", headers=ADMIN).json()["sessions"]
    assert [s["session_id"] for s in listed] == [nobody, alpha_only, both]  # newest first
    assert listed[2]["projects"] == 2
    alpha = client.get("/dashboard/api/sessions", headers=AS[ALPHA]).json()["sessions"]
    beta = client.get("/dashboard/api/sessions", headers=AS[BETA]).json()["sessions"]
    assert [s["session_id"] for s in alpha] == [alpha_only, both]
    assert [s["session_id"] for s in beta] == [both]
    assert "projects" not in beta[0]
    assert "reason" not in beta[0]
    assert beta[0]["awaiting_reply"] is False
    assert_nothing_of(BETA, beta)
    # Its page data is refused exactly as for an id that does not exist.
    theirs = client.get(f"/dashboard/api/sessions/{alpha_only}", headers=AS[BETA])
    unknown = client.get("/dashboard/api/sessions/no-such-session", headers=AS[BETA])
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["message"].replace(alpha_only, "ID") == unknown.json()["error"][
        "message"
    ].replace("no-such-session", "ID")


def test_the_list_shows_state_progress_and_eta(client: TestClient, engine: Engine) -> None:
    sid = create(
        client,
        hosts=["cmp-0", "cmp-1"],
        actions=[{"plugin": "upgrade", "type": "host"}],
        controls={"max_hosts_per_hour": 1},
    )
    drive(engine, sid, lambda v: bool(v.progress and v.progress.hosts_done))
    (row,) = client.get("/dashboard/api/sessions", headers=ADMIN).json()["sessions"]
    assert row["state"] not in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")
    assert row["percent_done"] == 50
    assert row["hosts"] == 2
    progress = row["progress"]
    assert progress["hosts_done"] == 1
    assert progress["hosts_waiting"] + progress["hosts_in_progress"] == 1
    # One host an hour: the second cannot end before an hour after the first began.
    assert progress["eta_seconds"] > 1800
    assert progress["estimated_end"] is not None
    (mine,) = client.get("/dashboard/api/sessions", headers=AS[ALPHA]).json()["sessions"]
    assert mine["progress"] == progress  # the ETA is no other project's data


# --------------------------------------------------------------------------- one session


def test_host_lanes_waves_and_controls_through_a_session(
    client: TestClient, engine: Engine
) -> None:
    sid = create(client, hosts=["cmp-0", "cmp-1"], actions=[{"plugin": "upgrade", "type": "host"}])
    data = page_data(client, sid, ADMIN)
    assert data["host_fields"] == [
        "name",
        "state",
        "drain_start",
        "maintenance_start",
        "end",
        "wave",
    ]
    assert [h[:2] for h in data["hosts"]] == [["cmp-0", "PENDING"], ["cmp-1", "PENDING"]]
    assert data["controls"] == {"pause": True, "resume": False, "cancel": True, "retry": False}

    view = drive(engine, sid, lambda v: "IN_MAINTENANCE" in {h.state for h in v.hosts})
    (first,) = (h.name for h in view.hosts if h.state == "IN_MAINTENANCE")
    data = page_data(client, sid, ADMIN)
    lanes = {h[0]: h for h in data["hosts"]}
    _name, state, drain, started, end, wave = lanes.pop(first)
    assert (state, end, wave) == ("IN_MAINTENANCE", None, 0)
    assert drain is not None  # its instance was moved off first
    assert 0 <= drain <= started <= data["now_offset"]
    assert [lane[1] for lane in lanes.values()] == ["PENDING"]
    assert data["waves"] == 1
    assert data["session"]["progress"]["hosts_in_progress"] == 1

    assert client.post(f"/v1/maintenance/{sid}/pause", headers=ADMIN).status_code == 200
    data = page_data(client, sid, ADMIN)
    assert data["session"]["paused"] is True
    assert data["controls"] == {"pause": False, "resume": True, "cancel": True, "retry": False}
    assert client.post(f"/v1/maintenance/{sid}/resume", headers=ADMIN).status_code == 200

    view = drive(engine, sid, lambda v: v.state == "MAINTENANCE_DONE")
    assert view.state == "MAINTENANCE_DONE"
    data = page_data(client, sid, ADMIN)
    for _name, state, drain, started, end, wave in data["hosts"]:
        assert state == "MAINTAINED"
        assert drain <= started <= end <= data["now_offset"]
        assert wave is not None
    assert data["waves"] == 2  # rolling: one host after the other
    assert data["controls"] == {"pause": False, "resume": False, "cancel": False, "retry": False}
    assert data["session"]["progress"]["eta_seconds"] == 0


def test_a_failed_session_offers_retry_and_shows_the_hosts_reason(
    client: TestClient, engine: Engine
) -> None:
    sid = create(client, hosts=["cmp-2"], actions=[{"plugin": "upgrade", "type": "host"}])
    view = drive(engine, sid, lambda v: v.state == "MAINTENANCE_FAILED")
    assert view.state == "MAINTENANCE_FAILED"
    data = page_data(client, sid, ADMIN)
    assert data["controls"]["retry"] is True
    assert data["controls"]["pause"] is False
    assert data["hosts"][0][1] == "FAILED"
    assert data["host_reasons"]["cmp-2"]
    assert data["session"]["reason"]


def test_questions_groups_and_notifications_per_project(client: TestClient, engine: Engine) -> None:
    hook = {"url": "http://alpha-manager.test/hook"}
    assert client.put(f"/v1/subscription/{ALPHA}", json=hook, headers=AS[ALPHA]).status_code == 200
    for project, group, members in (
        (ALPHA, "grp-alpha", (VM_A1, VM_A2)),
        (BETA, "grp-beta", (VM_B1,)),
    ):
        body = {"max_impacted_members": 1, "recovery_time": 0}
        put = client.put(f"/v1/instance_group/{group}", json=body, headers=AS[project])
        assert put.status_code == 200
        for vm in members:
            put = client.put(f"/v1/instance/{vm}", json={"group_id": group}, headers=AS[project])
            assert put.status_code == 200
    sid = create(client, hosts=["cmp-0", "cmp-1"], workflow="constrained")
    drive(engine, sid, lambda v: v.projects.get(ALPHA) is not None)

    admin = page_data(client, sid, ADMIN)
    (question,) = admin["questions"]
    assert question["project_id"] == ALPHA
    assert question["state"] == "MAINTENANCE"
    assert question["seconds_left"] > 0
    assert sorted(question["instance_ids"]) == [VM_A1, VM_A2]
    groups = {g["group_id"]: g for g in admin["groups"]}
    assert groups["grp-alpha"] == {
        "group_id": "grp-alpha",
        "project_id": ALPHA,
        "members": 2,
        "limit": 1,
        "impacted_now": 0,
        "peak": 0,
    }
    assert groups["grp-beta"]["project_id"] == BETA
    notices = admin["notifications"]
    assert set(notices) == {ALPHA, BETA}
    assert notices[ALPHA]["total"] == 1
    (sent,) = notices[ALPHA]["latest"]
    # Queued for the manager's URL; nothing sends it in this test.
    assert (sent["state"], sent["instances"], sent["delivery"]) == ("MAINTENANCE", 2, "pending")
    assert sent["reply_at"] == question["reply_at"]
    assert admin["projects"][ALPHA] == "MAINTENANCE"

    alpha = page_data(client, sid, AS[ALPHA])
    assert alpha["questions"] == admin["questions"]
    assert [g["group_id"] for g in alpha["groups"]] == ["grp-alpha"]
    assert set(alpha["notifications"]) == {ALPHA}
    assert alpha["controls"] is None
    assert_nothing_of(ALPHA, alpha)
    beta = page_data(client, sid, AS[BETA])
    assert beta["questions"] == []
    assert [g["group_id"] for g in beta["groups"]] == ["grp-beta"]
    assert set(beta["projects"]) == {BETA}
    assert_nothing_of(BETA, beta)
    listed = client.get("/dashboard/api/sessions", headers=AS[ALPHA]).json()["sessions"]
    assert listed[0]["awaiting_reply"] is True


def test_stuck_work_and_what_a_move_waits_for_go_to_its_project_only(
    client: TestClient, engine: Engine, fenix_cloud: SimulatedCloud
) -> None:
    fenix_cloud.stall_next_migration(VM_B1, 1500)
    sid = create(
        client,
        hosts=["cmp-0", "cmp-1"],
        timeouts={"migration": 600},
        controls={"escalation": {"migration": "wait_and_notify"}},
    )
    drive(engine, sid, lambda v: bool(v.stuck))
    engine.clock.advance(90)  # type: ignore[attr-defined]

    admin = page_data(client, sid, ADMIN)
    (stuck,) = admin["stuck"]
    assert (stuck["kind"], stuck["instance_id"], stuck["project_id"], stuck["host"]) == (
        "migration",
        VM_B1,
        BETA,
        "cmp-0",
    )
    assert stuck["policy"] == "wait_and_notify"
    assert "timed out after 600 s" in stuck["detail"]
    assert stuck["age_seconds"] >= 90
    blocked = [b for b in admin["blocked"] if b["instance_id"] == VM_B1]
    assert blocked
    assert blocked[0]["project_id"] == BETA

    beta = page_data(client, sid, AS[BETA])
    assert [s["instance_id"] for s in beta["stuck"]] == [VM_B1]
    assert [b["instance_id"] for b in beta["blocked"]] == [VM_B1]
    alpha = page_data(client, sid, AS[ALPHA])
    assert alpha["stuck"] == []
    assert alpha["blocked"] == []
    # Free text that may name others' instances is the admin's only.
    assert alpha["host_reasons"] == {}
    assert alpha["session"]["waiting"] is None
    assert alpha["session"]["reason"] is None
    assert_nothing_of(ALPHA, alpha)
    # The host lanes are the same picture for everyone.
    assert alpha["hosts"] == admin["hosts"]


class RefusingCloud(SimulatedCloud):
    """Refuses the first target asked for ``instance_id``, as Nova answers a
    requested host that breaks its placement rules (400 "No valid host")."""

    def __init__(self, instance_id: str) -> None:
        super().__init__()
        self.refuse = instance_id

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        if instance_id == self.refuse:
            self.refuse = ""
            raise TargetRefused(f"No valid host was found. ({target or 'scheduler'})")
        return super().start_move(instance_id, action, target, key)


def test_a_refused_target_shows_as_what_the_move_waits_for() -> None:
    cloud = RefusingCloud(VM_B1)
    for host in ("cmp-0", "cmp-1", "cmp-2"):
        cloud.add_host(host, vcpus=8)
    cloud.add_instance(VM_A1, project_id=ALPHA, host="cmp-0", vcpus=2)
    cloud.add_instance(VM_B1, project_id=BETA, host="cmp-0", vcpus=2)
    engine = Engine(clock=SimClock(), plugins=[cloud], load_entry_points=False)
    try:
        with TestClient(create_app(engine, TOKENS)) as client:
            sid = create(client, hosts=["cmp-0"])
            refusals: list[dict[str, Any]] = []

            def refused(_view: SessionView) -> bool:
                blocked = page_data(client, sid, ADMIN)["blocked"]
                refusals.extend(b for b in blocked if "refused" in b["detail"])
                return bool(refusals)

            drive(engine, sid, refused)
            (entry,) = refusals
            assert (entry["instance_id"], entry["project_id"], entry["host"]) == (
                VM_B1,
                BETA,
                "cmp-0",
            )
            assert entry["detail"].startswith("target cmp-")
            assert "refused" in entry["detail"]
            assert "No valid host was found" in entry["detail"]
            # The refusal is not an attempt: the move to another target
            # started at once, and both show until it ends.
            blocked = page_data(client, sid, AS[BETA])["blocked"]
            assert entry in blocked
            assert blocked == page_data(client, sid, ADMIN)["blocked"]
            assert page_data(client, sid, AS[ALPHA])["blocked"] == []
            view = drive(engine, sid, lambda v: v.state == "MAINTENANCE_DONE")
            assert view.state == "MAINTENANCE_DONE"  # another target took it
            assert page_data(client, sid, ADMIN)["blocked"] == []
    finally:
        engine.close()
