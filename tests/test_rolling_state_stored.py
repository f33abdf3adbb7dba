"""The rolling workflow's stored state and a migration under way (issue 18).

Schema 2 of ``RollingState`` keeps the drain's one migration only while it
waits (``waiting_move``); under way, its instance (IN_ACTION on the drained
host) says which. So a move step, which ends one migration and starts the
next, does not rewrite the component: before, its ``moving`` changed at
nearly every step. A body of schema 1 (``moving``, under way or not) still
reads, and a session stored either way mid-migration resumes in a new
engine without a second migration off the host and without moving anything
twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.clock import SimClock
from fenix_core.contract import ContractError
from fenix_core.core import working_set
from fenix_core.testing import SimulatedCloud, TimedAction
from fenix_core.workflows import RollingState

UPGRADE = [ActionSpec("upgrade", "host")]
# Four hosts of 20 vCPUs with eight instances of 1 or 2 vCPUs each.
LAYOUT = {
    f"cmp-{h}": [(f"vm-{h}-{k}", f"p{(h + k) % 2}", 1 + (k % 2)) for k in range(8)]
    for h in range(4)
}


def cloud_of() -> SimulatedCloud:
    cloud = SimulatedCloud(migration_seconds=30, live_migration_seconds=30)
    for host, instances in LAYOUT.items():
        cloud.add_host(host, vcpus=20)
        for instance_id, project_id, vcpus in instances:
            cloud.add_instance(instance_id, project_id, host, vcpus=vcpus)
    return cloud


def engine_on(url: str, clock: SimClock, cloud: SimulatedCloud) -> Engine:
    return Engine(
        url, clock=clock, plugins=[cloud, TimedAction("upgrade", 60)], load_entry_points=False
    )


def migrations(cloud: SimulatedCloud, kind: str) -> Counter[str]:
    return Counter(e.instance_id or "" for e in cloud.events if e.kind == kind)


def most_at_once_off_a_host(cloud: SimulatedCloud) -> int:
    """The most migrations that ran off one host at the same time."""
    running: Counter[str] = Counter()
    source: dict[str, str] = {}
    most = 0
    for event in cloud.events:
        if event.kind == "migration_started" and event.host is not None:
            source[event.instance_id or ""] = event.host
            running[event.host] += 1
            most = max(most, running[event.host])
        elif event.kind in ("migration_done", "migration_failed"):
            running[source.pop(event.instance_id or "")] -= 1
    return most


def reference() -> tuple[Counter[str], datetime]:
    """The session run without a stop: what moved, and when it ended."""
    clock, cloud = SimClock(), cloud_of()
    with engine_on("sqlite://", clock, cloud) as engine:
        sid = engine.create_session(SessionRequest(actions=UPGRADE))
        assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    return migrations(cloud, "migration_done"), clock.now()


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The components written into the working set, in order (a body equal
    to the stored one is not a write)."""
    seen: list[str] = []
    original = working_set.WorkingSet.set_component

    def recording(self: Any, component: str, schema_version: int, body: Any) -> None:
        rec = self.components.get(component)
        if rec is None or rec.body != body:
            seen.append(component)
        original(self, component, schema_version, body)

    monkeypatch.setattr(working_set.WorkingSet, "set_component", recording)
    return seen


def test_a_move_step_does_not_rewrite_the_rolling_state(written: list[str]) -> None:
    moved, _ = reference()
    written.clear()
    clock, cloud = SimClock(), cloud_of()
    with engine_on("sqlite://", clock, cloud) as engine:
        sid = engine.create_session(SessionRequest(actions=UPGRADE))
        assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert migrations(cloud, "migration_done") == moved
    moves = sum(moved.values())
    # A host's drain and maintenance write the state a few times each (its
    # stages, the drain's start and end), never once per migration: before,
    # every migration's start and end did.
    rolling = written.count(RollingState.component)
    assert rolling < moves


def test_a_body_of_schema_1_reads_its_moving_as_the_one_migration() -> None:
    body = {**RollingState(drain_host="cmp-0", phase="drain").to_json(), "moving": "vm-0-1"}
    del body["waiting_move"]
    state = RollingState.from_json(body, 1)
    assert state == RollingState(drain_host="cmp-0", phase="drain", waiting_move="vm-0-1")
    assert "moving" not in state.to_json()
    with pytest.raises(ContractError, match="schema version 3"):
        RollingState.from_json(state.to_json(), 3)


def stored(db: Path, sid: str) -> tuple[int, dict[str, Any]]:
    with closing(sqlite3.connect(db)) as conn:
        version, text = conn.execute(
            "SELECT schema_version, body FROM session_state"
            " WHERE session_id = ? AND component = 'rolling'",
            (sid,),
        ).fetchone()
    return version, json.loads(text)


@pytest.mark.parametrize("schema", [1, 2])
def test_a_session_stored_with_a_migration_under_way_resumes(tmp_path: Path, schema: int) -> None:
    """Stopped while a migration runs with more waiting on its host: a new
    engine finds which one runs (from its instance; a schema-1 body names it
    in ``moving``), starts no second one off that host, moves nothing twice
    and ends as the run without a stop does."""
    moved, ended = reference()
    db = tmp_path / "fenix.db"
    url = f"sqlite:///{db}"
    clock, cloud = SimClock(), cloud_of()
    first = engine_on(url, clock, cloud)
    sid = first.create_session(SessionRequest(actions=UPGRADE))
    for _ in range(1_000):
        first.run_until_idle()
        started = migrations(cloud, "migration_started")
        # One under way and another to start after it, off the same host.
        if sum(started.values()) - sum(migrations(cloud, "migration_done").values()) == 1 and (
            1 <= sum(started.values()) < len(LAYOUT["cmp-0"]) - 1
        ):
            break
        wake = first.next_wake()
        assert wake is not None
        clock.advance_to(wake)
    else:
        pytest.fail("never stopped with a migration under way")
    first.close()
    version, body = stored(db, sid)
    assert version == 2
    assert body["waiting_move"] is None  # under way: not in the state
    (running,) = set(started) - set(migrations(cloud, "migration_done"))
    if schema == 1:  # as the release before wrote it: the one under way named
        del body["waiting_move"]
        body["moving"] = running
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(
                "UPDATE session_state SET body = ?, schema_version = 1"
                " WHERE session_id = ? AND component = 'rolling'",
                (json.dumps(body), sid),
            )
    second = engine_on(url, clock, cloud)
    try:
        view = second.run_until_done(sid)
    finally:
        second.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert most_at_once_off_a_host(cloud) == 1
    assert migrations(cloud, "migration_started") == moved  # nothing started twice
    assert migrations(cloud, "migration_done") == moved
    assert clock.now() == ended
    version, body = stored(db, sid)
    assert version == 2
    assert body["waiting_move"] is None
