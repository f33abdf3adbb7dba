"""A rolling upgrade of an OpenStack cloud, host by host.

Every compute host in turn: its servers are moved away (live migration; the
projects here have no application manager, so the engine moves them itself),
its nova-compute service is disabled with the reason "maintenance session
<id>", the ``upgrade`` action runs, the service must be up again, and it is
enabled. Controllers (``--controllers``) get the action too.

    python examples/openstack_rolling_upgrade.py --cloud mycloud --controllers ctl-0
    python examples/openstack_rolling_upgrade.py --fake     # a local fake cloud

``--cloud`` names a clouds.yaml entry with an admin user (see
docs/openstack.md). The ``upgrade`` action here only waits
``--upgrade-seconds``: replace it with your own action plug-in. ``--fake``
starts a fake Nova + Keystone on a free loopback port and runs on simulated
time, so it finishes in a few seconds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from fenix_core import ActionSpec, Engine, SessionRequest, signals
from fenix_core.clock import Clock, RealClock, SimClock
from fenix_core.testing import TimedAction
from fenix_core_openstack import OpenStackCloud
from fenix_core_openstack.testing import FakeOpenStack


def build_fake(clock: Clock) -> FakeOpenStack:
    """Four computes with six servers of three projects (no controller: the fake
    cloud has compute hosts only; ``--controllers`` is for a real cloud)."""
    fake = FakeOpenStack(clock=clock, live_migration_seconds=45, migration_seconds=90)
    for index in range(4):
        fake.add_host(f"cmp-{index}", vcpus=16)
    servers = [("web-1", "web", 0), ("web-2", "web", 1), ("db-1", "db", 0)]
    servers += [("db-2", "db", 2), ("batch-1", "batch", 1), ("batch-2", "batch", 2)]
    for server_id, project, host in servers:
        fake.add_server(server_id, project, f"cmp-{host}", vcpus=4)
    fake.add_server_group("db-anti-affinity", "db", ["db-1", "db-2"])
    return fake


def show_progress(engine: Engine) -> list[Any]:
    """Print session and host notifications as they happen; returns the receivers."""

    def on_session(sender: Engine, payload: dict[str, Any]) -> None:
        when = sender.clock.now().strftime("%H:%M:%S")
        reason = f" ({payload['reason']})" if payload.get("reason") else ""
        print(f"{when} session {payload['state']} {payload['percent_done']}%{reason}")

    def on_host(sender: Engine, payload: dict[str, Any]) -> None:
        when = sender.clock.now().strftime("%H:%M:%S")
        print(f"{when}   {payload['host']} {payload['state']}")

    signals.maintenance_session.connect(on_session, sender=engine)
    signals.maintenance_host.connect(on_host, sender=engine)
    return [on_session, on_host]  # blinker holds receivers weakly: keep them alive


def run(cloud: OpenStackCloud, clock: Clock, args: argparse.Namespace) -> int:
    upgrade = TimedAction("upgrade", seconds=args.upgrade_seconds)
    with Engine(database_url=args.database, clock=clock, plugins=[cloud, upgrade]) as engine:
        receivers = show_progress(engine)
        hosts = [h.name for h in engine.plugins.require_driver().list_hosts()]
        print(f"hosts: {', '.join(hosts)}")
        sid = engine.create_session(
            SessionRequest(hosts=args.hosts or (), actions=[ActionSpec("upgrade", "host")])
        )
        view = engine.run_until_done(sid)
        del receivers
        print(f"{view.state}: {len(view.hosts)} hosts, reason: {view.reason or 'none'}")
        return 0 if view.state == "MAINTENANCE_DONE" else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--cloud", help="a clouds.yaml cloud with an admin user")
    where.add_argument("--fake", action="store_true", help="run on a local fake cloud")
    parser.add_argument("--controllers", nargs="*", default=[], help="controller host names")
    parser.add_argument("--hosts", nargs="*", help="hosts to maintain (default: all)")
    parser.add_argument("--upgrade-seconds", type=float, default=600.0)
    parser.add_argument("--database", default="sqlite://", help="e.g. sqlite:///fenix.db")
    args = parser.parse_args(argv)
    if not args.fake:
        return run(
            OpenStackCloud(cloud=args.cloud, controllers=args.controllers), RealClock(), args
        )
    clock = SimClock()
    with build_fake(clock) as fake:
        status = run(OpenStackCloud(connection=fake.connect(), poll_interval=15), clock, args)
        moves = [e for e in fake.events if e.kind == "migration_done"]
        toggles = [e for e in fake.events if e.kind in ("disable_host", "enable_host")]
        print(f"fake cloud: {len(moves)} migrations, {len(toggles)} service toggles")
        for event in toggles:
            print(f"  {event.time:%H:%M:%S} {event.kind} {event.host}")
        return status


if __name__ == "__main__":
    sys.exit(main())
