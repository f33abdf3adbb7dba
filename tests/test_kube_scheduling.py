"""The plan's model of kube-scheduler (fenix_core.kube_scheduling): the
scenario section it reads and writes, and its filters (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fenix_core.errors import InvalidInput
from fenix_core.kube_scheduling import (
    Candidate,
    ClusterScheduling,
    NodeInputs,
    PodInputs,
    Requests,
    best_node,
    lasting_taints,
    pod_requests,
)
from fenix_core.sim.scenario import parse_scenario

CP_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
TOLERATES_CP = {"key": CP_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}


def test_filters_that_last_the_session() -> None:
    cp = NodeInputs(4000, 2**34, taints=lasting_taints([CP_TAINT]))
    worker = NodeInputs(4000, 2**34)
    plain = PodInputs(Requests(500))
    dns = PodInputs(Requests(500), tolerations=(TOLERATES_CP,))
    pinned = PodInputs(
        Requests(500), (TOLERATES_CP,), {"node-role.kubernetes.io/control-plane": ""}
    )
    cp_labels = {"node-role.kubernetes.io/control-plane": ""}
    assert [plain.may_run_on(cp, cp_labels), plain.may_run_on(worker, {})] == [False, True]
    assert [dns.may_run_on(cp, cp_labels), dns.may_run_on(worker, {})] == [True, True]
    assert [pinned.may_run_on(cp, cp_labels), pinned.may_run_on(worker, {})] == [True, False]
    # A cordon's and a condition's taints, and the steering taint, come and go.
    passing = [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
        {"key": "fenix-core/queued", "value": "s", "effect": "PreferNoSchedule"},
        {"key": "dedicated", "value": "gpu", "effect": "PreferNoSchedule"},
    ]
    assert lasting_taints(passing) == ()
    assert plain.steered("fenix-core/queued")
    assert not PodInputs(Requests(), ({"operator": "Exists"},)).steered("fenix-core/queued")


def test_init_containers_count_when_larger() -> None:
    found = pod_requests([{"cpu": 200, "memory": None}], [{"cpu": 700, "memory": 10}])
    assert found == Requests(700, 10, 700, 200 * 1024**2)


def test_the_section_round_trips_and_bad_input_names_the_field() -> None:
    section = ClusterScheduling(
        {
            "cp-0": NodeInputs(
                4000, 2**34, Requests(100, 0, 200, 2**20), ({"key": "k", "effect": "NoSchedule"},)
            )
        },
        {
            "ns/dns": PodInputs(
                Requests(100, 70),
                ({"key": "k", "operator": "Exists", "tolerationSeconds": 5},),
                {"a": "b"},
            )
        },
    )
    assert ClusterScheduling.from_dict(section.to_dict()) == section
    for data, field in (
        ({"kind": "nova"}, "scheduler.kind"),
        (
            {"kind": "kubernetes", "nodes": {"n": {"cpu_m": -1, "memory": 0}}},
            "scheduler.nodes.n.cpu_m",
        ),
        (
            {"kind": "kubernetes", "nodes": {"n": {"cpu_m": 1, "memory": 0, "x": 1}}},
            "scheduler.nodes.n.x",
        ),
        (
            {"kind": "kubernetes", "pods": {"p": {"requests": {"cpu": 1}}}},
            "scheduler.pods.p.requests.cpu",
        ),
    ):
        with pytest.raises(InvalidInput) as caught:
            ClusterScheduling.from_dict(data)
        assert caught.value.field == field


def _scenario(scheduler: object) -> dict[str, object]:
    return {
        "hosts": [{"name": "h0", "vcpus": 4}, {"name": "h1", "vcpus": 4}],
        "instances": [{"id": "ns/a", "project": "ns", "host": "h0"}],
        "scheduler": scheduler,
    }


def test_a_scenario_checks_its_scheduler_section() -> None:
    good = {
        "kind": "kubernetes",
        "nodes": {"h0": {"cpu_m": 4000, "memory": 2**34}},
        "pods": {"ns/a": {}},
    }
    assert parse_scenario(_scenario(good)).scheduler is not None
    with pytest.raises(InvalidInput, match="no host 'h9'"):
        parse_scenario(
            _scenario({"kind": "kubernetes", "nodes": {"h9": {"cpu_m": 1, "memory": 1}}})
        )
    with pytest.raises(InvalidInput, match="no instance 'ns/b'"):
        parse_scenario(_scenario({"kind": "kubernetes", "pods": {"ns/b": {}}}))
    with pytest.raises(InvalidInput, match="scheduler"):
        parse_scenario(_scenario({"kind": "kubernetes", "nodes": {"h0": {"cpu_m": "4"}}}))


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=6),
    st.integers(0, 3900),
    st.integers(1, 2000),
)
def test_on_equal_load_the_fewest_taints_win(taints, load, cpu_m) -> None:
    pod = Requests(cpu_m, 0, cpu_m, 200 * 1024**2)
    nodes = [
        Candidate(f"n{i}", 4000, 2**34, Requests(load, 0, load, 0), t) for i, t in enumerate(taints)
    ]
    chosen = best_node(pod, nodes)
    fewest = min(taints)
    assert chosen == f"n{taints.index(fewest)}"


@given(
    st.lists(st.integers(0, 3900), min_size=1, max_size=6),
    st.integers(0, 2),
    st.integers(1, 2000),
)
def test_on_equal_taints_the_least_cpu_wins(loads, taints, cpu_m) -> None:
    """Without memory requests, more CPU requested lowers both LeastAllocated
    and BalancedAllocation: the least loaded node wins, the first among
    equals (kube-scheduler would draw one of them at random)."""
    pod = Requests(cpu_m, 0, cpu_m, 200 * 1024**2)
    nodes = [
        Candidate(f"n{i}", 4000, 2**34, Requests(c, 0, c, 0), taints) for i, c in enumerate(loads)
    ]
    chosen = best_node(pod, nodes)
    assert chosen is not None
    load = {n.name: n.requested.cpu_m for n in nodes}
    # A less loaded node scores at least as much (the scores are whole
    # numbers, so close loads tie): it lost only on the name.
    assert all(name > chosen for name, c in load.items() if c < load[chosen])


def test_the_simulated_scheduler_counts_what_lands_and_leaves() -> None:
    """KubeScheduledCloud keeps each node's requested resources as pods land
    and leave (moves in flight counted where they arrive), and places each
    move by the scores, not where it was asked to."""

    from fenix_core.testing import KubeScheduledCloud, SimClock

    pods = {
        f"ns/p{i}": PodInputs(Requests(500 * (i + 1), 0, 500 * (i + 1), 2**20)) for i in range(4)
    }
    nodes = {h: NodeInputs(4000, 2**34) for h in ("a", "b", "c")}
    clock = SimClock()
    cloud = KubeScheduledCloud(scheduling=ClusterScheduling(nodes, pods), clock=clock)
    for h in nodes:
        cloud.add_host(h, vcpus=4)
    cloud.add_instance("ns/p0", "ns", "b", vcpus=1)  # 500m
    cloud.add_instance("ns/p1", "ns", "a", vcpus=1)  # 1000m
    cloud.add_instance("ns/p3", "ns", "a", vcpus=2)  # 2000m

    def recount() -> dict[str, Requests]:
        counted: dict[str, Requests] = {}
        for pid in pods:
            host = cloud.host_of(pid)
            if host is not None:
                counted[host] = counted.get(host, Requests()) + pods[pid].requests
        return counted

    assert {h: r for h, r in cloud._requested.items() if r != Requests()} == recount()
    cloud.disable_host("a", "maintenance")
    cloud.start_move("ns/p1", "MIGRATE", "b", "k1")  # c is empty: it goes there
    assert [e.detail for e in cloud.events if e.kind == "migration_started"] == ["c"]
    assert cloud._requested["c"] == pods["ns/p1"].requests  # counted on its way
    # c (p1's 1000m on its way) now scores below b (500m): 124 against 136;
    # were the move in flight not counted, c (empty) would win.
    cloud.start_move("ns/p3", "MIGRATE", "c", "k2")
    assert [e.detail for e in cloud.events if e.kind == "migration_started"][-1] == "b"
    clock.advance(300)
    cloud.list_hosts()
    assert (cloud.host_of("ns/p1"), cloud.host_of("ns/p3")) == ("c", "b")
    assert {h: r for h, r in cloud._requested.items() if r != Requests()} == recount()
