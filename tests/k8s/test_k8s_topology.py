"""Node labels as topology through the official client and the fake
apiserver: a constrained session keeps nodes of one zone
(topology.kubernetes.io/zone) in maintenance at a time."""

from __future__ import annotations

from fenix_core import ActionSpec, SessionRequest
from fenix_core_k8s import KubernetesDriver
from fenix_core_k8s.testing import NodeReboot

ZONE = "topology.kubernetes.io/zone"
NODES = {"node-0": "eu-1a", "node-1": "eu-1b", "node-2": "eu-1a", "node-3": "eu-1b"}


def _zoned(cluster) -> None:
    cluster.add_node("cp-0", control_plane=True, labels={ZONE: "eu-1a"})
    for name, zone in NODES.items():
        cluster.add_node(name, cpu="4", labels={ZONE: zone, "rack": f"r-{name[-1]}"})
    cluster.add_replicaset("shop", "web", list(NODES))


def test_hosts_carry_every_node_label(fake, fenix_clock) -> None:
    _zoned(fake.cluster)
    driver = KubernetesDriver(fake.api_client(), clock=fenix_clock)
    labels = {h.name: h.labels for h in driver.list_hosts()}
    assert labels["node-1"][ZONE] == "eu-1b"
    assert labels["node-1"]["rack"] == "r-1"
    assert labels["node-1"]["kubernetes.io/hostname"] == "node-1"


def test_a_session_maintains_one_zone_at_a_time(fake, k8s_engine) -> None:
    cluster = fake.cluster
    _zoned(cluster)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(
        SessionRequest(
            hosts=list(NODES),
            workflow="constrained",
            actions=[ActionSpec("reboot", "host")],
            controls={"max_topology_in_maintenance": [{"key": ZONE, "max": 1}]},
        )
    )
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    spans = {}
    for node in NODES:
        times = [t for t, name, _ in cluster.node_log if name == node]
        spans[node] = (min(times), max(times))
    for a, (a0, a1) in spans.items():
        for b, (b0, b1) in spans.items():
            if a0 < b1 and b0 < a1:
                assert NODES[a] == NODES[b], spans
