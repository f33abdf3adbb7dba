"""Upgrade the nodes of a Kubernetes cluster one by one with fenix-core.

Each node is cordoned, its pods are evicted through the Eviction API (their
PodDisruptionBudgets decide when), the upgrade runs, the node must come back
Ready, and it is uncordoned before the next one.

    python examples/k8s_node_upgrade.py --fake          # a simulated cluster, in seconds
    python examples/k8s_node_upgrade.py --context lab   # a real cluster (kubeconfig)
    python examples/k8s_node_upgrade.py --in-cluster --nodes node-1,node-2

On a real cluster the "upgrade" here only waits ``--upgrade-seconds``: put
your own action plug-in (run the package upgrade, reboot through your
tooling) in its place. The namespace given with ``--manager`` gets a scripted
application manager that answers fenix-core's notifications, to show the
dialogue.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from fenix_core import ActionSpec, Engine, SessionRequest, signals
from fenix_core.clock import Clock, RealClock
from fenix_core.testing import ScriptedManager, SimClock, TimedAction


def build_fake_cluster(cluster: Any) -> None:
    """A control plane, four workers, a web shop and a database with budgets."""
    cluster.add_node("control-plane-0", control_plane=True)
    for index in range(4):
        cluster.add_node(f"worker-{index}", cpu="4")
    cluster.add_replicaset("shop", "web", ["worker-0", "worker-0", "worker-1", "worker-2"])
    cluster.add_pdb("shop", "web", {"app": "web"}, max_unavailable=1)
    cluster.add_statefulset("db", "pg", ["worker-0", "worker-1", "worker-2"], anti_affinity=True)
    cluster.add_pdb("db", "pg", {"app": "pg"}, min_available=2)
    cluster.add_daemonset("kube-system", "kube-proxy")


def progress(engine: Engine, clock: Clock) -> None:
    def stamp() -> str:
        return clock.now().strftime("%H:%M:%S")

    def on_session(_sender: Engine, payload: dict[str, Any]) -> None:
        reason = f" ({payload['reason']})" if payload.get("reason") else ""
        print(f"{stamp()} session {payload['state']} {payload['percent_done']}%{reason}")

    def on_host(_sender: Engine, payload: dict[str, Any]) -> None:
        print(f"{stamp()}   node {payload['host']}: {payload['state']}")

    def on_planned(_sender: Engine, payload: dict[str, Any]) -> None:
        pods = ", ".join(payload["instance_ids"])
        print(f"{stamp()}   -> namespace {payload['project_id']}: {payload['state']} [{pods}]")

    signals.maintenance_session.connect(on_session, sender=engine, weak=False)
    signals.maintenance_host.connect(on_host, sender=engine, weak=False)
    signals.maintenance_planned.connect(on_planned, sender=engine, weak=False)


def run(args: argparse.Namespace, clock: Clock, cloud: Any, action: Any) -> int:
    engine = Engine(database_url=args.database, clock=clock, plugins=[cloud, action])
    progress(engine, clock)
    manager = ScriptedManager(engine, args.manager, action="EVICT") if args.manager else None
    hosts = [h for h in args.nodes.split(",") if h] if args.nodes else []
    sid = engine.create_session(
        SessionRequest(hosts=hosts, actions=[ActionSpec(action.name, "host")])
    )
    view = engine.run_until_done(sid)
    if manager is not None:
        manager.close()
    engine.close()
    for host in view.hosts:
        print(f"  {host.name:<18} {host.state}")
    if view.state != "MAINTENANCE_DONE":
        print(f"{view.state}: {view.reason}")
        return 1
    print(f"{view.state}: {len(view.hosts)} node(s) upgraded")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--fake", action="store_true", help="run on a simulated cluster")
    where.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--nodes", help="comma-separated nodes (default: every node)")
    parser.add_argument("--manager", default="db", help="namespace with a scripted manager")
    parser.add_argument("--upgrade-seconds", type=float, default=60.0)
    parser.add_argument("--database", default="sqlite://", help="where sessions are kept")
    args = parser.parse_args(argv)

    from fenix_core_k8s import KubernetesCloud

    if not args.fake:
        cloud = KubernetesCloud(
            kubeconfig=args.kubeconfig,
            context=args.context,
            in_cluster=True if args.in_cluster else None,
        )
        return run(args, RealClock(), cloud, TimedAction("upgrade", args.upgrade_seconds))

    from fenix_core_k8s.testing import FakeApiServer, NodeReboot

    clock = SimClock()
    with FakeApiServer(clock=clock) as fake:
        build_fake_cluster(fake.cluster)
        code = run(
            args,
            clock,
            KubernetesCloud(api_client=fake.api_client()),
            NodeReboot(fake.cluster, "upgrade", args.upgrade_seconds),
        )
        refused = sum(1 for e in fake.cluster.evictions if e.code == 429)
        granted = sum(1 for e in fake.cluster.evictions if e.code == 201)
        broken = fake.cluster.budget_violations()
        print(
            f"{granted} pod(s) evicted, {refused} eviction(s) held back by a "
            f"PodDisruptionBudget, {len(broken)} budget violation(s)"
        )
        return code if not broken else 1


if __name__ == "__main__":
    sys.exit(main())
