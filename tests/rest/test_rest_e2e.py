"""End to end over real HTTP: the service on a loopback port, and two
application managers written the way Fenix-era managers are: small web apps
that receive the alarm POST, read ``instance_ids``, PUT their reply to
``reply_url``, and PUT instance and group constraints.

Real clock with short durations (0.05 s migrations and actions) and generous
reply windows (20 s), so that the only timing is the HTTP round trips.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from fenix_core import Engine
from fenix_core.rest import FenixService, TokenAuthenticator
from fenix_core.testing import SimulatedCloud, TimedAction
from fenix_core.testing.http_server import LoopbackServer

from .hooks import HookEndpoint, run_http_session

TOKENS = TokenAuthenticator(["adm"], {"tok-tacker": "tacker-p", "tok-fenix": "fenix-p"})


def _ids(value: Any) -> list[str]:
    """A list of ids: as sent (fenix shape) or as JSON text (event-alarm trait)."""
    return list(json.loads(value) if isinstance(value, str) else value)


class HttpManager:
    """A VNFM as Fenix-era ones were written.

    ``tacker=True``: subscribes to ``maintenance.scheduled`` in the event-alarm
    shape and answers one ``instance_action`` for ``instance_ids[0]``;
    otherwise plain Fenix payloads and an ``instance_actions`` map. On
    MAINTENANCE it first PUTs its instance and group constraints.
    """

    def __init__(self, api: str, project: str, token: str, *, tacker: bool) -> None:
        self.api, self.project, self.tacker = api, project, tacker
        self.headers = {"X-Auth-Token": token}
        self.states: list[str] = []
        self.done_instances: list[str] = []
        self.errors: list[str] = []
        self.server = LoopbackServer(self._app).start()

    def subscribe(self) -> None:
        body = (
            {
                "url": self.server.url + "/alarm",
                "event_type": "maintenance.scheduled",
                "body_shape": "event_alarm",
            }
            if self.tacker
            else {"url": self.server.url + "/alarm"}
        )
        self._call("PUT", f"{self.api}/v1/subscription/{self.project}", body)

    def _app(self, environ: Any, start_response: Any) -> Any:
        data = json.loads(Request(environ).get_data())
        if self.tacker:  # AODH event alarm: the payload is in the traits
            traits = data["reason_data"]["event"]["traits"]
            payload = {name: value for name, _type, value in traits}
        else:
            payload = data
        try:
            self._handle(payload)
        except Exception as exc:  # kept for the test; the POST itself succeeded
            self.errors.append(f"{payload.get('state')}: {exc}")
        return Response("", status=204)(environ, start_response)

    def _handle(self, payload: dict[str, Any]) -> None:
        state = payload["state"]
        self.states.append(state)
        reply_url = payload.get("reply_url")
        if state == "MAINTENANCE":
            self._set_constraints()
            self._call("PUT", reply_url, {"state": "ACK_MAINTENANCE"})
        elif state in ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE"):
            ids = _ids(payload["instance_ids"])  # the list itself, no GET needed
            if self.tacker:
                reply = {
                    "state": f"ACK_{state}",
                    "instance_ids": ids[:1],
                    "instance_action": "MIGRATE",
                }
            else:
                reply = {
                    "state": f"ACK_{state}",
                    "instance_actions": dict.fromkeys(ids, "LIVE_MIGRATE"),
                }
            self._call("PUT", reply_url, reply)
        elif state == "INSTANCE_ACTION_DONE":
            self.done_instances.extend(_ids(payload["instance_ids"]))
        elif state == "MAINTENANCE_COMPLETE":
            self._call("PUT", reply_url, {"state": "ACK_MAINTENANCE_COMPLETE"})

    def _set_constraints(self) -> None:
        group = f"{self.project}-group"
        self._call(
            "PUT",
            f"{self.api}/v1/instance_group/{group}",
            {"group_name": "app", "max_impacted_members": 1, "recovery_time": 0},
        )
        for instance in ("vm-t1", "vm-t2") if self.tacker else ("vm-f1", "vm-f2"):
            self._call(
                "PUT",
                f"{self.api}/v1/instance/{instance}",
                {"group_id": group, "migration_type": "MIGRATE" if self.tacker else "LIVE_MIGRATE"},
            )

    def _call(self, method: str, url: str, body: Any = None) -> Any:
        response = httpx.request(method, url, json=body, headers=self.headers, timeout=10)
        if response.status_code >= 300:
            raise AssertionError(f"{method} {url} -> {response.status_code} {response.text}")
        return response.json() if response.content else None

    def close(self) -> None:
        self.server.stop()


@contextmanager
def two_managers(api: str) -> Iterator[tuple[HttpManager, HttpManager]]:
    """A Tacker-style and a Fenix-style manager, subscribed; stopped after."""
    tacker = HttpManager(api, "tacker-p", "tok-tacker", tacker=True)
    fenix = HttpManager(api, "fenix-p", "tok-fenix", tacker=False)
    try:
        tacker.subscribe()
        fenix.subscribe()
        yield tacker, fenix
    finally:
        tacker.close()
        fenix.close()


@pytest.fixture
def service() -> Iterator[tuple[FenixService, SimulatedCloud, HookEndpoint]]:
    cloud = SimulatedCloud(migration_seconds=0.05, live_migration_seconds=0.05)
    for host in ("cmp-0", "cmp-1", "cmp-2"):
        cloud.add_host(host, vcpus=8)
    for index, host in enumerate(("cmp-0", "cmp-1"), start=1):
        cloud.add_instance(f"vm-t{index}", project_id="tacker-p", host=host, vcpus=2)
        cloud.add_instance(f"vm-f{index}", project_id="fenix-p", host=host, vcpus=2)
    engine = Engine(plugins=[cloud, TimedAction("upgrade", 0.05)], load_entry_points=False)
    admin_hook = HookEndpoint().up()
    svc = FenixService(
        engine,
        TOKENS,
        port=0,
        admin_webhooks={"maintenance.session": [admin_hook.url]},
        sender_options={"base_delay": 0.05, "max_delay": 0.5},
    )
    with svc:
        yield svc, cloud, admin_hook
    admin_hook.down()
    engine.close()


def test_http_managers_drive_a_session_to_done(
    service: tuple[FenixService, SimulatedCloud, HookEndpoint],
) -> None:
    svc, cloud, admin_hook = service
    api = svc.url
    assert httpx.get(f"{api}/healthz").json()["status"] == "ok"
    with two_managers(api) as (tacker, fenix):
        view = run_http_session(api, "adm", "default")
        assert tacker.errors == []
        assert fenix.errors == []
        assert view["state"] == "MAINTENANCE_DONE", view.get("reason")
        assert [h["state"] for h in view["hosts"]] == ["MAINTAINED"] * 3
        for manager in (tacker, fenix):
            assert manager.states[0] == "MAINTENANCE"
            assert manager.states[-1] == "MAINTENANCE_COMPLETE"
            assert {"PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE"} & set(manager.states)
        assert set(tacker.done_instances) == {"vm-t1", "vm-t2"}
        assert set(fenix.done_instances) == {"vm-f1", "vm-f2"}
        # The constraints the managers PUT are the engine's.
        assert svc.engine.get_group_constraints("fenix-p-group").max_impacted_members == 1
        assert svc.engine.get_instance_constraints("vm-t1").migration_type == "MIGRATE"
        # Every instance still runs, and the cloud moved them.
        assert all(cloud.host_of(i) for i in ("vm-t1", "vm-t2", "vm-f1", "vm-f2"))
        kinds = {e.kind for e in cloud.events}
        assert "migration_done" in kinds
        # The admin's session webhook saw the whole session, in order.
        states = [b["state"] for b in _wait_last(admin_hook, "MAINTENANCE_DONE")]
        assert states[0] == "MAINTENANCE"
        assert states[-1] == "MAINTENANCE_DONE"
        seqs = [b["seq"] for b in admin_hook.bodies()]
        assert seqs == sorted(seqs)


def _wait_last(hook: HookEndpoint, state: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bodies = hook.bodies()
        if bodies and bodies[-1]["state"] == state:
            return bodies
        threading.Event().wait(0.02)
    return hook.bodies()


@pytest.mark.no_cover
def test_admin_reads_while_a_session_runs_fail_nothing(
    service: tuple[FenixService, SimulatedCloud, HookEndpoint], caplog: pytest.LogCaptureFixture
) -> None:
    """FenixService over an Engine on the default in-memory database, clients polling
    the admin lists and the metrics all along: creating the session and
    running it break nothing. Before every engine read took the engine
    lock, a list read from another thread rolled back the session's insert
    under way (500, a foreign key error) or a webhook's record."""
    caplog.set_level(logging.ERROR)
    svc, _cloud, _hook = service
    api = svc.url
    stop = threading.Event()
    failed: list[str] = []

    def poll(paths: list[str]) -> None:
        with httpx.Client(headers={"X-Auth-Token": "adm"}, timeout=10) as client:
            while not stop.is_set():
                for path in paths:
                    try:
                        response = client.get(api + path)
                    except httpx.HTTPError as exc:
                        failed.append(f"GET {path}: {exc!r}")
                        continue
                    if response.status_code >= 500:
                        failed.append(f"GET {path}: {response.status_code}")

    pollers = [
        threading.Thread(target=poll, args=(paths,))
        for paths in (
            ["/v1/maintenance"],
            ["/v1/subscription", "/v1/instance", "/v1/instance_group"],
            ["/metrics", "/healthz"],
        )
    ]
    for poller in pollers:
        poller.start()
    with two_managers(api) as (tacker, fenix):
        try:
            view = run_http_session(api, "adm", "default")
        finally:
            stop.set()
            for poller in pollers:
                poller.join()
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert failed == []
    assert logged == []
    assert tacker.errors == fenix.errors == []
    assert view["state"] == "MAINTENANCE_DONE", view.get("reason")
