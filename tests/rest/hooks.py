"""A webhook endpoint for the tests: records every POST; can be down (not
listening), answer errors for a while, or refuse chosen deliveries."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HookEndpoint:
    """``HookEndpoint(port)``; ``up()`` starts listening, ``down()`` stops.

    ``answer(body, headers) -> status`` decides each answer (default 200).
    ``received`` lists ``(event type header, body)`` of the POSTs answered 2xx;
    ``deliveries`` the ``X-Fenix-Delivery`` header of each, in the same order.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.deliveries: list[str] = []
        self.attempts = 0
        self.answer: Callable[[dict[str, Any], Any], int] = lambda body, headers: 200
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _app(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        body = json.loads(request.get_data())
        with self._lock:
            self.attempts += 1
            status = self.answer(body, request.headers)
            if 200 <= status < 300:
                self.received.append((request.headers.get("X-Fenix-Event-Type", ""), body))
                self.deliveries.append(request.headers.get("X-Fenix-Delivery", ""))
        return Response("{}", status=status, mimetype="application/json")(environ, start_response)

    def up(self) -> HookEndpoint:
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [body for _, body in self.received]

    def distinct(self) -> list[dict[str, Any]]:
        """The bodies as a receiver that de-duplicates on ``X-Fenix-Delivery``
        takes them (docs/rest.md: delivery is at least once; a POST whose 2xx
        answer came after the sender's timeout, on a loaded machine, is sent
        again): the first of each, in arrival order."""
        with self._lock:
            firsts = {}
            for delivery, (_, body) in zip(self.deliveries, self.received, strict=True):
                firsts.setdefault(delivery, body)
            return list(firsts.values())

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The distinct deliveries received, once there are ``count`` (or the
        timeout passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.distinct()) < count:
            time.sleep(0.01)
        return self.distinct()


#: Generous reply windows for sessions driven by HTTP managers on a real clock.
REPLY_WINDOWS = dict.fromkeys(
    (
        "MAINTENANCE",
        "SCALE_IN",
        "PREPARE_MAINTENANCE",
        "PLANNED_MAINTENANCE",
        "MAINTENANCE_COMPLETE",
    ),
    20.0,
)


def run_http_session(
    api: str, admin_token: str, workflow: str, timeout: float = 30.0
) -> dict[str, Any]:
    """POST a session over every host (one ``upgrade`` host action) and poll
    it until it ends; its last view."""
    import httpx

    admin = {"X-Auth-Token": admin_token}
    created = httpx.post(
        f"{api}/v1/maintenance",
        json={
            "hosts": [],
            "state": "MAINTENANCE",
            "workflow": workflow,
            "metadata": {},
            "actions": [{"plugin": "upgrade", "type": "host"}],
            "reply_windows": REPLY_WINDOWS,
        },
        headers=admin,
    )
    assert created.status_code == 200, created.text
    session_id = created.json()["session_id"]
    view: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = httpx.get(f"{api}/v1/maintenance/{session_id}", headers=admin).json()
        if view["state"] in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED"):
            break
        time.sleep(0.05)
    return view
