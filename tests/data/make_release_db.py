"""Make ``release-midrun.sqlite`` (and the simulated cloud's and the action's
state files beside it): a database written by the current release with two
unfinished sessions, the guard that a later schema upgrades it and resumes them.

* a ``rolling`` session on cmp-0..cmp-2, mid-drain: a live migration running
  in the simulated cloud, a reply of p2 recorded and not yet processed, and
  notifications committed but never delivered (the writer stopped while
  delivering them, as a process killed at that point would);
* a ``constrained`` session on cmp-3..cmp-5 between waves: its first host
  done, the next one held back by the group's recovery time.

Run it with TODAY's code, from the repository root, only when the release
changes (the file must keep what an older release wrote)::

    .venv/bin/python tests/data/make_release_db.py

Everything runs on a SimClock from ``T0`` with fixed session ids and worker
id, so two runs write the same rows. The test that resumes it is
``tests/test_migrations.py::test_a_session_of_the_previous_release_resumes``;
it imports ``scenario_engine`` from here so both sides wire the same plug-ins.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from fenix_core import ActionSpec, Engine, SessionRequest, signals
from fenix_core.clock import SimClock
from fenix_core.errors import Conflict
from fenix_core.testing import ScriptedManager, SimulatedCloud, TimedAction

HERE = Path(__file__).resolve().parent
DATABASE = HERE / "release-midrun.sqlite"
CLOUD_STATE = HERE / "release-midrun.cloud.json"
ACTION_STATE = HERE / "release-midrun.action.json"
META = HERE / "release-midrun.json"

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORKER = "release-writer"
HOST_WORK = 300.0
MIGRATION = 120.0
UPGRADE = [ActionSpec(plugin="upgrade", type="host")]

#: host -> [(instance, project, vcpus)]
ROLLING = {
    "cmp-0": [("vm-a", "p1", 2), ("vm-b", "p2", 2)],
    "cmp-1": [("vm-c", "p1", 2)],
    "cmp-2": [("vm-d", "p2", 2)],
}
CONSTRAINED = {
    "cmp-3": [("db-0", "p3", 2)],
    "cmp-4": [("db-1", "p3", 2)],
    "cmp-5": [],
}
PROJECTS = ("p1", "p2", "p3")
#: What each manager answers for its instances (None: what the engine proposes).
ACTIONS: dict[str, str | None] = {"p1": "LIVE_MIGRATE", "p2": "LIVE_MIGRATE", "p3": "LIVE_MIGRATE"}


def build_cloud(state_path: Path, clock: SimClock) -> SimulatedCloud:
    cloud = SimulatedCloud(
        state_path=state_path,
        clock=clock,
        migration_seconds=MIGRATION,
        live_migration_seconds=MIGRATION,
    )
    for layout in (ROLLING, CONSTRAINED):
        for host, instances in layout.items():
            cloud.add_host(host, vcpus=8)
            for instance_id, project_id, vcpus in instances:
                cloud.add_instance(instance_id, project_id, host, vcpus=vcpus)
    return cloud


def scenario_engine(
    url: str, clock: SimClock, cloud_state: Path, action_state: Path
) -> tuple[Engine, SimulatedCloud, TimedAction, dict[str, ScriptedManager]]:
    """The engine, plug-ins and managers of the scenario, over state files
    that exist already (the cloud's) or not yet (the action's)."""
    cloud = SimulatedCloud(state_path=cloud_state, clock=clock)
    action = TimedAction("upgrade", HOST_WORK, state_path=action_state)
    engine = Engine(
        url,
        clock=clock,
        plugins=[cloud, action],
        load_entry_points=False,
        worker_id=WORKER,
        lease_clock=clock,
    )
    managers = {p: ScriptedManager(engine, p, cloud=cloud, action=ACTIONS[p]) for p in PROJECTS}
    return engine, cloud, action, managers


class _WriterStopped(BaseException):
    """Raised from a signal receiver: the writer stops while delivering (a
    BaseException, so the engine's per-receiver ``except Exception`` lets it out)."""


@contextmanager
def _fixed_ids() -> Iterator[None]:
    counter = itertools.count(1)
    with mock.patch(
        "fenix_core.engine.uuid.uuid4", side_effect=lambda: uuid.UUID(int=next(counter))
    ):
        yield


def _moving(engine: Engine, session_id: str) -> list[str]:
    return [
        op.instance_id or ""
        for op in engine.list_operations(session_id)
        if op.kind == "move" and op.status == "running"
    ]


def _run_until(engine: Engine, clock: SimClock, until: datetime) -> None:
    while clock.now() < until:
        if not engine.step():
            wake = engine.next_wake()
            clock.advance_to(until if wake is None else min(max(wake, clock.now()), until))


def make(directory: Path = HERE, *, stop: bool = True) -> dict[str, Any]:
    """Write the database and the state files into ``directory``; return the
    facts the resuming test checks against (also written to ``META``).

    ``stop=False`` runs the same scenario to its end instead: the reference
    a resumed run is compared with."""
    database = directory / DATABASE.name
    cloud_state = directory / CLOUD_STATE.name
    action_state = directory / ACTION_STATE.name
    for path in (database, cloud_state, action_state):
        path.unlink(missing_ok=True)
    clock = SimClock(start=T0)
    build_cloud(cloud_state, clock)
    with _fixed_ids():
        engine, _cloud, _action, managers = scenario_engine(
            f"sqlite:///{database}", clock, cloud_state, action_state
        )
        engine.set_group_constraints(
            {"group_id": "db", "project_id": "p3", "max_impacted_members": 1, "recovery_time": 600}
        )
        for instance_id in ("db-0", "db-1"):
            engine.set_instance_constraints(
                {"instance_id": instance_id, "project_id": "p3", "group_id": "db"}
            )
        constrained = engine.create_session(
            SessionRequest(workflow="constrained", hosts=tuple(CONSTRAINED), actions=UPGRADE)
        )
        # The constrained session runs alone for a minute: its first wave's
        # migration is under way when the rolling one starts.
        _run_until(engine, clock, T0 + timedelta(seconds=60))
        rolling = engine.create_session(SessionRequest(hosts=tuple(ROLLING), actions=UPGRADE))

        def stop_after_p3_answered(_sender: Engine, payload: dict[str, Any]) -> None:
            if (
                payload["session_id"] == constrained
                and payload["state"] == "PLANNED_MAINTENANCE"
                and payload["instance_ids"] == ["db-1"]
                and _moving(engine, rolling)
            ):
                # blinker calls receivers in no fixed order: answer as p3's
                # manager would, unless it has answered already.
                with suppress(Conflict):
                    engine.reply(
                        constrained, "p3", "ACK_PLANNED_MAINTENANCE", {"db-1": "LIVE_MIGRATE"}
                    )
                raise _WriterStopped

        if stop:
            signals.maintenance_planned.connect(stop_after_p3_answered, sender=engine, weak=False)
        try:
            for _ in range(1000):
                if not engine.step():
                    wake = engine.next_wake()
                    if wake is None:
                        break
                    clock.advance_to(max(wake, clock.now()))
            if stop:
                raise RuntimeError("the scenario never reached its stopping point: adjust it")
        except _WriterStopped:
            pass
        facts = {
            "rolling": rolling,
            "constrained": constrained,
            "stopped_at": clock.now().isoformat(),
            "moving": _moving(engine, rolling),
            "manager_errors": [str(e) for m in managers.values() for e in m.errors],
        }
        engine.close()
    if stop:
        with closing(sqlite3.connect(database)) as connection:
            # One table or index per page: small pages keep the committed file small.
            connection.execute("PRAGMA journal_mode = DELETE")
            connection.execute("PRAGMA page_size = 1024")
            connection.execute("VACUUM")
    (directory / META.name).write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    return facts


if __name__ == "__main__":
    print(json.dumps(make(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE), indent=1))
