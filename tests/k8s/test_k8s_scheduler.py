"""The fake apiserver's scheduler, through the official client: where a
replacement pod lands is kube-scheduler's choice (its default profile's
filters and scores, see fenix_core.kube_scheduling), and the plan's
KubeScheduledCloud makes the same choice from a snapshot."""

from __future__ import annotations

from typing import Any

from kubernetes.client import CoreV1Api

from fenix_core.kube_scheduling import QUEUED_TAINT_KEY
from fenix_core.sim.snapshot import read_cloud
from fenix_core.testing import KubeScheduledCloud, SimClock
from fenix_core_k8s import KubernetesDriver

from .test_k8s_plan import CONTROL_PLANE_TOLERATION
from .test_k8s_steering import evict


def _replace(core: CoreV1Api, clock: Any, prefix: str) -> str | None:
    """Evict the (one) pod named ``prefix-...`` in ``ns``; the node its
    replacement is bound to, read back through the client."""
    pods = core.list_namespaced_pod("ns").items
    old = next(p for p in pods if p.metadata.name.startswith(prefix))
    evict(core, "ns", old.metadata.name)
    clock.advance(60)
    for pod in core.list_namespaced_pod("ns").items:
        if pod.metadata.name.startswith(prefix) and pod.metadata.uid != old.metadata.uid:
            return pod.spec.node_name
    return None


def test_least_allocated_not_fewest_pods(fake, fenix_clock) -> None:
    """NodeResourcesFit scores requests, not pods: "w1" holds one pod of 2
    CPUs, "w2" three of 100m; the replacement goes to w2."""
    cluster = fake.cluster
    for name in ("src", "w1", "w2"):
        cluster.add_node(name, cpu="4")
    cluster.add_replicaset("ns", "big", ["w1"], cpu="2")
    cluster.add_replicaset("ns", "small", ["w2", "w2", "w2"], cpu="100m")
    cluster.add_replicaset("ns", "web", ["src"], cpu="500m")
    core = CoreV1Api(fake.api_client())
    core.patch_node("src", {"spec": {"unschedulable": True}})
    assert _replace(core, fenix_clock, "web") == "w2"


def test_a_container_without_requests_counts_in_the_score(fake, fenix_clock) -> None:
    """GetNonzeroRequests: eight pods that request nothing weigh 800m and
    1600 MiB in LeastAllocated's score (100m and 200 MiB each), more than one
    pod of 400m (and 200 MiB, its memory not being requested): the replacement
    goes next to the one pod. Counted by their requests (nothing), w1 would
    win: LeastAllocated 92 and BalancedAllocation 93 against 87 and 88."""
    cluster = fake.cluster
    for name in ("src", "w1", "w2"):
        cluster.add_node(name, cpu="4")
    for k in range(8):
        pod = cluster.add_pod("ns", f"bare-{k}", "w1")
        pod["spec"]["containers"][0]["resources"] = {}
    cluster.add_replicaset("ns", "one", ["w2"], cpu="400m")
    cluster.add_replicaset("ns", "web", ["src"], cpu="500m")
    core = CoreV1Api(fake.api_client())
    core.patch_node("src", {"spec": {"unschedulable": True}})
    assert _replace(core, fenix_clock, "web") == "w2"


def test_tolerations_node_selector_and_the_queued_taint(fake, fenix_clock) -> None:
    """The control-plane taint keeps out pods that do not tolerate it; one
    that does may land on a control-plane node or a worker, whichever scores
    best; a nodeSelector filters; the queued PreferNoSchedule taint steers."""
    cluster = fake.cluster
    cluster.add_node("cp-0", control_plane=True)
    cluster.add_node("cp-1", control_plane=True)
    cluster.add_node("w1", cpu="4", labels={"disk": "ssd"})
    cluster.add_node("w2", cpu="4")
    cluster.add_etcd_member("cp-1")
    cluster.add_replicaset("ns", "fill", ["w1", "w1"], cpu="500m")
    cluster.add_replicaset("ns", "dns", ["cp-0"], tolerations=[CONTROL_PLANE_TOLERATION])
    core = CoreV1Api(fake.api_client())
    core.patch_node("cp-0", {"spec": {"unschedulable": True}})
    # cp-1 has its etcd member (100m), w2 nothing: the worker scores best.
    assert _replace(core, fenix_clock, "dns") == "w2"
    # A queued taint on w2 (the session still has to maintain it) sends the
    # next one to the untainted control-plane node.
    taint = {"key": QUEUED_TAINT_KEY, "value": "s", "effect": "PreferNoSchedule"}
    core.patch_node("w2", {"spec": {"taints": [taint]}})
    assert _replace(core, fenix_clock, "dns") == "cp-1"
    # Without the toleration, a pod never lands on a tainted control plane,
    # however free: here on the busier w1 (w2 is cordoned).
    core.patch_node("w2", {"spec": {"unschedulable": True}})
    cluster.add_replicaset("ns", "web", ["w2"])
    assert _replace(core, fenix_clock, "web") == "w1"
    # A nodeSelector: only w1 has disk=ssd, though w2 is the least allocated.
    core.patch_node("w2", {"spec": {"unschedulable": None, "taints": []}})
    cluster.add_replicaset("ns", "db", ["cp-1"], node_selector={"disk": "ssd"})
    assert _replace(core, fenix_clock, "db") == "w1"


def _planned(snapshot: Any, source: str, queued: list[str]) -> str:
    """Where KubeScheduledCloud, built from ``snapshot``, moves the dns pod
    off ``source`` (cordoned) with ``queued`` nodes tainted."""
    sim = KubeScheduledCloud(scheduling=snapshot.scheduling, clock=SimClock())
    for host in snapshot.hosts:
        sim.add_host(host.name, type=host.type, vcpus=host.vcpus, labels=host.labels)
    for inst in snapshot.instances:
        sim.add_instance(inst.instance_id, inst.project_id, inst.host, vcpus=inst.vcpus)
    dns = next(i.instance_id for i in snapshot.instances if "/dns-" in i.instance_id)
    assert sim.host_of(dns) == source
    sim.disable_host(source, "maintenance")
    sim.mark_queued("s", queued)
    other = next(h.name for h in snapshot.hosts if h.name not in (source, *queued))
    sim.start_move(dns, "MIGRATE", other, "k")  # the workflow's target is not taken
    started = [e for e in sim.events if e.kind == "migration_started"]
    return str(started[-1].detail)


def test_the_plans_scheduler_agrees_with_the_fake(fake, fenix_clock) -> None:
    """From a snapshot read through the driver, KubeScheduledCloud picks the
    node the fake apiserver's scheduler binds the replacement to, with and
    without queued taints."""
    cluster = fake.cluster
    cluster.add_node("cp-0", control_plane=True)
    cluster.add_node("cp-1", control_plane=True)
    for name in ("w1", "w2", "w3"):
        cluster.add_node(name, cpu="4")
    cluster.add_etcd_member("cp-0")
    cluster.add_etcd_member("cp-1")
    cluster.add_daemonset("kube-system", "kube-proxy")
    cluster.add_replicaset("ns", "fill", ["w1", "w1", "w3"], cpu="700m")
    cluster.add_replicaset("ns", "dns", ["cp-0"], tolerations=[CONTROL_PLANE_TOLERATION])
    core = CoreV1Api(fake.api_client())
    taint = {"key": QUEUED_TAINT_KEY, "value": "s", "effect": "PreferNoSchedule"}

    # Nothing queued: the least allocated node it may run on, a worker.
    planned = _planned(read_cloud(KubernetesDriver(fake.api_client())), "cp-0", [])
    core.patch_node("cp-0", {"spec": {"unschedulable": True}})
    assert planned == _replace(core, fenix_clock, "dns") == "w2"

    # From w2, with w3 and cp-1 queued: the untainted cp-0 (etcd, kube-proxy)
    # beats the untainted, busier w1; both make that choice.
    core.patch_node("cp-0", {"spec": {"unschedulable": None}})
    planned = _planned(read_cloud(KubernetesDriver(fake.api_client())), "w2", ["w3", "cp-1"])
    for name in ("w3", "cp-1"):
        taints = core.read_node(name).spec.taints or []
        kept = [{"key": t.key, "effect": t.effect} for t in taints]
        core.patch_node(name, {"spec": {"taints": [*kept, taint]}})
    core.patch_node("w2", {"spec": {"unschedulable": True}})
    assert planned == _replace(core, fenix_clock, "dns") == "cp-0"
