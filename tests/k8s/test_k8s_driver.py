"""The Kubernetes driver's pieces against the fake apiserver: inventory,
constraints from budgets, moves found after a crash, configuration, node
notifications, and the budget arithmetic."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.errors import CloudError, InvalidInput, PluginError
from fenix_core.hookspecs import CloudDriver, ConstraintSource, MoveLookup
from fenix_core_k8s import KubernetesCloud, KubernetesDriver, NodeNotifier
from fenix_core_k8s.budget import desired_healthy, max_unavailable, scaled_value, selector_matches
from fenix_core_k8s.notify import CONDITION_TYPE, STATE_ANNOTATION
from fenix_core_k8s.testing import NodeReboot

from .helpers import shop_cluster


@pytest.fixture
def driver(fake, fenix_clock):
    return KubernetesDriver(fake.api_client(), clock=fenix_clock)


# --------------------------------------------------------------------------- budget arithmetic


@pytest.mark.parametrize(
    ("spec", "expected", "healthy", "unavailable"),
    [
        ({"maxUnavailable": 1}, 4, 3, 1),
        ({"maxUnavailable": "25%"}, 7, 5, 2),  # 1.75 rounds up to 2
        ({"maxUnavailable": "10%"}, 3, 2, 1),  # 0.3 rounds up to 1
        ({"minAvailable": 2}, 3, 2, 1),
        ({"minAvailable": "50%"}, 3, 2, 1),  # 1.5 rounds up to 2 kept
        ({"minAvailable": "100%"}, 3, 3, 0),
        ({"maxUnavailable": 0}, 3, 3, 0),
        ({}, 3, 3, 0),  # neither field: policy/v1 allows no disruption
    ],
)
def test_budget_arithmetic_rounds_percentages_up_as_kubernetes(
    spec, expected, healthy, unavailable
):
    assert desired_healthy(spec, expected) == healthy
    assert max_unavailable(spec, expected) == unavailable


def test_budget_values_and_selectors_reject_nonsense_and_match_expressions():
    with pytest.raises(ValueError, match="percentage"):
        scaled_value("ten%", 5)
    labels = {"app": "web", "tier": "front"}
    assert selector_matches({}, labels)
    assert not selector_matches(None, labels)
    assert selector_matches(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        },
        labels,
    )
    assert not selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels
    )
    with pytest.raises(ValueError, match="operator"):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Near"}]}, labels)


# --------------------------------------------------------------------------- inventory


def test_nodes_are_hosts_and_bound_pods_are_instances_except_daemons_and_mirrors(fake, driver):
    cluster = fake.cluster
    shop_cluster(cluster)
    cluster.add_node("big", cpu="3800m")
    pod = cluster.add_pod("tools", "job", "big", cpu="1500m", labels={"team": "ops"})
    pod["spec"]["initContainers"] = [
        {"name": "init", "image": "x", "resources": {"requests": {"cpu": "2500m"}}}
    ]
    cluster.add_pod("tools", "done", "big")["status"]["phase"] = "Succeeded"

    assert isinstance(driver, CloudDriver)
    assert isinstance(driver, MoveLookup)
    assert isinstance(driver, ConstraintSource)
    hosts = {h.name: h for h in driver.list_hosts()}
    assert hosts["cp-0"].type == "controller"
    assert hosts["node-0"].type == "compute"
    assert hosts["node-0"].vcpus == 4
    assert hosts["big"].vcpus == 3  # allocatable rounded down
    instances = {i.instance_id: i for i in driver.list_instances(["big", "node-0", "cp-0"])}
    assert sorted(instances) == sorted(
        ["tools/job", "db/pg-0"]
        + [
            f"shop/{p['metadata']['name']}"
            for p in cluster.pods_on("node-0")
            if p["metadata"]["namespace"] == "shop"
        ]
    )
    assert instances["tools/job"].vcpus == 3  # the larger init container, rounded up
    assert instances["tools/job"].project_id == "tools"
    assert instances["db/pg-0"].vcpus == 1
    assert instances["db/pg-0"].live_migratable is False
    assert driver.allowed_actions() == ["EVICT", "OWN_ACTION"]
    assert driver.locate("db/pg-0") == "node-0"
    assert driver.locate("db/nothing") is None
    # The owner the engine checks constraint writes against: the namespace,
    # or the project label; nothing for a missing pod or a non-pod id.
    assert driver.instance_owner("db/pg-0") == "db"
    assert driver.instance_owner("db/nothing") is None
    assert driver.instance_owner("no-slash") is None
    labelled = KubernetesDriver(fake.api_client(), project_label="team")
    assert {i.instance_id: i.project_id for i in labelled.list_instances(["big"])} == {
        "tools/job": "ops"
    }
    assert labelled.instance_owner("tools/job") == "ops"
    everywhere = driver.list_instances()
    assert not [i for i in everywhere if i.project_id == "kube-system"]


def test_bad_options_and_unknown_ids_are_clear_errors(fake, driver):
    with pytest.raises(InvalidInput, match="unmanaged_pods"):
        KubernetesDriver(fake.api_client(), unmanaged_pods="delete")  # type: ignore[arg-type]
    with pytest.raises(CloudError, match="namespace/name"):
        driver.locate("no-slash")
    with pytest.raises(CloudError, match="only by EVICT"):
        driver.start_move("db/pg-0", "MIGRATE", None, "k-1")
    with pytest.raises(CloudError, match="listing nodes failed: HTTP 404"):
        KubernetesDriver(
            client.ApiClient(client.Configuration(host=fake.url + "/nope"))
        ).list_hosts()


def test_cordon_marks_the_node_and_uncordon_only_touches_nodes_fenix_cordoned(fake, driver):
    cluster = fake.cluster
    cluster.add_node("a")
    cluster.add_node("b", unschedulable=True)
    driver.disable_host("a", "maintenance session s-1")
    driver.disable_host("b", "maintenance session s-1")
    assert cluster.nodes["a"]["metadata"]["annotations"]["fenix-core/cordoned"] == (
        "maintenance session s-1"
    )
    assert "fenix-core/cordoned" not in cluster.nodes["b"]["metadata"]["annotations"]
    assert {h.name: h.enabled for h in driver.list_hosts()} == {"a": True, "b": False}
    driver.enable_host("a")
    driver.enable_host("b")
    assert not cluster.cordoned("a")
    assert cluster.cordoned("b")
    assert driver.host_is_up("a")
    cluster.reboot_node("a", 30)
    assert not driver.host_is_up("a")
    assert not driver.host_is_up("missing")


# --------------------------------------------------------------------------- constraints


def test_budgets_and_hostname_anti_affinity_become_group_constraints(fake, driver):
    cluster = fake.cluster
    for index in range(8):
        cluster.add_node(f"n{index}")
    cluster.add_replicaset("shop", "web", [f"n{i}" for i in range(7)])
    cluster.add_pdb("shop", "web", {"app": "web"}, max_unavailable="25%")
    cluster.add_statefulset("db", "pg", ["n0", "n1", "n2"], anti_affinity=True)
    cluster.add_pdb("db", "pg", {"app": "pg"}, min_available="50%")
    cluster.add_replicaset("cache", "redis", ["n3", "n4"], anti_affinity=True)
    cluster.add_statefulset("vault", "vault", ["n5", "n6", "n7"])
    cluster.add_pdb("vault", "vault", {"app": "vault"}, min_available=3)

    found = driver.cloud_constraints(driver.list_instances())

    groups = {g.group_id: g for g in found.groups}
    assert groups["pdb:shop/web"].max_impacted_members == 2  # 25% of 7, rounded up
    assert groups["pdb:shop/web"].project_id == "shop"
    assert not groups["pdb:shop/web"].anti_affinity_group
    assert groups["pdb:db/pg"].max_impacted_members == 1  # 3 - ceil(1.5)
    assert groups["pdb:db/pg"].anti_affinity_group
    assert groups["pdb:vault/vault"].max_impacted_members == 1  # allows none: one at a time
    assert groups["anti-affinity:cache/ReplicaSet/redis"].anti_affinity_group
    assert found.members["db/pg-1"] == "pdb:db/pg"
    assert sum(1 for g in found.members.values() if g == "pdb:shop/web") == 7
    only_db = [i for i in driver.list_instances() if i.project_id == "db"]
    assert set(driver.cloud_constraints(only_db).members) == {"db/pg-0", "db/pg-1", "db/pg-2"}


# --------------------------------------------------------------------------- moves


@pytest.mark.parametrize("namespace", ["db", "shop"])  # StatefulSet, ReplicaSet
def test_a_move_is_found_by_its_key_after_a_crash_and_followed_to_the_end(
    fake, driver, fenix_clock, namespace
):
    cluster = fake.cluster
    shop_cluster(cluster)
    pod = next(p for p in cluster.pods_on("node-0") if p["metadata"]["namespace"] == namespace)
    name = pod["metadata"]["name"]
    handle = driver.start_move(f"{namespace}/{name}", "EVICT", None, "session-1:7")
    # Cordoning is the engine's (disable_host, before the first move): a move
    # does not cordon on its own.
    assert not cluster.cordoned("node-0")
    first = driver.poll_move(handle)
    assert first.state == "running"
    assert "evicted" in first.detail

    # A new engine process: a new driver, nothing in memory.
    reborn = KubernetesDriver(fake.api_client(), clock=fenix_clock)
    assert reborn.find_move("session-1:7") == handle
    assert reborn.find_move("session-1:8") is None
    status = reborn.poll_move(handle)
    while status.state == "running":
        fenix_clock.advance(status.retry_after or 5)
        status = reborn.poll_move(handle)
    assert status.state == "done"
    assert status.host not in (None, "node-0")
    replacement = status.result["replacement"].split("/")[1]
    assert cluster.pod(namespace, replacement)["spec"]["nodeName"] == status.host
    assert cluster.healthy(cluster.pod(namespace, replacement))
    assert [e.code for e in cluster.evictions if e.pod == name] == [201]


def test_a_move_of_a_pod_already_gone_ends_as_gone(fake, driver):
    shop_cluster(fake.cluster)
    handle = driver.start_move("db/ghost", "EVICT", None, "s:1")
    status = driver.poll_move(handle)
    assert status.state == "done"
    assert status.gone


# --------------------------------------------------------------------------- configuration


def test_kubeconfig_errors_fail_engine_start_with_a_clear_message(fake, tmp_path, fenix_clock):
    missing = tmp_path / "absent.yaml"
    with pytest.raises(PluginError, match=r"no kubeconfig at .*absent\.yaml"):
        Engine(clock=fenix_clock, plugins=[KubernetesCloud(kubeconfig=missing)])
    good = fake.write_kubeconfig(tmp_path / "config", context="lab")
    with pytest.raises(PluginError, match="context 'prod'"):
        Engine(clock=fenix_clock, plugins=[KubernetesCloud(kubeconfig=good, context="prod")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("clusters: [unclosed\n")
    with pytest.raises(PluginError, match="kubeconfig"):
        Engine(clock=fenix_clock, plugins=[KubernetesCloud(kubeconfig=broken)])
    with pytest.raises(PluginError, match="cannot be combined"):
        KubernetesDriver(kubeconfig=good, in_cluster=True)
    with pytest.raises(PluginError, match="in-cluster"):
        KubernetesDriver(in_cluster=True)


def test_a_kubeconfig_context_reaches_the_cluster(fake, tmp_path, fenix_clock):
    fake.cluster.add_node("only")
    path = fake.write_kubeconfig(tmp_path / "config", context="lab")
    cloud = KubernetesCloud(kubeconfig=path, context="lab")
    with Engine(clock=fenix_clock, plugins=[cloud], load_entry_points=False):
        assert cloud.driver is not None
        assert [h.name for h in cloud.driver.list_hosts()] == ["only"]


# --------------------------------------------------------------------------- notifications


def test_node_notifier_publishes_maintenance_on_the_node(fake, k8s_engine, fenix_clock):
    cluster = fake.cluster
    shop_cluster(cluster)
    engine = k8s_engine(NodeReboot(cluster, seconds=60))
    notifier = NodeNotifier(fake.api_client(), clock=fenix_clock).connect(engine)
    during: list[str] = []
    original = cluster.reboot_node

    def reboot(name, seconds):
        condition = [
            c for c in cluster.nodes[name]["status"]["conditions"] if c["type"] == CONDITION_TYPE
        ]
        during.append(condition[0]["status"])
        original(name, seconds)

    cluster.reboot_node = reboot
    sid = engine.create_session(
        SessionRequest(hosts=["node-3"], actions=[ActionSpec("reboot", "host")])
    )
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    notifier.disconnect()

    node = cluster.nodes["node-3"]
    assert during == ["True"]  # in maintenance while the action ran
    assert node["metadata"]["annotations"][STATE_ANNOTATION] == "MAINTENANCE_COMPLETE"
    condition = [c for c in node["status"]["conditions"] if c["type"] == CONDITION_TYPE]
    assert condition[0]["status"] == "False"
    assert condition[0]["reason"] == "MaintenanceComplete"
    assert any(c["type"] == "Ready" for c in node["status"]["conditions"])  # merged by type
    reasons = [
        e["reason"]
        for e in cluster.events
        if e["involvedObject"]["kind"] == "Node" and e["involvedObject"]["name"] == "node-3"
    ]
    assert reasons == ["InMaintenance", "MaintenanceComplete"]


# --------------------------------------------------------------------------- fake apiserver


def test_the_fake_answers_like_an_apiserver_to_what_it_does_not_serve(fake):
    fake.cluster.add_node("n")
    core = client.CoreV1Api(fake.api_client())
    with pytest.raises(ApiException) as bad_field:
        core.list_pod_for_all_namespaces(field_selector="spec.hostname=n")
    assert bad_field.value.status == 400
    assert "field label not supported" in json.loads(bad_field.value.body)["message"]
    with pytest.raises(ApiException) as json_patch:
        core.patch_node("n", [{"op": "add", "path": "/spec/unschedulable", "value": True}])
    assert json_patch.value.status == 415
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("nope", "default")
    body = json.loads(missing.value.body)
    assert (missing.value.status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    patched = core.patch_node("n", {"status": {"conditions": []}, "spec": {"unschedulable": True}})
    assert patched.spec.unschedulable
    assert patched.status.conditions  # status is only patched through /status
    assert ("PATCH", "/api/v1/nodes/n") in fake.app.requests


# ---------------------------------------------------------------------- control plane, emptyDir


def test_the_fake_refuses_to_evict_a_mirror_pod_and_lists_etcd_members_by_label(fake):
    cluster = fake.cluster
    cluster.add_node("cp-0", control_plane=True)
    cluster.add_etcd_member("cp-0")
    core = client.CoreV1Api(fake.api_client())

    members = core.list_namespaced_pod("kube-system", label_selector="component=etcd").items
    assert [(p.metadata.name, p.spec.node_name) for p in members] == [("etcd-cp-0", "cp-0")]
    assert "kubernetes.io/config.mirror" in members[0].metadata.annotations
    assert members[0].metadata.labels == {"component": "etcd", "tier": "control-plane"}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod_eviction(
            "etcd-cp-0",
            "kube-system",
            client.V1Eviction(metadata=client.V1ObjectMeta(name="etcd-cp-0")),
        )
    assert refused.value.status == 400
    assert "mirror" in json.loads(refused.value.body)["message"]
    assert cluster.pod("kube-system", "etcd-cp-0") is not None
    assert [e.code for e in cluster.evictions] == [400]


def test_the_fake_shows_pod_volumes_and_node_readiness_through_the_client(fake):
    cluster = fake.cluster
    cluster.add_node("n")
    cluster.add_replicaset("shop", "cache", ["n"], volumes=[{"name": "tmp", "emptyDir": {}}])
    core = client.CoreV1Api(fake.api_client())
    pod = core.list_namespaced_pod("shop").items[0]
    assert [(v.name, v.empty_dir is not None) for v in pod.spec.volumes] == [("tmp", True)]

    cluster.set_node_ready("n", False)
    ready = [c for c in core.read_node("n").status.conditions if c.type == "Ready"]
    assert [c.status for c in ready] == ["False"]
    # A plain patch of the node cannot make it Ready again: status is the kubelet's,
    # through /status.
    core.patch_node("n", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    ready = [c for c in core.read_node("n").status.conditions if c.type == "Ready"]
    assert [c.status for c in ready] == ["False"]


def test_the_etcd_quorum_guard_holds_a_control_plane_node_while_another_is_unwell(fake, driver):
    cluster = fake.cluster
    for name in ("cp-0", "cp-1", "cp-2"):
        cluster.add_node(name, control_plane=True)
        cluster.add_etcd_member(name)
    cluster.add_node("node-0")
    assert driver.host_guard("cp-0") is None

    cluster.set_node_ready("cp-1", False)
    cluster.set_pod_ready("kube-system", "etcd-cp-2", False)
    reason = driver.host_guard("cp-0")
    assert reason is not None
    assert "control-plane node cp-1 is not Ready" in reason
    assert "etcd member etcd-cp-2 on cp-2 is not Ready" in reason
    assert driver.host_guard("node-0") is None  # workers are never held back
    # The node's own etcd member does not hold it back (it is the one going down).
    cluster.set_node_ready("cp-1", True)
    cluster.set_pod_ready("kube-system", "etcd-cp-2", True)
    cluster.set_pod_ready("kube-system", "etcd-cp-0", False)
    assert driver.host_guard("cp-0") is None


def test_a_pod_with_emptydir_data_is_not_evicted_unless_the_driver_may(fake, fenix_clock):
    cluster = fake.cluster
    cluster.add_node("node-0")
    cluster.add_node("node-1")
    pod = cluster.add_replicaset(
        "shop", "cache", ["node-0"], volumes=[{"name": "c", "emptyDir": {}}]
    )
    pod_id = f"shop/{pod[0]['metadata']['name']}"
    careful = KubernetesDriver(fake.api_client(), clock=fenix_clock)
    status = careful.poll_move(careful.start_move(pod_id, "EVICT", None, "k-1"))
    assert status.state == "running"
    assert "emptyDir volumes: c" in status.detail
    assert cluster.evictions == []

    bold = KubernetesDriver(fake.api_client(), clock=fenix_clock, delete_emptydir_data=True)
    status = bold.poll_move(bold.start_move(pod_id, "EVICT", None, "k-2"))
    assert status.state == "running"
    assert [e.code for e in cluster.evictions] == [201]
    with pytest.raises(InvalidInput, match="delete_emptydir_data"):
        KubernetesDriver(fake.api_client(), delete_emptydir_data="yes")  # type: ignore[arg-type]
