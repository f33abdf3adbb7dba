"""Draining as kubectl drain and the node-maintenance operator do, end to end
through the official client against the fake apiserver: control-plane nodes
drained one at a time behind an etcd quorum guard, pods with emptyDir data
held back unless the admin opts in, and every node cordoned before anything
leaves it."""

from __future__ import annotations

import itertools
from datetime import timedelta

from fenix_core import ActionSpec, SessionRequest
from fenix_core.testing import ScriptedManager
from fenix_core_k8s.testing import FakeCluster, NodeReboot

from .helpers import drive

REBOOT = [ActionSpec("reboot", "host")]
CONTROL_PLANE = ("cp-0", "cp-1", "cp-2")
CACHE = [{"name": "cache", "emptyDir": {}}]


def node_sequence(cluster: FakeCluster, node: str) -> list[str]:
    return [what for _, name, what in cluster.node_log if name == node]


def ha_cluster(cluster: FakeCluster) -> None:
    """Three untainted control-plane nodes with kubeadm's stacked etcd, two
    workers; a ReplicaSet with a pod on a control-plane node, under a budget."""
    for name in CONTROL_PLANE:
        cluster.add_node(name, cpu="4", control_plane=True)
        cluster.add_etcd_member(name)
    for name in ("node-0", "node-1"):
        cluster.add_node(name, cpu="8")
    cluster.add_daemonset("kube-system", "kube-proxy")
    cluster.add_replicaset("shop", "web", ["cp-0", "node-0", "node-1"])
    cluster.add_pdb("shop", "web", {"app": "web"}, max_unavailable=1)


def first(cluster: FakeCluster, node: str, what: str):
    return min(t for t, name, w in cluster.node_log if name == node and w == what)


# --------------------------------------------------------------------------- control plane


def test_a_workload_pod_on_a_control_plane_node_is_evicted_within_its_budget_before_the_reboot(
    fake, k8s_engine
):
    cluster = fake.cluster
    ha_cluster(cluster)
    web_on_cp = [p["metadata"]["name"] for p in cluster.pods_on("cp-0") if "web" in str(p)]
    assert len(web_on_cp) == 1
    reboot = NodeReboot(cluster, seconds=60)
    engine = k8s_engine(reboot)
    sid = engine.create_session(SessionRequest(hosts=list(CONTROL_PLANE), actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    # The pod was evicted (granted by its budget), before cp-0 went down, and
    # its replacement runs elsewhere.
    evicted = [e for e in cluster.evictions if e.pod == web_on_cp[0]]
    assert [e.code for e in evicted] == [201]
    assert evicted[0].disruptions_allowed >= 1
    assert evicted[0].time < first(cluster, "cp-0", "reboot")
    assert cluster.pod("shop", web_on_cp[0]) is None
    assert all(
        p["spec"]["nodeName"] != "cp-0" for (ns, _), p in cluster.pods.items() if ns == "shop"
    )
    assert cluster.budget_violations() == []
    # Drained like any node: cordoned first, uncordoned once Ready again. The
    # others had nothing to move: maintained in place (a NotReady node gets the
    # not-ready NoSchedule taint, so nothing is scheduled there meanwhile).
    assert node_sequence(cluster, "cp-0") == ["cordon", "reboot", "ready", "uncordon"]
    for node in ("cp-1", "cp-2"):
        assert node_sequence(cluster, node) == ["reboot", "ready"]
    # One at a time: the next one starts only once the last is Ready again.
    spans = sorted(
        (min(t for t, n, _ in cluster.node_log if n == node), first(cluster, node, "ready"))
        for node in CONTROL_PLANE
    )
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))
    # etcd members (mirror pods) and DaemonSet pods were never evicted.
    assert not [e for e in cluster.evictions if e.namespace == "kube-system"]
    assert all(cluster.pod("kube-system", f"etcd-{n}") is not None for n in CONTROL_PLANE)


def test_with_a_control_plane_node_not_ready_no_other_goes_down_and_the_wait_says_why(
    fake, k8s_engine, fenix_clock
):
    cluster = fake.cluster
    ha_cluster(cluster)
    cluster.set_node_ready("cp-2", False)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(
        SessionRequest(hosts=["cp-0", "cp-1"], actions=REBOOT, controls={"gate_timeout": 1800})
    )
    waits: list[str] = []

    def look() -> None:
        view = engine.get_session(sid)
        if view.waiting:
            waits.append(view.waiting)

    end = fenix_clock.now() + timedelta(hours=2)
    while fenix_clock.now() < end:
        engine.run_until_idle()
        look()
        wake = engine.next_wake()
        assert wake is not None
        fenix_clock.advance_to(max(fenix_clock.now(), min(wake, end)))

    view = engine.get_session(sid)
    assert view.state not in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")
    assert view.waiting is not None
    assert "control-plane node cp-2 is not Ready" in view.waiting
    assert "etcd quorum" in view.waiting
    assert all(w.startswith("gate host_guard before cp-") for w in waits), waits
    # Past the gate timeout it is also reported as stuck work, with the reason.
    stuck = [s for s in view.stuck if s.kind == "gate"]
    assert stuck
    assert "control-plane node cp-2 is not Ready" in stuck[0].detail
    # Nothing was touched meanwhile: no cordon, no eviction, no reboot.
    for node in ("cp-0", "cp-1"):
        assert node_sequence(cluster, node) == []
    assert cluster.evictions == []
    assert cluster.pods_on("cp-0")  # the web pod is still there, running

    cluster.set_node_ready("cp-2", True)
    view = drive(engine, fenix_clock, sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert node_sequence(cluster, "cp-0") == ["cordon", "reboot", "ready", "uncordon"]
    assert node_sequence(cluster, "cp-1") == ["reboot", "ready"]
    assert first(cluster, "cp-1", "reboot") >= first(cluster, "cp-2", "ready")
    assert first(cluster, "cp-0", "cordon") >= first(cluster, "cp-2", "ready")


def test_an_etcd_member_not_ready_holds_the_other_control_plane_nodes(
    fake, k8s_engine, fenix_clock
):
    cluster = fake.cluster
    ha_cluster(cluster)
    cluster.set_pod_ready("kube-system", "etcd-cp-1", False)  # its node is Ready
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(hosts=["cp-0", "node-0"], actions=REBOOT))
    for _ in range(10):
        engine.run_until_idle()
        fenix_clock.advance(60)
    engine.run_until_idle()

    view = engine.get_session(sid)
    assert view.waiting is not None
    assert "etcd member etcd-cp-1 on cp-1 is not Ready" in view.waiting
    assert node_sequence(cluster, "cp-0") == []

    cluster.set_pod_ready("kube-system", "etcd-cp-1", True)
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert node_sequence(cluster, "cp-0") == ["cordon", "reboot", "ready", "uncordon"]


def test_the_guard_is_asked_before_a_control_plane_node_on_the_core(fake, k8s_engine, fenix_clock):
    """The core's pipeline asks the driver's quorum guard before a
    control-plane node, before the request's gates (the wording of the wait
    is checked by the test above)."""
    cluster = fake.cluster
    ha_cluster(cluster)
    cluster.set_pod_ready("kube-system", "etcd-cp-1", False)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(hosts=["cp-0", "node-0"], actions=REBOOT))
    for _ in range(10):
        engine.run_until_idle()
        fenix_clock.advance(60)
    engine.run_until_idle()
    view = engine.get_session(sid)
    assert view.state not in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED"), view.reason
    assert (view.waiting or "").startswith("gate host_guard before cp-0")
    assert node_sequence(cluster, "cp-0") == []
    cluster.set_pod_ready("kube-system", "etcd-cp-1", True)
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert node_sequence(cluster, "cp-0") == ["cordon", "reboot", "ready", "uncordon"]


def test_the_guard_holds_only_control_plane_nodes(fake, k8s_engine):
    cluster = fake.cluster
    ha_cluster(cluster)
    cluster.set_node_ready("cp-2", False)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(hosts=["node-0", "node-1"], actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert node_sequence(cluster, "cp-0") == []


# --------------------------------------------------------------------------- emptyDir


def test_a_pod_with_emptydir_data_blocks_the_drain_and_says_why(fake, k8s_engine, fenix_clock):
    cluster = fake.cluster
    ha_cluster(cluster)
    cluster.add_replicaset("shop", "cache", ["node-0"], volumes=CACHE)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(
        SessionRequest(
            hosts=["node-0"],
            actions=REBOOT,
            timeouts={"migration": 900},
            max_migration_retries=0,
        )
    )
    details: list[str] = []

    def look() -> None:
        if "shop" in engine.get_session(sid).projects:
            details.extend(i.detail for i in engine.project_view(sid, "shop").instances if i.detail)

    view = drive(engine, fenix_clock, sid, look)

    assert view.state == "MAINTENANCE_FAILED"
    held = [d for d in details if "emptyDir volumes: cache" in d]
    assert held, details
    assert "delete_emptydir_data=True" in held[0]
    cache = [p for p in cluster.pods.values() if p["metadata"]["name"].startswith("cache-")]
    assert [p["spec"]["nodeName"] for p in cache] == ["node-0"]  # still there, data kept
    assert not [e for e in cluster.evictions if e.pod.startswith("cache-")]
    assert "reboot" not in node_sequence(cluster, "node-0")
    stuck = [s for s in view.stuck if s.kind == "migration"]
    assert stuck
    assert "emptyDir" in stuck[0].detail
    assert "emptyDir" in view.reason


def test_a_pod_with_emptydir_data_is_evicted_when_the_admin_opts_in(fake, k8s_engine):
    cluster = fake.cluster
    ha_cluster(cluster)
    cache = cluster.add_replicaset("shop", "cache", ["node-0"], volumes=CACHE)[0]
    engine = k8s_engine(NodeReboot(cluster, seconds=60), delete_emptydir_data=True)
    sid = engine.create_session(SessionRequest(hosts=["node-0"], actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    name = cache["metadata"]["name"]
    assert [e.code for e in cluster.evictions if e.pod == name] == [201]
    assert cluster.pod("shop", name) is None


def test_hostpath_volumes_do_not_block_a_drain(fake, k8s_engine):
    # kubectl drain counts only emptyDir as local data: hostPath data stays on
    # the node and is there again after the reboot.
    cluster = fake.cluster
    ha_cluster(cluster)
    logs = [{"name": "logs", "hostPath": {"path": "/var/log/app"}}]
    agent = cluster.add_replicaset("shop", "agent", ["node-0"], volumes=logs)[0]
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(hosts=["node-0"], actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert [e.code for e in cluster.evictions if e.pod == agent["metadata"]["name"]] == [201]


# --------------------------------------------------------------------------- cordon first


def test_the_node_is_cordoned_before_the_first_eviction(fake, k8s_engine):
    cluster = fake.cluster
    ha_cluster(cluster)
    # Without the queued taint, the node's only patches are the cordon and
    # the uncordon (the taint's are in test_k8s_steering).
    engine = k8s_engine(NodeReboot(cluster, seconds=60), steer_replacements=False)
    sid = engine.create_session(SessionRequest(hosts=["node-0"], actions=REBOOT))

    view = engine.run_until_done(sid)

    assert view.state == "MAINTENANCE_DONE", view.reason
    requests = fake.app.requests
    cordon = [
        i
        for i, (method, path) in enumerate(requests)
        if method == "PATCH" and path == "/api/v1/nodes/node-0"
    ]
    evictions = [i for i, (method, path) in enumerate(requests) if path.endswith("/eviction")]
    moves = [
        i for i, (method, path) in enumerate(requests) if method == "POST" and "/events" in path
    ]
    assert len(cordon) == 2  # cordon, uncordon
    assert evictions
    assert cordon[0] < min(evictions)
    assert cordon[0] < min(moves)  # before the first move even started
    assert cordon[1] > max(evictions)


def test_a_pod_its_operator_moves_itself_leaves_a_node_already_cordoned(
    fake, k8s_engine, fenix_clock
):
    cluster = fake.cluster
    for name in ("node-0", "node-1"):
        cluster.add_node(name, cpu="8")
    cluster.add_statefulset("db", "pg", ["node-0"])
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    manager = ScriptedManager(engine, "db", action="OWN_ACTION")
    sid = engine.create_session(SessionRequest(hosts=["node-0"], actions=REBOOT))
    moved: list[bool] = []

    def operator() -> None:
        # The operator moves its pod when asked to (OWN_ACTION): it deletes it,
        # and the StatefulSet brings it back on a schedulable node.
        pod = cluster.pod("db", "pg-0")
        if manager.sent and not moved and pod and pod["spec"]["nodeName"] == "node-0":
            moved.append(cluster.cordoned("node-0"))
            cluster.delete_pod("db", "pg-0")

    view = drive(engine, fenix_clock, sid, operator)
    manager.close()

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert moved == [True]
    assert cluster.pod("db", "pg-0")["spec"]["nodeName"] == "node-1"
    assert node_sequence(cluster, "node-0") == ["cordon", "reboot", "ready", "uncordon"]
