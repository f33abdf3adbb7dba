"""Crash-resume: the engine runs a session in child processes that are killed
with SIGKILL at random points and resumed in new ones. The session must end
DONE with every migration and every host action done exactly as often as in a
run without crashes (a move in doubt is looked up by its key, never started
twice), and every notification delivered at least once, no gap, and exactly
once in a run without kills.

``FENIX_CRASH_POINTS`` sets how many kill points (20 by default; ``nox -s
soak`` runs 200) and ``FENIX_CRASH_SEED`` the random seed."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import attrs
import pytest

from fenix_core.testing.crash import CrashHarness, CrashReport

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL")

KILL_POINTS = int(os.environ.get("FENIX_CRASH_POINTS", "20"))
SEED = int(os.environ.get("FENIX_CRASH_SEED", "20261125"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> CrashReport:
    harness = CrashHarness(tmp_path_factory.mktemp("reference"))
    harness.prepare()
    report = harness.run()
    assert report.state == "MAINTENANCE_DONE"
    assert report.kills == 0
    assert report.last_seq > 10
    # Without kills: every notification exactly once, none missing.
    assert sorted(report.deliveries) == list(range(1, report.last_seq + 1))
    assert all(count == 1 for count in report.deliveries.values())
    assert report.undelivered == 0
    return report


def kill_points(rng: random.Random, total: int, count: int) -> list[int]:
    """Up to ``count`` points, each within what the previous child left."""
    points: list[int] = []
    left = total
    for _ in range(count):
        point = rng.randint(1, max(1, left))
        points.append(point)
        left = max(1, left - point)
    return points


@pytest.mark.no_cover
def test_sessions_survive_sigkill_at_random_points(reference: CrashReport, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    total = reference.ticks[0]
    kills = runs = 0
    while kills < KILL_POINTS:
        harness = CrashHarness(tmp_path / f"run-{runs}")
        harness.prepare()
        points = kill_points(rng, total, min(4, KILL_POINTS - kills))
        report = harness.run(points)
        assert harness.problems(report, reference) == [], f"kill points {points}: {report}"
        kills += report.kills
        runs += 1
    print(f"crash-resume: {kills} kill points in {runs} runs passed (seed {SEED})")


def test_the_check_sees_duplicates_and_gaps(reference: CrashReport, tmp_path: Path) -> None:
    harness = CrashHarness(tmp_path)
    assert harness.problems(reference, reference) == []
    twice = attrs.evolve(reference, migrations={**reference.migrations, "vm-a": 2})
    gap = attrs.evolve(
        reference, deliveries={s: n for s, n in reference.deliveries.items() if s != 3}
    )
    rerun = attrs.evolve(reference, action_runs={**reference.action_runs, "cmp-0": 2})
    assert any("migrations" in p for p in harness.problems(twice, reference))
    assert harness.problems(gap, reference) == ["notifications never delivered: seq [3]"]
    assert any("action runs" in p for p in harness.problems(rerun, reference))


@pytest.mark.parametrize("points", [[1, 1, 1], [1, 1, 2, 3]])
def test_a_child_killed_before_its_first_commit_changes_nothing(
    reference: CrashReport, tmp_path: Path, points: list[int]
) -> None:
    """Killed at its first ticks, again and again: each child dies before or
    at its first commit, and the run still ends as the reference."""
    harness = CrashHarness(tmp_path)
    harness.prepare()
    report = harness.run(points)
    assert report.kills == len(points)
    assert harness.problems(report, reference) == []


def test_a_child_killed_before_the_finished_sessions_watermark_is_written(
    reference: CrashReport, tmp_path: Path
) -> None:
    """The reference's last commit is the watermark of the session's last
    notifications, written after they were delivered; killed just before
    it, the next child must find the ended session due, send them again and
    mark them delivered (they stayed above the watermark for good)."""
    harness = CrashHarness(tmp_path)
    harness.prepare()
    report = harness.run([reference.ticks[0] - 1])
    assert report.kills == 1
    assert harness.problems(report, reference) == []
    assert report.deliveries[report.last_seq] == 2  # at least once: sent again
