"""End to end over real HTTP with managers that behave as the ones written
for OpenStack Fenix: the OPNFV Doctor VNFM (the client of Fenix's ETSI
workflow) and Tacker's Fenix plug-in. Written from what those do, unchanged:

* both receive AODH event alarms (``maintenance.scheduled``) and decode the
  traits their own way (Doctor: YAML of every text holding ``[`` or ``{``;
  Tacker: a Python literal of a text trait that starts with ``[`` or ``{``);
* for MAINTENANCE Doctor GETs the ``instance_ids`` URL; for
  PREPARE/PLANNED_MAINTENANCE both read ``instance_ids[0]`` (Tacker first
  checks that it is a list) and answer ``instance_action`` WITHOUT
  ``instance_ids``; Doctor switches its HA pair over when the instance asked
  about is the active one;
* both answer 500 to a state they do not know (ADMIN_ACTION_DONE);
* both PUT their constraints with Fenix's field names (Doctor's
  ``migration_type`` is ``"MIGRATION"``) and accept only 200 or 204;
* Tacker sends ``instance_ids`` with MAINTENANCE and MAINTENANCE_COMPLETE
  replies, acknowledges INSTANCE_ACTION_DONE too, and retries a reply PUT
  until it gets 200.

The session runs the ``vnf`` (constrained) workflow through ``fenix-api``
to MAINTENANCE_DONE, and the HA instance is never moved while active.
"""

from __future__ import annotations

import ast
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import yaml
from werkzeug.wrappers import Request, Response

from fenix_core import Engine
from fenix_core.rest import FenixService, TokenAuthenticator
from fenix_core.testing import SimulatedCloud, TimedAction, violations
from fenix_core.testing.http_server import LoopbackServer
from fenix_core.testing.invariants import constraint_violations

from .hooks import run_http_session

TOKENS = TokenAuthenticator(["adm"], {"tok-doctor": "doctor-p", "tok-tacker": "tacker-p"})
#: The states Tacker's plug-in validates (tacker.plugins.common.constants).
TACKER_STATES = (
    "MAINTENANCE",
    "SCALE_IN",
    "MAINTENANCE_COMPLETE",
    "PREPARE_MAINTENANCE",
    "PLANNED_MAINTENANCE",
    "INSTANCE_ACTION_DONE",
)


class AlarmManager:
    """The common part: a web app on a loopback port receiving event alarms."""

    def __init__(self, api: str, project: str, token: str) -> None:
        self.api, self.project = api, project
        self.headers = {"X-Auth-Token": token, "Content-Type": "application/json"}
        self.received: list[dict[str, Any]] = []
        self.failed_states: list[str] = []  # answered 500
        self.reply_statuses: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self.server = LoopbackServer(self._app).start()

    def subscribe(self) -> None:
        body = {
            "url": self.server.url + "/maintenance",
            "event_type": "maintenance.scheduled",
            "body_shape": "event_alarm",
        }
        response = httpx.put(
            f"{self.api}/v1/subscription/{self.project}", json=body, headers=self.headers
        )
        assert response.status_code == 200, response.text

    def _app(self, environ: Any, start_response: Any) -> Any:
        data = json.loads(Request(environ).get_data())
        payload = self.decode(data["reason_data"]["event"]["traits"])
        with self._lock:
            self.received.append(payload)
        try:
            self.handle(payload)
        except Exception as exc:  # the web framework's answer to a raise
            with self._lock:
                self.failed_states.append(str(payload.get("state")))
            return Response(str(exc), status=500)(environ, start_response)
        return Response("OK", status=200)(environ, start_response)

    def decode(self, traits: list[list[Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def handle(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def put_constraints(self, path: str, body: dict[str, Any]) -> None:
        response = httpx.put(f"{self.api}{path}", content=json.dumps(body), headers=self.headers)
        if response.status_code not in (200, 204):
            raise AssertionError(f"PUT {path}: {response.status_code} {response.text}")

    def put_reply(self, url: str, reply: dict[str, Any]) -> int:
        status = httpx.put(url, content=json.dumps(reply), headers=self.headers).status_code
        with self._lock:
            self.reply_statuses.append((reply["state"], status))
        return status

    def close(self) -> None:
        self.server.stop()


class DoctorVnfm(AlarmManager):
    """An HA pair (active/standby, anti-affinity) and non-HA instances."""

    def __init__(self, api: str, cloud: SimulatedCloud) -> None:
        super().__init__(api, "doctor-p", "tok-doctor")
        self.cloud = cloud
        self.ha = ["ha-0", "ha-1"]
        self.nonha = ["app-0", "app-1"]
        self.active = "ha-0"
        # (time on the cloud's clock, the instance that became active)
        self.switch_overs: list[tuple[datetime, str]] = []

    def set_constraints(self) -> None:
        groups = {
            "ha-group": {"anti_affinity_group": True, "max_instances_per_host": 1},
            "nonha-group": {"anti_affinity_group": False, "max_instances_per_host": 0},
        }
        for group_id, rules in groups.items():
            self.put_constraints(
                f"/v1/instance_group/{group_id}",
                {
                    "group_id": group_id,
                    "project_id": self.project,
                    "group_name": f"doctor_{group_id}",
                    "max_impacted_members": 1,
                    "recovery_time": 0,
                    "resource_mitigation": True,
                    **rules,
                },
            )
        for instance_id in self.ha + self.nonha:
            self.put_constraints(
                f"/v1/instance/{instance_id}",
                {
                    "instance_id": instance_id,
                    "project_id": self.project,
                    "group_id": "ha-group" if instance_id in self.ha else "nonha-group",
                    "instance_name": instance_id,
                    "max_interruption_time": 120,
                    "migration_type": "MIGRATION",
                    "resource_mitigation": True,
                    "lead_time": 0,
                },
            )

    def decode(self, traits: list[list[Any]]) -> dict[str, Any]:
        def value(text: str) -> Any:
            return yaml.safe_load(text) if "[" in text or "{" in text else text

        return {str(name): value(str(raw)) for name, _type, raw in traits}

    def handle(self, payload: dict[str, Any]) -> None:
        state = payload["state"]
        reply: dict[str, Any] = {}
        if state == "MAINTENANCE":
            got = httpx.get(payload["instance_ids"], headers=self.headers)
            if got.status_code != 200:
                raise RuntimeError(got.text)
            reply["instance_ids"] = got.json()["instance_ids"]
        elif state in ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE"):
            if "MIGRATE" not in payload["allowed_actions"]:
                raise RuntimeError("MIGRATE not supported")
            if payload["instance_ids"][0] == self.active:
                self.switch_over()
            reply["instance_action"] = "MIGRATE"
        elif state == "MAINTENANCE_COMPLETE":
            pass
        elif state == "INSTANCE_ACTION_DONE":
            return
        else:
            raise RuntimeError(f"VNFM received event with unknown state {state}")
        reply["session_id"] = payload["session_id"]
        reply["state"] = f"ACK_{state}"
        self.put_reply(payload["reply_url"], reply)

    def switch_over(self) -> None:
        self.active = next(i for i in self.ha if i != self.active)
        self.switch_overs.append((self.cloud.clock.now(), self.active))

    def active_at(self, when: datetime) -> str:
        active = "ha-0"
        for at, became in self.switch_overs:
            if at <= when:
                active = became
        return active


class TackerPlugin(AlarmManager):
    """A VNF whose instances form one non-HA group, migrated with MIGRATE."""

    def __init__(self, api: str) -> None:
        super().__init__(api, "tacker-p", "tok-tacker")
        self.instances = ["tk-0", "tk-1"]
        self.retries = 5
        self._workers: list[threading.Thread] = []

    def set_constraints(self) -> None:
        self.put_constraints(
            "/v1/instance_group/tacker-group",
            {
                "group_id": "tacker-group",
                "project_id": self.project,
                "group_name": "tacker_nonha_app_group",
                "anti_affinity_group": False,
                "max_instances_per_host": 0,
                "resource_mitigation": True,
                "max_impacted_members": 1,
                "recovery_time": 0,
            },
        )
        for instance_id in self.instances:
            self.put_constraints(
                f"/v1/instance/{instance_id}",
                {
                    "project_id": self.project,
                    "instance_id": instance_id,
                    "instance_name": instance_id,
                    "migration_type": "MIGRATE",
                    "resource_mitigation": True,
                    "max_interruption_time": 120,
                    "lead_time": 0,
                    "group_id": "tacker-group",
                },
            )

    def decode(self, traits: list[list[Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for key, kind, raw in traits:
            literal = kind == 1 and raw and raw[0] in "[{"
            body[key] = ast.literal_eval(raw) if literal else raw
        return body

    def handle(self, payload: dict[str, Any]) -> None:
        required = ("instance_ids", "session_id", "state", "reply_url")
        if not set(required) <= set(payload) or payload["state"] not in TACKER_STATES:
            raise RuntimeError("InvalidMaintenanceParameter")
        state = payload["state"]
        data: dict[str, Any] = {}
        if state in ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE"):
            for key in ("allowed_actions", "instance_ids"):
                if not isinstance(payload[key], list):
                    raise RuntimeError("InvalidMaintenanceParameter")
            if payload["instance_ids"][0] not in self.instances:
                raise RuntimeError("InvalidMaintenanceParameter")
            data["instance_action"] = "MIGRATE"
        elif state in ("MAINTENANCE", "SCALE_IN", "MAINTENANCE_COMPLETE"):
            data["instance_ids"] = list(self.instances)
        data["session_id"] = payload["session_id"]
        data["state"] = f"ACK_{state}"
        # The plug-in replies from a green thread, retrying until it gets 200.
        worker = threading.Thread(target=self._reply, args=(payload["reply_url"], data))
        self._workers.append(worker)
        worker.start()

    def _reply(self, url: str, data: dict[str, Any]) -> None:
        for _ in range(self.retries):
            if self.put_reply(url, data) == 200:
                return
            time.sleep(0.05)

    def close(self) -> None:
        for worker in self._workers:
            worker.join(timeout=10)
        super().close()


@pytest.fixture
def service() -> Iterator[tuple[FenixService, SimulatedCloud]]:
    cloud = SimulatedCloud(migration_seconds=0.05, live_migration_seconds=0.05)
    layout = {
        # A question about both of Doctor's instances on cmp-0 would name app-0
        # first, where the VNFM does not look for its active HA instance.
        "cmp-0": [("ha-0", "doctor-p", 2), ("app-0", "doctor-p", 1), ("tk-0", "tacker-p", 1)],
        "cmp-1": [("ha-1", "doctor-p", 2), ("app-1", "doctor-p", 1)],
        "cmp-2": [("tk-1", "tacker-p", 1)],
        "cmp-3": [],
    }
    for host, instances in layout.items():
        cloud.add_host(host, vcpus=6)
        for instance_id, project_id, vcpus in instances:
            cloud.add_instance(instance_id, project_id=project_id, host=host, vcpus=vcpus)
    engine = Engine(plugins=[cloud, TimedAction("upgrade", 0.05)], load_entry_points=False)
    svc = FenixService(
        engine, TOKENS, port=0, sender_options={"base_delay": 0.05, "max_delay": 0.5}
    )
    with svc:
        yield svc, cloud
    engine.close()


def test_doctor_and_tacker_drive_a_vnf_session_to_done(
    service: tuple[FenixService, SimulatedCloud],
) -> None:
    svc, cloud = service
    api = svc.url
    doctor = DoctorVnfm(api, cloud)
    tacker = TackerPlugin(api)
    try:
        for manager in (doctor, tacker):
            manager.subscribe()
            manager.set_constraints()
        view = run_http_session(api, "adm", "vnf", timeout=60)
        assert view["state"] == "MAINTENANCE_DONE", view.get("reason")
        tacker.close()  # its reply threads are done
    finally:
        doctor.close()
        tacker.close()

    assert [h["state"] for h in view["hosts"]] == ["MAINTAINED"] * 4
    assert violations(cloud) == []
    assert constraint_violations(cloud, svc.engine.constraints()) == []
    # Doctor's MIGRATION was stored as MIGRATE, and the engine migrated cold.
    assert svc.engine.get_instance_constraints("ha-0").migration_type == "MIGRATE"
    moved = [e for e in cloud.events if e.kind == "migration_started"]
    assert {e.instance_id for e in moved} >= {"ha-0", "ha-1", "app-0", "tk-0", "tk-1"}

    # The HA pair: switched over by the VNFM before each move of the active,
    # so an HA instance never started moving while it was the active one.
    ha_moves = [e for e in moved if e.instance_id in doctor.ha]
    assert {e.instance_id for e in ha_moves} == {"ha-0", "ha-1"}
    # At least the active one's move needed a switch-over (each HA instance
    # moves once since issue 21: the standby's move may need none).
    assert len(doctor.switch_overs) >= 1
    for event in ha_moves:
        assert doctor.active_at(event.time) != event.instance_id, (event, doctor.switch_overs)
    # ha-0, active at first, moved only after the first switch-over.
    first_switch = doctor.switch_overs[0][0]
    assert first_switch < next(e.time for e in ha_moves if e.instance_id == "ha-0")

    # What each manager was sent and answered.
    for manager in (doctor, tacker):
        planned = [p for p in manager.received if p["state"] == "PLANNED_MAINTENANCE"]
        assert planned
        assert all(isinstance(p["instance_ids"], list) for p in planned)
        assert [len(p["instance_ids"]) for p in planned] == [1] * len(planned)
        done = [p for p in manager.received if p["state"] == "INSTANCE_ACTION_DONE"]
        assert done
        assert all(isinstance(p["instance_ids"], list) for p in done)
        assert [len(p["instance_ids"]) for p in done] == [1] * len(done)
        # Every reply was accepted the first time (Tacker's retries were not needed).
        assert [status for _, status in manager.reply_statuses] == [200] * len(
            manager.reply_statuses
        )
        assert "ACK_PLANNED_MAINTENANCE" in {state for state, _ in manager.reply_statuses}
        # They answered 500 to ADMIN_ACTION_DONE only; those POSTs were dropped.
        assert set(manager.failed_states) == {"ADMIN_ACTION_DONE"}
    assert ("ACK_INSTANCE_ACTION_DONE", 200) in tacker.reply_statuses
    deliveries = svc.outbox.deliveries()
    admin_done = [d for d in deliveries if _state_of(d.body) == "ADMIN_ACTION_DONE"]
    assert admin_done
    assert {d.state for d in admin_done} == {"dropped"}
    assert {d.state for d in deliveries} == {"delivered", "dropped"}


def _state_of(body: Any) -> str | None:
    traits = body["reason_data"]["event"]["traits"]
    return next((value for name, _type, value in traits if name == "state"), None)
