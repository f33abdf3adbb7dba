"""FakeApiServer: a FakeCluster served over real HTTP on a loopback port."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from fenix_core.clock import Clock
from fenix_core.testing.http_server import LoopbackServer

from .app import FakeApiApp
from .cluster import FakeCluster

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["FakeApiServer"]


class FakeApiServer:
    """``with FakeApiServer(clock=clock) as fake:`` build ``fake.cluster``, then
    point the real client at ``fake.url`` (``fake.api_client()``, or a
    kubeconfig from ``fake.write_kubeconfig(path)``).
    """

    def __init__(self, cluster: FakeCluster | None = None, *, clock: Clock | None = None) -> None:
        self.cluster = cluster if cluster is not None else FakeCluster(clock)
        self.app = FakeApiApp(self.cluster)
        self._server = LoopbackServer(self.app)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeApiServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    def api_client(self) -> ApiClient:
        """A client of the official library talking to this server."""
        from kubernetes.client import ApiClient, Configuration

        config = Configuration(host=self.url)
        return ApiClient(configuration=config)

    def write_kubeconfig(
        self, path: str | os.PathLike[str], *, context: str = "fake", token: str = "fake-token"
    ) -> Path:
        """Write a kubeconfig whose context ``context`` points at this server
        (as JSON, which is YAML too)."""
        target = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-admin", "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake-admin"}}],
            "current-context": context,
        }
        target.write_text(json.dumps(config, indent=2))
        return target
