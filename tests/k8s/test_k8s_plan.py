"""Planning from the live (fake) Kubernetes cluster: read-only, budgets and
anti-affinity as groups, exported as a scenario that re-plans the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
