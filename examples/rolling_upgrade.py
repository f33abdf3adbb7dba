"""A rolling upgrade of a simulated cloud, shown as it happens.

8 compute hosts and 2 controllers, three projects:

* ``vnf-scaler``: an application manager that scales in when asked (the cloud
  is too full to empty a host otherwise) and back out at the end;
* ``web``: no manager: the engine live-migrates its instances itself;
* ``db-ha``: an active/standby pair with a manager that live-migrates.

Every host gets a 15-minute ``upgrade`` action. The run uses simulated time
(a few hours of maintenance take a few seconds) and replays it as a time-lapse:
``--speed`` simulated seconds per real second; ``--speed 0`` runs flat out.

    python examples/rolling_upgrade.py            # live display
    python examples/rolling_upgrade.py --plain    # one line per event (logs, CI)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from fenix_core import ActionSpec, Engine, SessionRequest, signals
from fenix_core.cli.display import HOST_COLOURS, describe
from fenix_core.testing import (
    ScriptedManager,
    SimClock,
    SimulatedCloud,
    TimedAction,
    migrations_per_instance,
    violations,
)

START = datetime(2026, 11, 28, 1, 0, tzinfo=datetime.now().astimezone().tzinfo).astimezone()


def build_cloud() -> SimulatedCloud:
    cloud = SimulatedCloud(migration_seconds=60, live_migration_seconds=30)
    for index in range(2):
        cloud.add_host(f"ctl-{index}", type="controller", vcpus=32)
    for index in range(8):
        cloud.add_host(f"cmp-{index}", vcpus=16)
    # vnf-scaler: 4 vcpus on every compute; web: 8 vcpus on every compute;
    # db-ha: a 4-vcpu pair on cmp-0 and cmp-1. The cloud is full: no host can
    # be emptied until vnf-scaler gives some room back.
    for index in range(8):
        cloud.add_instance(f"vnf-{index}", "vnf-scaler", f"cmp-{index}", vcpus=4)
        cloud.add_instance(f"web-{index}a", "web", f"cmp-{index}", vcpus=4)
        cloud.add_instance(f"web-{index}b", "web", f"cmp-{index}", vcpus=4)
    cloud.add_instance("db-active", "db-ha", "cmp-0", vcpus=4)
    cloud.add_instance("db-standby", "db-ha", "cmp-1", vcpus=4)
    for index in range(2, 8):
        cloud.add_instance(f"cache-{index}", "web", f"cmp-{index}", vcpus=4)
    return cloud


class Display:
    """Renders the session from its notifications; paces the replay."""

    def __init__(self, engine: Engine, console: Console, *, speed: float, plain: bool) -> None:
        self.engine = engine
        self.console = console
        self.speed = speed
        self.plain = plain
        self.session_id: str | None = None
        self.events: list[str] = []
        self.last_time = engine.clock.now()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            console=console,
        )
        self.task = self.progress.add_task("starting", total=100)
        self.live: Live | None = None
        for signal in signals.SIGNALS.values():
            signal.connect(self.on_signal, sender=engine)

    def on_signal(self, sender: Engine, payload: dict[str, Any]) -> None:
        line = describe(payload)
        if line is None:
            return
        now = sender.clock.now()
        stamp = (now.astimezone(START.tzinfo)).strftime("%H:%M:%S")
        self.events.append(f"[cyan]{stamp}[/] {line}")
        if self.plain:
            self.console.print(f"{stamp} {line}", highlight=False)
        self.pace(now)
        self.refresh()

    def pace(self, now: datetime) -> None:
        # Replay only: the engine itself never sleeps. Simulated time that
        # passed since the last event is shown at `speed` x real time.
        if self.speed > 0:
            elapsed = (now - self.last_time).total_seconds() / self.speed
            time.sleep(min(elapsed, 0.6))
        self.last_time = now

    def refresh(self) -> None:
        if self.live is None or self.session_id is None:
            return
        view = self.engine.get_session(self.session_id)
        self.progress.update(self.task, completed=view.percent_done, description=view.state)
        self.live.update(self.render(view))

    def render(self, view: Any) -> Group:
        table = Table(title="hosts", expand=False)
        for column in ("host", "type", "state", "started", "finished"):
            table.add_column(column)
        for host in view.hosts:
            colour = HOST_COLOURS.get(host.state, "")
            table.add_row(
                host.name,
                host.type,
                f"[{colour}]{host.state}[/]",
                clock_time(host.started_at),
                clock_time(host.finished_at),
            )
        log = Panel("\n".join(self.events[-14:]), title="notifications", height=16)
        return Group(self.progress, table, log)


def clock_time(value: datetime | None) -> str:
    return value.astimezone(START.tzinfo).strftime("%H:%M") if value else ""


def summary(engine: Engine, session_id: str, cloud: SimulatedCloud, start: datetime) -> Table:
    view = engine.get_session(session_id)
    moved_off: dict[str, int] = {}
    for event in cloud.events:
        if event.kind == "migration_done" and event.detail:
            moved_off[event.detail] = moved_off.get(event.detail, 0) + 1
    table = Table(title=f"session {view.state}: per-host summary")
    for column in ("host", "type", "state", "started", "finished", "took", "instances moved off"):
        table.add_column(
            column, justify="right" if column in ("took", "instances moved off") else "left"
        )
    for host in view.hosts:
        took = (
            f"{(host.finished_at - host.started_at).total_seconds() / 60:.0f} min"
            if host.started_at and host.finished_at
            else ""
        )
        table.add_row(
            host.name,
            host.type,
            host.state,
            clock_time(host.started_at),
            clock_time(host.finished_at),
            took,
            str(moved_off.get(host.name, 0)),
        )
    end = engine.clock.now()
    migrations = sum(1 for e in cloud.events if e.kind == "migration_done")
    table.caption = (
        f"simulated makespan {(end - start).total_seconds() / 3600:.1f} h, {migrations} migrations"
    )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--speed",
        type=float,
        default=3600.0,
        help="simulated seconds shown per real second (0: no pause; default 3600)",
    )
    parser.add_argument("--plain", action="store_true", help="print events, no live display")
    args = parser.parse_args(argv)

    console = Console()
    clock = SimClock(start=START)
    cloud = build_cloud()
    upgrade = TimedAction("upgrade", seconds=15 * 60)
    engine = Engine(clock=clock, plugins=[cloud, upgrade])
    display = Display(engine, console, speed=args.speed, plain=args.plain)
    managers = [
        ScriptedManager(engine, "vnf-scaler", cloud=cloud, scale_in=4, delay=20),
        ScriptedManager(engine, "db-ha", cloud=cloud, action="LIVE_MIGRATE", delay=5),
    ]
    request = SessionRequest(
        actions=[ActionSpec("upgrade", "host", metadata={"to": "2026.2"})],
        metadata={"openstack_version": "2026.2"},
        maintenance_at=START + timedelta(minutes=5),
    )
    session_id = engine.create_session(request)
    display.session_id = session_id
    console.print(
        f"[bold]fenix-core[/] rolling upgrade of {len(cloud.list_hosts())} hosts, "
        f"{len(cloud.list_instances())} instances, simulated from {START:%H:%M}"
    )
    if args.plain:
        view = engine.run_until_done(session_id)
    else:
        with Live(console=console, refresh_per_second=12, transient=True) as live:
            display.live = live
            view = engine.run_until_done(session_id)
    console.print(summary(engine, session_id, cloud, START))
    for manager in managers:
        for error in manager.errors:
            console.print(f"[red]{manager.project_id}: reply refused: {error}[/]")
    broken = violations(cloud)
    engine.close()
    for problem in broken:
        console.print(f"[red]{problem}[/]")
    if view.state != "MAINTENANCE_DONE" or broken:
        console.print(f"[bold red]{view.state}[/]: {view.reason or 'rules broken, see above'}")
        return 1
    moved = migrations_per_instance(cloud)
    console.print(
        f"[bold green]MAINTENANCE_DONE[/]: {len(view.hosts)} hosts upgraded; "
        f"{len(moved)} instances moved, most {max(moved.values(), default=0)} time(s) each; "
        "no host was taken out of service with an instance on it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
