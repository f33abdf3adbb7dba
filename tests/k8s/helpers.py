"""Helpers for the Kubernetes plug-in tests: a standard cluster and a way to
look at a session while it runs."""

from __future__ import annotations

from collections.abc import Callable

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.model import SessionView
from fenix_core_k8s.testing import FakeCluster

WORKERS = ("node-0", "node-1", "node-2", "node-3")


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
