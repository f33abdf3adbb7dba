"""Fixtures for the Kubernetes plug-in tests: a fake apiserver on the test's
SimClock, engines with a KubernetesCloud pointed at it, and a standard cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("kubernetes")

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.model import SessionView
from fenix_core_k8s import KubernetesCloud
from fenix_core_k8s.testing import FakeApiServer, FakeCluster

WORKERS = ("node-0", "node-1", "node-2", "node-3")


@pytest.fixture
def fake(fenix_clock: SimClock) -> Iterator[FakeApiServer]:
    with FakeApiServer(clock=fenix_clock) as server:
        yield server


@pytest.fixture
def k8s_engine(fake: FakeApiServer, fenix_clock: SimClock) -> Iterator[Callable[..., Engine]]:
    """make(*plugins, **KubernetesCloud options) -> an Engine on the fake cluster."""
    engines: list[Engine] = []

    def make(*plugins: object, **options: Any) -> Engine:
        cloud = KubernetesCloud(api_client=fake.api_client(), **options)
        engine = Engine(clock=fenix_clock, plugins=[cloud, *plugins], load_entry_points=False)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def shop_cluster(cluster: FakeCluster) -> None:
    """A control-plane node and four workers; a Deployment-like ReplicaSet with
    a maxUnavailable budget, a StatefulSet with a minAvailable budget, a
    DaemonSet on every node and a static pod's mirror on the control plane."""
    cluster.add_node("cp-0", control_plane=True)
    for name in WORKERS:
        cluster.add_node(name, cpu="4")
    cluster.add_replicaset("shop", "web", ["node-0", "node-0", "node-1", "node-2"])
    cluster.add_pdb("shop", "web", {"app": "web"}, max_unavailable=1)
    cluster.add_statefulset("db", "pg", ["node-0", "node-1", "node-2"], anti_affinity=True)
    cluster.add_pdb("db", "pg", {"app": "pg"}, min_available="60%")
    cluster.add_daemonset("kube-system", "kube-proxy")
    cluster.add_pod("kube-system", "etcd-cp-0", "cp-0", mirror=True)


def drive(
    engine: Engine, clock: SimClock, sid: str, each: Callable[[], None] | None = None
) -> SessionView:
    """run_until_done, calling ``each`` whenever the engine is idle, before the
    simulated clock moves on (to look at the session while it runs)."""
    while True:
        engine.run_until_idle()
        if each is not None:
            each()
        view = engine.get_session(sid)
        wake = engine.next_wake()
        if view.state in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED") and wake is None:
            return view
        assert wake is not None, f"session {view.state} waits for nothing"
        clock.advance_to(max(clock.now(), wake))
