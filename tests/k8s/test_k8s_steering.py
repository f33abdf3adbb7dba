"""Replacement pods steered away from nodes a session still has to maintain:
the driver's PreferNoSchedule taint, and the fake scheduler's scoring of it
(kube-scheduler's TaintToleration: prefer, never forbid)."""

from __future__ import annotations

from collections import Counter

import pytest
from kubernetes.client import CoreV1Api, V1Eviction, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from fenix_core import ActionSpec, SessionRequest
from fenix_core.kube_scheduling import Candidate, Requests, best_node, pod_requests
from fenix_core.second_moves import first_wave_room, moves_lower_bound
from fenix_core.sim.simulation import plan
from fenix_core.sim.snapshot import read_cloud, scenario_from_cloud
from fenix_core_k8s import QUEUED_TAINT, KubernetesDriver
from fenix_core_k8s.pods import tolerates as _tolerated
from fenix_core_k8s.testing import NodeReboot

from .helpers import drive

REBOOT = [ActionSpec("reboot", "host")]
NODES = [f"node-{i}" for i in range(6)]


def queued_taints(cluster) -> dict[str, list[str]]:
    return {
        name: [t.get("value") for t in node["spec"].get("taints") or () if t["key"] == QUEUED_TAINT]
        for name, node in cluster.nodes.items()
        if any(t["key"] == QUEUED_TAINT for t in node["spec"].get("taints") or ())
    }


def six_nodes_six_pods(cluster) -> None:
    """One web pod per node; the first three nodes (maintained first) also run
    two static pods each, so that they look busier to the scheduler."""
    for name in NODES:
        cluster.add_node(name)
    cluster.add_replicaset("shop", "web", NODES)
    for name in NODES[:3]:
        for k in range(2):
            cluster.add_pod("kube-system", f"static-{k}-{name}", name, mirror=True)


@pytest.mark.parametrize("workflow", ["rolling"])
@pytest.mark.parametrize(("steer", "most"), [(True, 7), (False, None)])
def test_maintaining_six_nodes_evicts_each_pod_about_once(
    fake, k8s_engine, fenix_clock, steer: bool, most: int | None, workflow: str
) -> None:
    cluster = fake.cluster
    six_nodes_six_pods(cluster)
    engine = k8s_engine(NodeReboot(cluster, seconds=60), steer_replacements=steer)
    sid = engine.create_session(SessionRequest(hosts=NODES, workflow=workflow, actions=REBOOT))
    seen: list[dict[str, list[str]]] = []
    view = drive(engine, fenix_clock, sid, lambda: seen.append(queued_taints(cluster)))
    assert view.state == "MAINTENANCE_DONE", view.reason
    granted = [e for e in cluster.evictions if e.code == 201]
    # The bound: each of the 6 pods leaves a maintained node once; the first
    # node's pod has nowhere maintained to go, so 7 at most.
    if most is not None:
        assert len(granted) <= most, Counter(e.node for e in granted)
        # Only nodes still queued carried the taint, only this session's, and
        # none is left once the session is done.
        for snapshot in seen:
            assert all(values == [sid] for values in snapshot.values())
        assert queued_taints(cluster) == {}
    else:
        # Without steering the replacements land on the less busy nodes still
        # queued, and are evicted again from there.
        assert len(granted) > 7
        assert seen
        assert all(snapshot == {} for snapshot in seen)


def _bound(workflow: str) -> int:
    """The fewest evictions that maintain the six nodes: each pod once, and
    the first node's pod twice (no node outside the session has room); the
    constrained workflow may add the second moves of its first wave
    (:func:`fenix_core.second_moves.first_wave_room`), which buy it time."""
    bound = moves_lower_bound([[1]] * len(NODES), stay_room=0).moves
    if workflow == "constrained":
        bound += first_wave_room(len(NODES), one_host=1)
    return bound


@pytest.mark.parametrize("workflow", ["rolling", "constrained"])
def test_a_session_steers_only_its_own_queued_nodes(
    fake, k8s_engine, fenix_clock, workflow: str
) -> None:
    """Rolling or constrained: while the session runs, exactly its nodes still
    queued carry its taint (never a node outside it, which the scheduler then
    prefers), and none once it is done; the plan from the cluster predicts
    the evictions the run makes (the constrained workflow's bound: below)."""
    cluster = fake.cluster
    for name in [*NODES, "spare"]:
        cluster.add_node(name, cpu="2")
    # A whole CPU each: the engine (which rounds requests up) and the
    # scheduler agree on the room. The spare, outside the session, has a pod
    # of its own and room for one more.
    cluster.add_replicaset("shop", "web", NODES, cpu="1")
    cluster.add_replicaset("ops", "agent", ["spare"], cpu="1")
    session = {"workflow": workflow, "hosts": NODES}
    planned = plan(
        scenario_from_cloud(
            read_cloud(KubernetesDriver(fake.api_client())),
            session=session,
            actions=[{"plugin": "reboot", "type": "host", "seconds": 60}],
        )
    )
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(actions=REBOOT, **session))
    seen: list[tuple[set[str], dict[str, list[str]]]] = []

    def look() -> None:
        view = engine.get_session(sid)
        if view.state not in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED"):
            queued = {h.name for h in view.hosts if h.state == "PENDING"}
            seen.append((queued, queued_taints(cluster)))

    view = drive(engine, fenix_clock, sid, look)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert seen
    for queued, taints in seen:
        assert taints == {n: [sid] for n in queued}
    assert queued_taints(cluster) == {}
    granted = [e for e in cluster.evictions if e.code == 201]
    # The scheduler puts each replacement where the engine planned it: what
    # the plan counts is what the run evicts.
    assert len(granted) == planned.result.migrations_done
    if workflow == "rolling":
        # The spare takes the first node's pod for good: each pod leaves once.
        bound = moves_lower_bound([[1]] * len(NODES), stay_room=1).moves
        assert len(granted) == bound == len(NODES), Counter(e.node for e in granted)


def test_constrained_evictions_meet_the_bound_on_six_nodes(fake, k8s_engine, fenix_clock) -> None:
    """The issue's layout: 6 nodes, a pod each, no room outside the session."""
    cluster = fake.cluster
    six_nodes_six_pods(cluster)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(hosts=NODES, workflow="constrained", actions=REBOOT))
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    granted = [e for e in cluster.evictions if e.code == 201]
    assert len(granted) <= _bound("constrained"), Counter(e.node for e in granted)


def test_a_cancelled_session_takes_its_taints_off(fake, k8s_engine) -> None:
    cluster = fake.cluster
    six_nodes_six_pods(cluster)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    sid = engine.create_session(SessionRequest(hosts=NODES, actions=REBOOT))
    engine.run_until_idle()
    assert queued_taints(cluster), "the queued nodes are tainted once the session runs"
    engine.cancel(sid)
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_CANCELLED"
    assert queued_taints(cluster) == {}


def test_another_sessions_taint_and_foreign_taints_are_left_alone(fake, k8s_engine) -> None:
    cluster = fake.cluster
    six_nodes_six_pods(cluster)
    cluster.nodes["node-0"]["spec"]["taints"] = [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        {"key": QUEUED_TAINT, "value": "other-session", "effect": "PreferNoSchedule"},
    ]
    engine = k8s_engine()
    driver = engine.plugins.driver
    driver.mark_queued("mine", ["node-0", "node-1"])
    assert queued_taints(cluster) == {"node-0": ["other-session"], "node-1": ["mine"]}
    assert cluster.nodes["node-0"]["spec"]["taints"][0]["key"] == "dedicated"
    driver.mark_queued("mine", [])
    assert queued_taints(cluster) == {"node-0": ["other-session"]}
    assert [t["key"] for t in cluster.nodes["node-0"]["spec"]["taints"]] == [
        "dedicated",
        QUEUED_TAINT,
    ]


# ---------------------------------------------------------------- the fake scheduler


def evict(core: CoreV1Api, namespace: str, name: str) -> None:
    body = V1Eviction(metadata=V1ObjectMeta(name=name, namespace=namespace))
    core.create_namespaced_pod_eviction(name, namespace, body)


def evict_web(core: CoreV1Api, clock) -> None:
    """Evict the web pod, and let the fake's controllers replace it (they run
    on the next request once its time has come)."""
    pods = core.list_namespaced_pod("ns").items
    evict(core, "ns", next(p.metadata.name for p in pods if p.metadata.name.startswith("web")))
    clock.advance(60)
    core.list_node()


def web_nodes(cluster) -> list[str]:
    return [
        p["spec"].get("nodeName")
        for p in cluster.pods.values()
        if p["metadata"]["name"].startswith("web") and not p["metadata"].get("deletionTimestamp")
    ]


def test_fake_scheduler_prefers_untainted_nodes_but_uses_tainted_ones(fake, fenix_clock) -> None:
    cluster = fake.cluster
    for name in ("a", "b", "c"):
        cluster.add_node(name)
    core = CoreV1Api(fake.api_client())
    for name in ("a", "b"):
        core.patch_node(name, {"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}})
    cluster.add_replicaset("ns", "busy", ["c", "c", "c"])
    cluster.add_replicaset("ns", "web", ["a"])
    evict_web(core, fenix_clock)
    # c holds the most pods, yet the untainted node scores higher.
    assert web_nodes(cluster) == ["c"]
    # Cordoned, c is filtered out: a PreferNoSchedule node still takes the pod
    # (the least loaded of them), where a NoSchedule one would not.
    core.patch_node("c", {"spec": {"unschedulable": True}})
    core.patch_node("b", {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}})
    evict_web(core, fenix_clock)
    assert web_nodes(cluster) == ["a"]


def test_fake_scheduler_matches_tolerations_and_scores_as_kube_scheduler() -> None:
    taint = {"key": "k", "value": "v", "effect": "PreferNoSchedule"}
    assert _tolerated(taint, [{"key": "k", "operator": "Exists"}])
    assert _tolerated(taint, [{"operator": "Exists"}])  # empty key + Exists: every taint
    assert _tolerated(taint, [{"key": "k", "value": "v"}])  # Equal is the default
    assert not _tolerated(taint, [{"key": "k", "value": "w"}])
    assert not _tolerated(taint, [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}])
    assert not _tolerated(taint, [])
    # Scores as kube-scheduler's default profile computes them. A pod of
    # 500m CPU and no memory request (scored as 200 MiB) on 4-CPU, 16 GiB nodes.
    gib = 1024**3
    pod = pod_requests([{"cpu": 500, "memory": None}])
    assert pod == Requests(500, 0, 500, 200 * 1024**2)

    def node(name: str, cpu_m: int, taints: int = 0) -> Candidate:
        # ``cpu_m`` of requests by one pod without a memory request.
        return Candidate(name, 4000, 16 * gib, pod_requests([{"cpu": cpu_m}]), taints)

    # Weight 3 on the reversed taint count beats the resource scores: an
    # untainted node wins even when it is the busiest.
    assert best_node(pod, [node("a", 0, taints=1), node("b", 3000)]) == "b"
    # Among equally tainted nodes the least allocated wins: LeastAllocated
    # (4000-1100)*100//4000 = 72 and (16384-400)*100//16384 = 97 -> 84 for
    # "b", (4000-1200)*100//4000 = 70 -> 83 for "a"; BalancedAllocation
    # (1 - (0.275 - 0)/2)*100 = 86 for "b", (1 - 0.3/2)*100 = 85 for "a".
    assert best_node(pod, [node("a", 700, 1), node("b", 600, 1)]) == "b"
    # The taint score is normalized by the most tainted node: 2 -> 0, 1 -> 50.
    assert best_node(pod, [node("a", 0, 2), node("b", 3000, 1), node("c", 3000, 0)]) == "c"
    # A container without a CPU request counts 100m in the score, not in the filter.
    assert pod_requests([{"cpu": None}]).scored_cpu_m == 100
    assert pod_requests([{"cpu": None}]).cpu_m == 0
    assert best_node(pod, [node("b", 100), node("a", 100)]) == "a"  # ties: the first name
    assert best_node(pod, []) is None


def test_fake_apiserver_refuses_bad_taints_and_stale_versions(fake) -> None:
    fake.cluster.add_node("a")
    core = CoreV1Api(fake.api_client())
    for taints, words in (
        ([{"key": "k", "effect": "Sometimes"}], "Unsupported value"),
        ([{"effect": "NoSchedule"}], "Required value"),
        (
            [{"key": "k", "effect": "NoSchedule"}, {"key": "k", "effect": "NoSchedule"}],
            "Duplicate value",
        ),
    ):
        with pytest.raises(ApiException) as caught:
            core.patch_node("a", {"spec": {"taints": taints}})
        assert caught.value.status == 422
        assert words in caught.value.body
    node = core.read_node("a")
    stale = node.metadata.resource_version
    core.patch_node("a", {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(ApiException) as caught:
        core.patch_node("a", {"metadata": {"resourceVersion": stale}, "spec": {"taints": []}})
    assert caught.value.status == 409


def test_fake_scheduler_keeps_cpu_requests_within_allocatable(fake, fenix_clock) -> None:
    """NodeResourcesFit: a node whose pods' CPU requests leave too little of
    its allocatable CPU is filtered out, however lightly loaded by pods."""
    cluster = fake.cluster
    cluster.add_node("a", cpu="1")
    cluster.add_node("b", cpu="4")
    cluster.add_node("c", cpu="4")
    core = CoreV1Api(fake.api_client())
    cluster.add_replicaset("ns", "big", ["a"], cpu="1")  # a is full
    cluster.add_replicaset("ns", "small", ["b", "b", "b"], cpu="100m")
    cluster.add_replicaset("ns", "web", ["c"], cpu="500m")
    core.patch_node("c", {"spec": {"unschedulable": True}})
    evict_web(core, fenix_clock)
    # a holds one pod against b's three, but has no CPU left.
    assert web_nodes(cluster) == ["b"]
    # Nowhere with room: the replacement waits, Pending, until there is.
    core.patch_node("c", {"spec": {"unschedulable": None}})
    cluster.add_replicaset("ns", "filler", ["b", "c"], cpu="3600m")
    core.patch_node("c", {"spec": {"unschedulable": True}})
    evict_web(core, fenix_clock)
    assert web_nodes(cluster) == [None]
    core.patch_node("c", {"spec": {"unschedulable": None}})
    for pod in list(cluster.pods.values()):
        if pod["metadata"]["name"].startswith("filler") and pod["spec"]["nodeName"] == "c":
            core.delete_namespaced_pod(pod["metadata"]["name"], "ns")
    fenix_clock.advance(60)
    core.list_node()
    assert web_nodes(cluster) == ["c"]


def test_fake_control_plane_nodes_are_tainted_as_kubeadm_does(fake, fenix_clock) -> None:
    cluster = fake.cluster
    cluster.add_node("cp", control_plane=True)
    cluster.add_node("small", control_plane=True, control_plane_taint=False)
    cluster.add_node("w", cpu="4")
    core = CoreV1Api(fake.api_client())
    taints = core.read_node("cp").spec.taints
    assert [(t.key, t.effect) for t in taints] == [
        ("node-role.kubernetes.io/control-plane", "NoSchedule")
    ]
    assert core.read_node("small").spec.taints is None
    # Only a pod that tolerates the taint is scheduled on the tainted one.
    cluster.add_replicaset("ns", "web", ["w"])
    core.patch_node("small", {"spec": {"unschedulable": True}})
    core.patch_node("w", {"spec": {"unschedulable": True}})
    evict_web(core, fenix_clock)
    assert web_nodes(cluster) == [None]
    toleration = {
        "key": "node-role.kubernetes.io/control-plane",
        "operator": "Exists",
        "effect": "NoSchedule",
    }
    cluster.add_replicaset("ns", "dns", ["w"], tolerations=[toleration])
    pods = core.list_namespaced_pod("ns").items
    dns = next(p.metadata.name for p in pods if p.metadata.name.startswith("dns"))
    evict(core, "ns", dns)
    fenix_clock.advance(60)
    core.list_node()
    assert [
        p["spec"].get("nodeName")
        for p in cluster.pods.values()
        if p["metadata"]["name"].startswith("dns") and not p["metadata"].get("deletionTimestamp")
    ] == ["cp"]


def test_fake_scheduler_does_not_count_finished_pods(fake, fenix_clock) -> None:
    """A finished pod (a Job's, Succeeded) holds no CPU in the scheduler's count."""
    cluster = fake.cluster
    cluster.add_node("a", cpu="1")
    cluster.add_node("c", cpu="4")
    cluster.add_pod("ns", "job-1", "a", cpu="1")
    core = CoreV1Api(fake.api_client())
    cluster.add_replicaset("ns", "web", ["c"], cpu="500m")
    core.patch_node("c", {"spec": {"unschedulable": True}})
    evict_web(core, fenix_clock)
    assert web_nodes(cluster) == [None]  # a is full while the job runs
    cluster.pods[("ns", "job-1")]["status"]["phase"] = "Succeeded"
    fenix_clock.advance(60)
    core.list_node()
    assert web_nodes(cluster) == ["a"]
