"""Crash-resume on the redesigned core: CoreEngine runs the crash harness's
rolling session (fenix_core.testing.crash) in child processes killed with
SIGKILL at random points and resumed in new ones. The session must end DONE
with every migration and host action done as often as in a run without
crashes (a move in doubt is looked up by its key, never started twice), and
every notification delivered, none missing: at least once per seq, and
exactly once in a run without kills.

``FENIX_CRASH_POINTS`` sets how many kill points (20 by default; ``nox -s
soak`` runs 200) and ``FENIX_CRASH_SEED`` the random seed, as for
tests/test_crash.py."""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from test_crash import kill_points

from fenix_core.clock import SimClock
from fenix_core.core.engine_v2 import CoreEngine
from fenix_core.store.database import open_database
from fenix_core.store.schema import SessionClockRow, SessionRow
from fenix_core.testing import ScriptedManager, SimulatedCloud, TimedAction
from fenix_core.testing.crash import T0, CrashHarness, CrashReport
from fenix_core.testing.invariants import migrations_per_instance
from fenix_core.workflows.v2.rolling import RollingWorkflow

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL")

KILL_POINTS = int(os.environ.get("FENIX_CRASH_POINTS", "20"))
SEED = int(os.environ.get("FENIX_CRASH_SEED", "20261125"))


class CoreCrashHarness(CrashHarness):
    """The harness's session, cloud, action and kill points, on CoreEngine."""

    def _engine(self, worker_id: str) -> tuple[CoreEngine, SimClock]:  # type: ignore[override]
        clock = SimClock(start=self._resume_time())
        cloud = SimulatedCloud(state_path=self.cloud_file)
        action = TimedAction("upgrade", 60, state_path=self.action_file)
        engine = CoreEngine(
            self.url,
            clock=clock,
            plugins=[cloud, action],
            workflows={"rolling": RollingWorkflow},
            worker_id=worker_id,
            lease_seconds=self.lease_seconds,
        )
        ScriptedManager(engine, "p1", cloud=cloud)  # type: ignore[arg-type]
        return engine, clock

    def _report(self, kills: int, ticks: tuple[int, ...]) -> CrashReport:
        cloud = SimulatedCloud(state_path=self.cloud_file, clock=SimClock(start=T0))
        action = TimedAction("upgrade", 60, state_path=self.action_file)
        deliveries = self.deliveries()
        db = open_database(self.url)
        try:
            with db.connect() as connection:
                state = connection.scalar(
                    select(SessionRow.state).where(SessionRow.id == self.session_id)
                )
                last_seq, delivered = connection.execute(
                    select(SessionClockRow.seq, SessionClockRow.delivered_seq).where(
                        SessionClockRow.session_id == self.session_id
                    )
                ).one()
        finally:
            db.dispose()
        # The watermark is written by the step after a delivery: rows above it
        # count as undelivered only if no receiver ever got them.
        undelivered = sum(1 for s in range(delivered + 1, last_seq + 1) if s not in deliveries)
        return CrashReport(
            kills=kills,
            ticks=ticks,
            state=str(state),
            migrations=dict(migrations_per_instance(cloud)),
            action_runs=dict(Counter(h or "" for h in action.hosts)),
            deliveries=dict(deliveries),
            last_seq=int(last_seq),
            undelivered=undelivered,
        )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> CrashReport:
    harness = CoreCrashHarness(tmp_path_factory.mktemp("reference"))
    harness.prepare()
    report = harness.run()
    assert report.state == "MAINTENANCE_DONE"
    assert report.kills == 0
    assert report.last_seq > 10
    assert sorted(report.deliveries) == list(range(1, report.last_seq + 1))
    assert all(count == 1 for count in report.deliveries.values())
    return report


def test_core_sessions_survive_sigkill_at_random_points(
    reference: CrashReport, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    total = reference.ticks[0]
    kills = runs = 0
    while kills < KILL_POINTS:
        harness = CoreCrashHarness(tmp_path / f"run-{runs}")
        harness.prepare()
        points = kill_points(rng, total, min(4, KILL_POINTS - kills))
        report = harness.run(points)
        assert harness.problems(report, reference) == [], f"kill points {points}: {report}"
        kills += report.kills
        runs += 1
    print(f"core crash-resume: {kills} kill points in {runs} runs passed (seed {SEED})")


def test_a_core_child_killed_at_every_early_point_changes_nothing(
    reference: CrashReport, tmp_path: Path
) -> None:
    """Killed at its first tick, again and again: each child dies before or
    at its first commit, and the run still ends as the reference."""
    harness = CoreCrashHarness(tmp_path)
    harness.prepare()
    report = harness.run([1, 1, 2, 3])
    assert report.kills == 4
    assert harness.problems(report, reference) == []
