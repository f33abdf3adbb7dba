"""The whole service in one object: the engine's loop, the webhook sender
and the HTTP server, each in a background thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import uvicorn

from ..engine import Engine
from .app import DEFAULT_MAX_BODY, create_app
from .auth import Authenticator
from .sender import WebhookSender
from .webhooks import WebhookOutbox

__all__ = ["FenixService"]

log = logging.getLogger("fenix_core.rest")


class FenixService:
    """Serve ``engine`` over HTTP on ``host:port`` (port 0: any free port).

    ``public_url`` is how managers reach this API (the links in
    notifications); by default ``http://host:port`` once bound.
    ``admin_webhooks`` maps ``"maintenance.session"`` / ``"maintenance.host"``
    to URLs. ``sender_options`` go to :class:`WebhookSender`.
    """

    def __init__(
        self,
        engine: Engine,
        authenticator: Authenticator,
        *,
        host: str = "127.0.0.1",
        port: int = 12347,
        public_url: str | None = None,
        admin_webhooks: Mapping[str, Sequence[str]] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        sender_options: Mapping[str, Any] | None = None,
        metrics_token: bool = True,
    ) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self._public_url = public_url
        self.outbox = WebhookOutbox(
            engine, public_url=public_url or f"http://{host}:{port}", admin_urls=admin_webhooks
        )
        self.sender = WebhookSender(self.outbox, **dict(sender_options or {}))
        self.app = create_app(
            engine,
            authenticator,
            outbox=self.outbox,
            max_body=max_body,
            health=self._health,
            metrics_token=metrics_token,
        )
        config = uvicorn.Config(
            self.app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._threads: dict[str, threading.Thread] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _health(self) -> dict[str, Any]:
        loop = self._threads.get("engine")
        parts = {
            "engine_loop": loop is not None and loop.is_alive(),
            "webhook_sender": self.sender.alive,
        }
        return {"status": "ok" if all(parts.values()) else "degraded", **parts}

    def start(self) -> FenixService:
        """Start the loop, the sender and the server; return once it listens."""
        self.outbox.connect()
        self.sender.start()
        self._spawn("engine", self.engine.run_forever)
        self._spawn("http", self._server.run)
        while not self._server.started:
            if not self._threads["http"].is_alive():
                self.stop()
                raise RuntimeError(f"the HTTP server could not start on {self.host}:{self.port}")
            threading.Event().wait(0.01)
        if self.port == 0:
            self.port = self._server.servers[0].sockets[0].getsockname()[1]
        if self._public_url is None:
            self.outbox.public_url = self.url
        log.info("fenix-api listening on %s", self.url)
        return self

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=f"fenix-{name}", daemon=True)
        self._threads[name] = thread
        thread.start()

    def stop(self) -> None:
        """Stop serving, then the engine's loop, then the sender."""
        self._server.should_exit = True
        self.engine.stop()
        for thread in self._threads.values():
            thread.join(timeout=10)
        self.sender.stop()
        self.outbox.disconnect()

    def __enter__(self) -> FenixService:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
