"""Run a WSGI application on a free loopback port in a background thread.

The fake clouds (``fenix_core_openstack.testing``, ``fenix_core_k8s.testing``)
use this to answer the real client libraries over real HTTP. It needs
werkzeug, which the ``openstack``, ``k8s`` and ``dev`` extras install.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """``with LoopbackServer(app) as server: ... server.url ...``

    Binds 127.0.0.1 on a port the OS picks (so parallel tests never collide),
    serves each request in its own thread, and stops on exit.
    """

    def __init__(self, app: WSGIApplication, *, host: str = "127.0.0.1") -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class _Quiet(WSGIRequestHandler):
            def log_request(self, *_args: Any, **_kwargs: Any) -> None:
                pass  # a fake serves thousands of polls; their access log is noise

        self._server: Any = make_server(host, 0, app, threaded=True, request_handler=_Quiet)
        self.host = host
        self.port: int = self._server.server_port
        # A short poll interval: stop() waits for it, and tests stop a server each.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"loopback-{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
