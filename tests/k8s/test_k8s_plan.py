"""Planning from the live (fake) Kubernetes cluster: read-only, budgets and
anti-affinity as groups, exported as a scenario that re-plans the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fenix_core import ActionSpec, SessionRequest
from fenix_core.cli import main
from fenix_core.sim.scenario import load_scenario_file
from fenix_core.sim.simulation import plan
from fenix_core.sim.snapshot import read_cloud, scenario_from_cloud
from fenix_core.sim.timeline import build_timeline
from fenix_core.testing import TimedAction
from fenix_core_k8s import KubernetesDriver

from .helpers import WORKERS, shop_cluster

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _fenix(*args: Any, code: int = 0) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def _state(cluster: Any) -> dict[str, Any]:
    pods = {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["spec"].get("nodeName")
        for n in cluster.nodes
        for p in cluster.pods_on(n)
    }
    return {"pods": pods, "cordoned": sorted(n for n in cluster.nodes if cluster.cordoned(n))}


def test_plan_and_export_only_read_the_cluster(fake, tmp_path: Path) -> None:
    cluster = fake.cluster
    shop_cluster(cluster)
    before = _state(cluster)
    kubeconfig = fake.write_kubeconfig(tmp_path / "config", context="lab")
    where = ("--cloud", "k8s", "--kubeconfig", kubeconfig, "--context", "lab")
    options = ("--host", *" --host ".join(WORKERS).split(), "--workflow", "constrained")
    report = json.loads(_fenix("plan", *where, *options, "--json").output)
    exported = tmp_path / "shop.yaml"
    _fenix("export", *where, *options, "-o", exported)

    assert report["state"] == "MAINTENANCE_DONE"
    assert sorted(report["hosts"]) == sorted(WORKERS)
    requests = fake.app.requests
    assert requests
    assert [r for r in requests if r[0] in WRITES] == []
    assert {method for method, _ in requests} == {"GET"}
    assert not [r for r in requests if "eviction" in r[1]]
    assert _state(cluster) == before
    assert cluster.evictions == []
    # Budgets and the StatefulSet's hostname anti-affinity came along as groups.
    scenario = load_scenario_file(exported)
    groups = {g.group_id: g for g in scenario.groups}
    assert groups["pdb:shop/web"].max_impacted_members == 1
    assert groups["pdb:db/pg"].anti_affinity_group
    assert {i.group for i in scenario.instances if i.project == "db"} == {"pdb:db/pg"}
    assert scenario.host("cp-0").type == "controller"
    again = json.loads(_fenix("plan", exported, "--json").output)
    for key in ("waves", "hosts", "estimated_makespan_seconds", "preview"):
        assert again[key] == report[key], key


def test_a_missing_context_is_a_clean_error(fake, tmp_path: Path) -> None:
    shop_cluster(fake.cluster)
    kubeconfig = fake.write_kubeconfig(tmp_path / "config", context="lab")
    result = _fenix(
        "plan", "--cloud", "k8s", "--kubeconfig", kubeconfig, "--context", "nope", code=2
    )
    assert "nope" in result.output
    assert "Traceback" not in result.output


@pytest.mark.no_cover
def test_the_plan_matches_the_real_session_that_follows(fake, k8s_engine) -> None:
    cluster = fake.cluster
    shop_cluster(cluster)
    snapshot = read_cloud(KubernetesDriver(fake.api_client()))
    session = {"workflow": "rolling", "hosts": list(WORKERS)}
    planned = plan(scenario_from_cloud(snapshot, session=session))
    assert planned.result.view.state == "MAINTENANCE_DONE"
    assert [r for r in fake.app.requests if r[0] in WRITES] == []

    engine = k8s_engine(TimedAction("maintenance", seconds=600))
    sid = engine.create_session(
        SessionRequest(hosts=list(WORKERS), actions=[ActionSpec("maintenance", "host")])
    )
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    real = build_timeline(view, engine.list_operations(sid))

    def order(timeline: Any) -> list[str]:
        started = [h for h in timeline.hosts if h.maintenance_start is not None]
        return [h.name for h in sorted(started, key=lambda h: (h.maintenance_start, h.name))]

    assert order(planned.result.timeline) == order(real)
    assert [[h.name for h in w] for w in planned.result.timeline.waves()] == [
        [h.name for h in w] for w in real.waves()
    ]


# ---------------------------------------------------------------- as a real run


def _order(timeline: Any) -> list[str]:
    started = [h for h in timeline.hosts if h.maintenance_start is not None]
    return [h.name for h in sorted(started, key=lambda h: (h.maintenance_start, h.name))]


def _waves(timeline: Any) -> list[list[str]]:
    return [[h.name for h in w] for w in timeline.waves()]


def _plan_then_run(fake: Any, k8s_engine: Any, **request: Any) -> tuple[Any, Any, Any]:
    """Plan the session ``request`` from the cluster (read-only), then run it
    for real on the same cluster: (the plan, the real view, its timeline)."""
    snapshot = read_cloud(KubernetesDriver(fake.api_client()))
    planned = plan(scenario_from_cloud(snapshot, session=request))
    assert [r for r in fake.app.requests if r[0] in WRITES] == []
    engine = k8s_engine(TimedAction("maintenance", seconds=600))
    sid = engine.create_session(
        SessionRequest(actions=[ActionSpec("maintenance", "host")], **request)
    )
    view = engine.run_until_done(sid)
    return planned, view, build_timeline(view, engine.list_operations(sid))


ZONE = "topology.kubernetes.io/zone"
ZONES = {f"node-{i}": f"eu-1{'abc'[i % 3]}" for i in range(6)}


def _zoned(cluster: Any) -> None:
    """Six workers in three zones (kubelet's topology.kubernetes.io/zone
    label), a web pod on each."""
    cluster.add_node("cp-0", control_plane=True, labels={ZONE: "eu-1a"})
    for name, zone in ZONES.items():
        cluster.add_node(name, cpu="4", labels={ZONE: zone, "rack": f"r{name[-1]}"})
    cluster.add_replicaset("shop", "web", list(ZONES))


def test_the_export_carries_every_node_label(fake, tmp_path: Path) -> None:
    _zoned(fake.cluster)
    kubeconfig = fake.write_kubeconfig(tmp_path / "config", context="lab")
    exported = tmp_path / "zoned.yaml"
    _fenix("export", "--cloud", "k8s", "--kubeconfig", kubeconfig, "-o", exported)
    scenario = load_scenario_file(exported)
    assert scenario.host("node-4").labels[ZONE] == "eu-1b"
    assert scenario.host("node-4").labels["rack"] == "r4"
    assert scenario.host("node-4").labels["kubernetes.io/hostname"] == "node-4"
    assert scenario.host("cp-0").labels["node-role.kubernetes.io/control-plane"] == ""


def test_a_zone_cap_plans_as_the_real_run(fake, k8s_engine) -> None:
    cluster = fake.cluster
    _zoned(cluster)
    planned, view, real = _plan_then_run(
        fake,
        k8s_engine,
        hosts=list(ZONES),
        workflow="constrained",
        max_parallel_hosts=4,
        controls={"max_topology_in_maintenance": [{"key": ZONE, "max": 1}]},
    )
    assert planned.result.view.state == view.state == "MAINTENANCE_DONE", view.reason
    # One zone at a time in the plan, as in the real run: each wave is one
    # zone's two nodes.
    waves = _waves(planned.result.timeline)
    assert all(len({ZONES[h] for h in wave}) == 1 for wave in waves), waves
    assert _order(planned.result.timeline) == _order(real)
    assert waves == _waves(real)


CONTROL_PLANE_TOLERATION = {
    "key": "node-role.kubernetes.io/control-plane",
    "operator": "Exists",
    "effect": "NoSchedule",
}


def _with_control_plane_pods(cluster: Any, control_planes: int = 2) -> list[str]:
    """A kubeadm-like cluster: tainted control-plane nodes, each with its etcd
    member (a static pod's mirror) and a CoreDNS pod (a Deployment's, that
    tolerates the taint); kube-proxy (a DaemonSet) everywhere; workers with
    web pods. Returns the control-plane nodes."""
    planes = [f"cp-{i}" for i in range(control_planes)]
    for name in planes:
        cluster.add_node(name, control_plane=True)
        cluster.add_etcd_member(name)
    for name in WORKERS:
        cluster.add_node(name, cpu="4")
    cluster.add_replicaset("kube-system", "coredns", planes, tolerations=[CONTROL_PLANE_TOLERATION])
    cluster.add_daemonset("kube-system", "kube-proxy")
    cluster.add_replicaset("shop", "web", ["node-0", "node-1", "node-2", "node-3"])
    return planes


@pytest.mark.parametrize("workflow", ["constrained", "rolling"])
def test_pods_on_control_plane_nodes_are_planned_as_the_real_run(
    fake, k8s_engine, workflow: str
) -> None:
    """kube-scheduler, not the workflow, places a replacement: a control-plane
    node's CoreDNS pod (it tolerates the control-plane taint) lands on the
    least allocated node it may run on, a worker (every node is queued: the
    steering taint does not tell them apart), and that worker then drains
    later. The plan places it there too, so order, waves and the number of
    moves are the real run's."""
    planes = _with_control_plane_pods(fake.cluster)
    planned, view, real = _plan_then_run(fake, k8s_engine, workflow=workflow)
    assert planned.result.view.state == view.state == "MAINTENANCE_DONE", view.reason
    order = _order(planned.result.timeline)
    # The control-plane nodes first, one at a time, drained of their CoreDNS
    # pod; DaemonSet and static pods are not instances (never evicted).
    assert order[:2] == planes
    assert _order(real) == order
    assert _waves(planned.result.timeline) == _waves(real)
    # The first CoreDNS replacement went to a worker, in the plan as for real.
    first = next(e for e in fake.cluster.evictions if e.node == "cp-0")
    assert first.code == 201
    assert planned.result.migrations_done == len(
        [e for e in fake.cluster.evictions if e.code == 201]
    )


def test_control_plane_pods_in_the_export(fake, tmp_path: Path) -> None:
    planes = _with_control_plane_pods(fake.cluster)
    kubeconfig = fake.write_kubeconfig(tmp_path / "config", context="lab")
    exported = tmp_path / "cluster.yaml"
    _fenix("export", "--cloud", "k8s", "--kubeconfig", kubeconfig, "-o", exported)
    scenario = load_scenario_file(exported)
    on_planes = sorted(i.host for i in scenario.instances if i.host in planes)
    assert on_planes == planes  # one CoreDNS pod each
    ids = {i.id for i in scenario.instances}
    assert not [i for i in ids if "etcd" in i or "kube-proxy" in i]
    report = json.loads(_fenix("plan", exported, "--json").output)
    assert report["state"] == "MAINTENANCE_DONE"


def test_a_lone_control_plane_drains_its_coredns_to_a_worker_as_the_real_run(
    fake, k8s_engine
) -> None:
    """A pod that tolerates the control-plane taint may go to workers as well
    (the driver's ``host-types`` placement rule): the session empties the one
    control-plane node of its CoreDNS pod, and kube-scheduler puts the
    replacement on a worker, in the plan as in the real run."""
    _with_control_plane_pods(fake.cluster, control_planes=1)
    planned, view, real = _plan_then_run(fake, k8s_engine)
    assert planned.result.view.state == view.state == "MAINTENANCE_DONE", view.reason
    assert _order(planned.result.timeline) == _order(real)
    assert _order(real)[0] == "cp-0"
    assert _waves(planned.result.timeline) == _waves(real)
    evicted = [e for e in fake.cluster.evictions if e.node == "cp-0"]
    assert [e.code for e in evicted] == [201]
    assert planned.result.migrations_done == len(
        [e for e in fake.cluster.evictions if e.code == 201]
    )


def test_a_lone_control_plane_with_pinned_pods_fails_the_plan_as_the_real_run(
    fake, k8s_engine
) -> None:
    """A pod pinned to control-plane nodes (a nodeSelector on their label, and
    the toleration) keeps its host's type as its placement class: with one
    control-plane node the session cannot empty it, and the plan says so as
    the real run does."""
    cluster = fake.cluster
    cluster.add_node("cp-0", control_plane=True)
    cluster.add_etcd_member("cp-0")
    for name in WORKERS:
        cluster.add_node(name, cpu="4")
    cluster.add_replicaset(
        "kube-system",
        "operator",
        ["cp-0"],
        tolerations=[CONTROL_PLANE_TOLERATION],
        node_selector={"node-role.kubernetes.io/control-plane": ""},
    )
    planned, view, _ = _plan_then_run(fake, k8s_engine)
    assert planned.result.view.state == view.state == "MAINTENANCE_FAILED"
    assert planned.result.view.reason == view.reason
    assert "cp-0" in view.reason
    assert "the other controller hosts, where its instances may go, have 0 vcpus" in view.reason


def test_topology_caps_on_the_command_line(fake, tmp_path: Path) -> None:
    _zoned(fake.cluster)
    kubeconfig = fake.write_kubeconfig(tmp_path / "config", context="lab")
    where = ("--cloud", "k8s", "--kubeconfig", kubeconfig, "--workflow", "constrained")
    hosts = [a for name in ZONES for a in ("--host", name)]
    capped = json.loads(
        _fenix("plan", *where, *hosts, "--topology-cap", f"{ZONE}=1", "--json").output
    )
    assert capped["state"] == "MAINTENANCE_DONE"
    for wave in capped["waves"]:
        assert len({ZONES[h] for h in wave["hosts"]}) == 1, capped["waves"]
    exported = tmp_path / "capped.yaml"
    _fenix("export", *where, *hosts, "--topology-cap", f"{ZONE}=1", "-o", exported)
    caps = load_scenario_file(exported).session.request.controls.max_topology_in_maintenance
    assert [(c.key, c.max) for c in caps] == [(ZONE, 1)]
    bad = _fenix("plan", *where, "--topology-cap", "zone", code=2)
    assert "--topology-cap" in bad.output or "topology_cap" in bad.output
    assert "LABEL=N" in bad.output
    bad = _fenix("plan", exported, "--topology-cap", "zone=1", code=2)
    assert "needs --cloud" in bad.output
