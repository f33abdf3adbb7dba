"""The session's facts (allowed actions, the cloud's groups and their members:
fleet-sized) are written when they change, not with every operation the
session starts (issue 18: a step writes what changed; the operation number
is derived from the stored keys at load, and no row counts them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import drive
from sqlalchemy import event, select

from fenix_core import Engine, SessionRequest
from fenix_core.clock import SimClock
from fenix_core.placement_rules import PlacementRule
from fenix_core.store.schema import OperationRow, SessionStateRow
from fenix_core.testing import PlacedCloud

HOSTS = ("cmp-0", "cmp-1", "cmp-2", "cmp-3")


def _cloud(clock: SimClock) -> PlacedCloud:
    members = [f"vm-{h}-{k}" for h in range(3) for k in range(2)]
    cloud = PlacedCloud(clock=clock, placement=[PlacementRule("sg", "soft-anti-affinity", members)])
    for name in HOSTS:
        cloud.add_host(name, vcpus=8)
    for h in range(3):
        for k in range(2):
            cloud.add_instance(f"vm-{h}-{k}", "p", f"cmp-{h}")
    return cloud


def _run(tmp_path: Path, workflow: str) -> tuple[list[str], list[str], dict[str, Any]]:
    clock = SimClock()
    with Engine(
        f"sqlite:///{tmp_path / 'fenix.db'}",
        clock=clock,
        plugins=[_cloud(clock)],
        load_entry_points=False,
    ) as engine:
        written: list[str] = []

        def record(_c: Any, _cur: Any, statement: str, params: Any, *_r: Any) -> None:
            if statement.lstrip().startswith("INSERT INTO session_state"):
                rows = params if isinstance(params, list) else [params]
                written.extend(str(r[1]) for r in rows)

        event.listen(engine.database, "before_cursor_execute", record)
        sid = engine.create_session(SessionRequest(hosts=HOSTS, workflow=workflow))
        view = drive(engine, clock, sid)
        assert view.state == "MAINTENANCE_DONE", view.reason
        with engine.database.connect() as db:
            keys = [r[0] for r in db.execute(select(OperationRow.key))]
            facts = db.execute(
                select(SessionStateRow.body).where(SessionStateRow.component == "session")
            ).scalar_one()
    return written, keys, facts if isinstance(facts, dict) else json.loads(facts)


def test_starting_operations_does_not_rewrite_the_session_facts(tmp_path: Path) -> None:
    for workflow in ("rolling", "constrained"):
        (tmp_path / workflow).mkdir()
        written, keys, facts = _run(tmp_path / workflow, workflow)
        # Written once, when the session was created (the facts hold the
        # cloud's groups, fleet-sized); no row is written to count the
        # operations either (their number is derived from the keys at load).
        assert written.count("session") == 1, workflow
        assert "op_counter" not in facts
        assert written.count("ops") == 0, workflow
        numbers = sorted(int(k.rpartition(":")[2]) for k in keys)
        assert numbers == list(range(1, len(keys) + 1)), workflow  # no key twice, none skipped
