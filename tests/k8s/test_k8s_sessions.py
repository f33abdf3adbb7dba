"""Maintenance sessions end to end through the real kubernetes client against
the fake apiserver: cordon order, budgets respected, faults, pod policies."""

from __future__ import annotations

import itertools

import pytest

from fenix_core import ActionSpec, SessionRequest
from fenix_core_k8s import CORDONED_ANNOTATION
from fenix_core_k8s.testing import NodeReboot

from .helpers import WORKERS, drive, shop_cluster

REBOOT = [ActionSpec("reboot", "host")]


def node_sequence(cluster, node):
    return [what for _, name, what in cluster.node_log if name == node]


def test_rolling_session_maintains_every_node_one_at_a_time_within_budgets(
    fake, k8s_engine, fenix_clock
):
    cluster = fake.cluster
    shop_cluster(cluster)
    daemon_pods = {n: [p["metadata"]["name"] for p in cluster.pods_on(n)] for n in WORKERS}
    reboot = NodeReboot(cluster, seconds=60)
    engine = k8s_engine(reboot)
    sid = engine.create_session(SessionRequest(hosts=list(WORKERS), actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert [(h.name, h.state) for h in view.hosts] == [(n, "MAINTAINED") for n in WORKERS]
    # Each node: cordoned, rebooted, Ready, uncordoned, and only then the next one.
    for node in WORKERS:
        assert node_sequence(cluster, node) == ["cordon", "reboot", "ready", "uncordon"]
    spans = []
    for node in WORKERS:
        times = [t for t, name, _ in cluster.node_log if name == node]
        spans.append((min(times), max(times)))
    spans.sort()
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))
    assert all(not cluster.cordoned(n) for n in WORKERS)
    assert not cluster.cordoned("cp-0")
    # Every granted eviction respected its budget; none was refused or needed.
    granted = [e for e in cluster.evictions if e.code == 201]
    assert {e.pod for e in granted} >= {"pg-0", "pg-1", "pg-2"}
    assert len(granted) == 7  # 4 web pods + 3 pg pods, each evicted once
    assert all(e.disruptions_allowed >= 1 for e in granted if e.pod_was_healthy)
    assert cluster.budget_violations() == []
    assert cluster.deletions == []  # never a plain delete
    # DaemonSet and mirror pods were never evicted and are still where they were.
    assert not [e for e in cluster.evictions if e.namespace == "kube-system"]
    for node, names in daemon_pods.items():
        left = {p["metadata"]["name"] for p in cluster.pods_on(node)}
        assert {n for n in names if n.startswith("kube-proxy")} <= left
    assert cluster.pod("kube-system", "etcd-cp-0") is not None
    # The StatefulSet's pods came back under their names, Ready, apart (anti-affinity).
    pg_nodes = [cluster.pod("db", f"pg-{i}")["spec"]["nodeName"] for i in range(3)]
    assert len(set(pg_nodes)) == 3
    # The node with nothing to move goes first, then the others in the order asked.
    assert [h for _, h in reboot.runs] == ["node-3", "node-0", "node-1", "node-2"]


def test_a_blocking_budget_makes_the_session_wait_and_shows_why(fake, k8s_engine, fenix_clock):
    cluster = fake.cluster
    shop_cluster(cluster)
    cluster.block_pdb("shop", "web", seconds=900)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(hosts=["node-0"], actions=REBOOT))
    seen: list[tuple[str, str]] = []

    def look() -> None:
        for project in ("shop", "db"):
            if project in engine.get_session(sid).projects:
                view = engine.project_view(sid, project)
                seen.extend((i.instance_id, i.detail) for i in view.instances if i.detail)

    view = drive(engine, fenix_clock, sid, look)

    assert view.state == "MAINTENANCE_DONE", view.reason
    waiting = [d for _, d in seen if "waiting for PodDisruptionBudget shop/web" in d]
    assert waiting, seen
    assert "needs" in waiting[0]
    assert "healthy pods" in waiting[0]
    refused = [e for e in cluster.evictions if e.code == 429]
    assert refused
    assert all(e.budget == "shop/web" for e in refused)
    # Retried with back-off, not hammered: a handful of attempts over 900 s.
    assert 5 <= len(refused) <= 30
    granted = [e for e in cluster.evictions if e.code == 201 and e.namespace == "shop"]
    first_granted = min(e.time for e in granted)
    assert (first_granted - refused[0].time).total_seconds() >= 900
    assert cluster.budget_violations() == []


def test_a_node_that_does_not_come_back_fails_the_session_and_spares_the_others(
    fake, k8s_engine, fenix_clock
):
    cluster = fake.cluster
    shop_cluster(cluster)
    cluster.node_stays_down("node-1")
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(
        SessionRequest(hosts=list(WORKERS), actions=REBOOT, timeouts={"host_up": 600})
    )

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_FAILED"
    assert "node-1" in view.reason
    assert view.host("node-1").state == "FAILED"
    assert cluster.cordoned("node-1")  # left out of service, as it is down
    maintained = [h.name for h in view.hosts if h.state == "MAINTAINED"]
    untouched = [n for n in WORKERS if n not in maintained and n != "node-1"]
    assert untouched
    for node in untouched:
        assert node_sequence(cluster, node) == []
        assert not cluster.cordoned(node)
    assert not [e for e in cluster.evictions if e.node in untouched]
    for node in maintained:
        assert node_sequence(cluster, node)[-1] == "uncordon"
    assert cluster.budget_violations() == []


def test_a_pod_without_controller_fails_the_move_by_default_and_is_left_alone(fake, k8s_engine):
    cluster = fake.cluster
    shop_cluster(cluster)
    cluster.add_pod("tools", "debug-shell", "node-3")
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(hosts=["node-3"], actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_FAILED"
    assert "tools/debug-shell" in view.reason
    assert "no controller" in view.reason
    assert "unmanaged_pods='evict'" in view.reason
    assert cluster.pod("tools", "debug-shell") is not None
    assert not [e for e in cluster.evictions if e.pod == "debug-shell"]
    assert cluster.deletions == []


def test_a_pod_without_controller_is_evicted_when_the_driver_is_told_to(fake, k8s_engine):
    cluster = fake.cluster
    shop_cluster(cluster)
    cluster.add_pod("tools", "debug-shell", "node-3")
    engine = k8s_engine(NodeReboot(cluster, seconds=60), unmanaged_pods="evict")
    sid = engine.create_session(SessionRequest(hosts=["node-3"], actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert cluster.pod("tools", "debug-shell") is None
    assert [e.code for e in cluster.evictions if e.pod == "debug-shell"] == [201]
    assert engine.project_view(sid, "tools").instances[0].state == "GONE"


def test_a_node_cordoned_before_the_session_stays_cordoned(fake, k8s_engine):
    cluster = fake.cluster
    shop_cluster(cluster)
    # pg's anti-affinity needs a node without a pg pod for each one evicted:
    # with node-1 cordoned for good and the control plane tainted, one more.
    cluster.add_node("node-4", cpu="4")
    cluster.nodes["node-1"]["spec"]["unschedulable"] = True  # an admin's kubectl cordon
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(hosts=["node-0", "node-1"], actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert cluster.cordoned("node-1")
    assert CORDONED_ANNOTATION not in cluster.nodes["node-1"]["metadata"]["annotations"]
    assert "uncordon" not in node_sequence(cluster, "node-1")
    assert cluster.pods_on("node-1") == [
        p for p in cluster.pods_on("node-1") if p["metadata"]["namespace"] == "kube-system"
    ]
    assert not cluster.cordoned("node-0")


@pytest.mark.no_cover
def test_two_budgets_on_one_pod_fail_the_session_and_a_retry_finishes_it(fake, k8s_engine):
    cluster = fake.cluster
    shop_cluster(cluster)
    cluster.add_pdb("shop", "everything", {}, max_unavailable=1)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(
        SessionRequest(hosts=["node-0"], actions=REBOOT, max_migration_retries=0)
    )

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_FAILED"
    assert "more than one PodDisruptionBudget" in view.reason
    assert "HTTP 500" in view.reason
    # The session cordoned the node before the first eviction; failing, it put
    # it back into service, as every host it disabled and is not maintaining.
    assert node_sequence(cluster, "node-0") == ["cordon", "uncordon"]
    assert not cluster.cordoned("node-0")
    assert CORDONED_ANNOTATION not in cluster.nodes["node-0"]["metadata"]["annotations"]

    del cluster.pdbs[("shop", "everything")]
    engine.update_session(sid, retry=True)
    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert not cluster.cordoned("node-0")
    assert CORDONED_ANNOTATION not in cluster.nodes["node-0"]["metadata"]["annotations"]
    assert cluster.budget_violations() == []


def test_constrained_session_maintains_nodes_in_parallel_within_the_budgets(fake, k8s_engine):
    cluster = fake.cluster
    nodes = [f"node-{i}" for i in range(6)]
    for name in nodes:
        cluster.add_node(name, cpu="8")
    cluster.add_replicaset("shop", "web", nodes)
    cluster.add_pdb("shop", "web", {"app": "web"}, max_unavailable=2)
    cluster.add_statefulset("db", "pg", nodes[:3], anti_affinity=True)
    cluster.add_pdb("db", "pg", {"app": "pg"}, min_available=2)
    cluster.add_daemonset("kube-system", "kube-proxy")
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(workflow="constrained", actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert [h.state for h in view.hosts] == ["MAINTAINED"] * 6
    assert cluster.budget_violations() == []
    # A refused eviction (a replacement pod is a new instance, outside the budget's
    # group taken at the start) only waited: every pod was evicted in the end.
    refused = {e.pod for e in cluster.evictions if e.code != 201}
    assert refused <= {e.pod for e in cluster.evictions if e.code == 201}
    cordoned, most = set(), 0
    for _, node, what in cluster.node_log:
        if what == "cordon":
            cordoned.add(node)
        elif what == "uncordon":
            cordoned.discard(node)
        most = max(most, len(cordoned))
    assert most >= 2  # several nodes at once, which the rolling workflow never does
    assert cordoned == set()
    pg_nodes = {cluster.pod("db", f"pg-{i}")["spec"]["nodeName"] for i in range(3)}
    assert len(pg_nodes) == 3
