"""A fake Kubernetes apiserver for testing fenix-core workflows on Kubernetes.

It answers, over real HTTP on a free loopback port, the requests the official
``kubernetes`` client sends for what fenix-core does (nodes, pods, the
policy/v1 eviction subresource with PodDisruptionBudget accounting, events),
runs a small controller loop (ReplicaSet and StatefulSet pods come back after
an eviction) on the clock you give it, and logs every eviction with the state
of its budget::

    from fenix_core.testing import SimClock
    from fenix_core_k8s import KubernetesCloud
    from fenix_core_k8s.testing import FakeApiServer, NodeReboot

    clock = SimClock()
    with FakeApiServer(clock=clock) as fake:
        cluster = fake.cluster
        for name in ("node-0", "node-1", "node-2"):
            cluster.add_node(name, cpu="4")
        cluster.add_replicaset("shop", "web", ["node-0", "node-1"])
        cluster.add_pdb("shop", "web", {"app": "web"}, max_unavailable=1)
        engine = Engine(clock=clock, plugins=[KubernetesCloud(api_client=fake.api_client()),
                                              NodeReboot(cluster)])
        ...
        assert cluster.budget_violations() == []

See docs/kubernetes.md ("Testing your own workflows").
"""

from __future__ import annotations

from .actions import NodeReboot
from .cluster import ApiError, EvictionRecord, FakeCluster
from .server import FakeApiServer

__all__ = ["ApiError", "EvictionRecord", "FakeApiServer", "FakeCluster", "NodeReboot"]
