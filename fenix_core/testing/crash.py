"""Crash testing: run a session in child processes killed with SIGKILL at
chosen points, resume it in new ones, and check that nothing happened twice
and nothing was lost.

Everything that must outlive a process lives in files of one directory: the
engine's SQLite database, the :class:`SimulatedCloud` (``state_path``), the
:class:`TimedAction` runs (``state_path``) and a log of every notification a
receiver got (one line per delivery: session, seq, signal). A child counts
*ticks*, the moments a crash can fall between: before and after each database
commit, each change of the cloud or the action, and each notification
delivered. ``kill_after=n`` kills the child with SIGKILL at its n-th tick.

::

    harness = CrashHarness(tmp_path)
    harness.prepare()
    report = harness.run(kill_points=[40, 7, 90])   # three crashes, then to the end
    assert harness.problems(report) == []

Children are forked (POSIX only): starting a Python interpreter per crash
would cost more than the run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from .. import signals
from ..clock import SimClock
from ..engine import Engine
from ..model import ActionSpec, SessionRequest
from ..store.database import head_revision, open_database
from ..store.schema import SessionRow
from .actions import TimedAction
from .cloud import SimulatedCloud
from .invariants import migrations_per_instance
from .manager import ScriptedManager
from .seams import stored_clock

__all__ = ["CrashHarness", "CrashReport"]

T0 = datetime(2026, 1, 1, tzinfo=UTC)

#: host -> [(instance, project, vcpus)]; p1 has a manager, p2 does not.
LAYOUT: dict[str, list[tuple[str, str, int]]] = {
    "cmp-0": [("vm-a", "p1", 2), ("vm-b", "p2", 2)],
    "cmp-1": [("vm-c", "p1", 2)],
    "cmp-2": [("vm-d", "p2", 2)],
}


@attrs.frozen
class CrashReport:
    """How a crash run went."""

    #: Kill points that did kill a child (a child may finish before its point).
    kills: int
    #: Ticks each child counted (the last one ran to the end).
    ticks: tuple[int, ...]
    state: str
    migrations: dict[str, int]
    action_runs: dict[str, int]
    #: seq -> times delivered, for the session.
    deliveries: dict[int, int]
    #: The session's last seq and how many outbox rows are still undelivered.
    last_seq: int
    undelivered: int


class CrashHarness:
    """Crash runs of one small rolling session in ``workdir``."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        database_url: str | None = None,
        worker_id: str = "crash-worker",
        lease_seconds: float = 30.0,
    ) -> None:
        self.dir = Path(workdir)
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.url = database_url or f"sqlite:///{self.dir / 'fenix.db'}"
        self.cloud_file = self.dir / "cloud.json"
        self.action_file = self.dir / "action.json"
        self.deliveries_file = self.dir / "deliveries.log"
        self.ticks_file = self.dir / "ticks.log"
        self.session_id = ""

    # ------------------------------------------------------------------ parent side

    def prepare(self) -> str:
        """Build the cloud and create the session (in a child, so that this
        process never holds the database open while children run)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        head_revision()  # read once here, not in every child
        setup = SimulatedCloud(state_path=self.cloud_file)
        for host, instances in LAYOUT.items():
            setup.add_host(host, vcpus=4)
            for instance_id, project_id, vcpus in instances:
                setup.add_instance(instance_id, project_id, host, vcpus=vcpus)
        code = self._fork(self._create)
        if code != 0:
            raise RuntimeError(f"creating the session failed in the child (exit code {code})")
        self.session_id = (self.dir / "session_id").read_text()
        return self.session_id

    def run(self, kill_points: Sequence[int] = ()) -> CrashReport:
        """Run children killed at each of ``kill_points`` (ticks counted from
        each child's start), then one that finishes; return what happened."""
        kills = 0
        ticks: list[int] = []
        for point in [*kill_points, None]:
            code = self._fork(lambda p=point: self._work(p, self.worker_id))
            ticks.append(self._last_ticks())
            if code == -signal.SIGKILL:
                kills += 1
                continue
            if code != 0:
                raise RuntimeError(f"child exited with {code}")
            break
        return self._report(kills, tuple(ticks))

    def run_two_workers(self, kill_first_after: int) -> CrashReport:
        """Two workers on the session at once: the first (which takes the
        lease) is killed at its ``kill_first_after``-th tick; the second waits
        for the lease to expire and finishes the session."""
        context = multiprocessing.get_context("fork")
        first = context.Process(target=self._work, args=(kill_first_after, "worker-a"))
        second = context.Process(target=self._work, args=(None, "worker-b"))
        first.start()
        self._wait_for_lease("worker-a", first)
        second.start()
        for child in (first, second):
            child.join(120)
            if child.is_alive():
                child.kill()
                child.join()
                raise RuntimeError("a crash-test worker hung")
        if second.exitcode != 0 or first.exitcode not in (0, -signal.SIGKILL):
            raise RuntimeError(f"workers exited with {first.exitcode}, {second.exitcode}")
        return self._report(int(first.exitcode == -signal.SIGKILL), ())

    def _wait_for_lease(self, owner: str, child: Any) -> None:
        db = open_database(self.url)
        try:
            while child.is_alive():
                if stored_clock(db, self.session_id).owner == owner:
                    return
                time.sleep(0.02)
        finally:
            db.dispose()

    def problems(self, report: CrashReport, reference: CrashReport) -> list[str]:
        """What went wrong compared with ``reference``, a run without crashes."""
        found: list[str] = []
        if report.state != "MAINTENANCE_DONE":
            found.append(f"session ended {report.state}")
        if report.migrations != reference.migrations:
            found.append(f"migrations {report.migrations} != {reference.migrations}")
        if report.action_runs != reference.action_runs:
            found.append(f"action runs {report.action_runs} != {reference.action_runs}")
        missing = [s for s in range(1, report.last_seq + 1) if s not in report.deliveries]
        if missing:
            found.append(f"notifications never delivered: seq {missing}")
        extra = sorted(set(report.deliveries) - set(range(1, report.last_seq + 1)))
        if extra:
            found.append(f"deliveries of seq never recorded: {extra}")
        if report.undelivered:
            found.append(f"{report.undelivered} outbox row(s) not marked delivered")
        return found

    def _fork(self, target: Any) -> int:
        context = multiprocessing.get_context("fork")
        child = context.Process(target=target, daemon=True)
        child.start()
        child.join(120)
        if child.is_alive():
            child.kill()
            child.join()
            raise RuntimeError("a crash-test child hung")
        assert child.exitcode is not None
        return child.exitcode

    def _last_ticks(self) -> int:
        lines = self.ticks_file.read_text().split() if self.ticks_file.exists() else []
        return int(lines[-1]) if lines else 0

    def deliveries(self) -> Counter[int]:
        """seq -> how many times a receiver got it, for the session."""
        deliveries: Counter[int] = Counter()
        if self.deliveries_file.exists():
            for line in self.deliveries_file.read_text().splitlines():
                session_id, seq, _signal = line.split()
                if session_id == self.session_id:
                    deliveries[int(seq)] += 1
        return deliveries

    def _report(self, kills: int, ticks: tuple[int, ...]) -> CrashReport:
        cloud = SimulatedCloud(state_path=self.cloud_file, clock=SimClock(start=T0))
        action = TimedAction("upgrade", 60, state_path=self.action_file)
        deliveries = self.deliveries()
        with Engine(self.url, clock=SimClock(), load_entry_points=False) as engine:
            state = engine.get_session(self.session_id).state
            stored = stored_clock(engine.database, self.session_id)
        # Delivery is recorded as a watermark: every notification above it
        # counts as undelivered (the finished session's last step wrote it).
        last_seq, undelivered = stored.seq, stored.seq - stored.delivered_seq
        return CrashReport(
            kills=kills,
            ticks=ticks,
            state=state,
            migrations=dict(migrations_per_instance(cloud)),
            action_runs=dict(Counter(h or "" for h in action.hosts)),
            deliveries=dict(deliveries),
            last_seq=last_seq,
            undelivered=undelivered,
        )

    # ------------------------------------------------------------------ child side

    def _engine(self, worker_id: str) -> tuple[Engine, SimClock]:
        clock = SimClock(start=self._resume_time())
        cloud = SimulatedCloud(state_path=self.cloud_file)
        action = TimedAction("upgrade", 60, state_path=self.action_file)
        engine = Engine(
            self.url,
            clock=clock,
            plugins=[cloud, action],
            load_entry_points=False,
            worker_id=worker_id,
            lease_seconds=self.lease_seconds,
        )
        ScriptedManager(engine, "p1", cloud=cloud)
        return engine, clock

    def _resume_time(self) -> datetime:
        """Where the dead process's clock was, as far as anything recorded it."""
        times = [T0]
        if self.cloud_file.exists():
            state = json.loads(self.cloud_file.read_text())
            times += [datetime.fromisoformat(e["time"]) for e in state["events"]]
        if self.session_id:
            db = open_database(self.url)
            with Session(db) as orm:
                latest = orm.scalar(select(func.max(SessionRow.updated_at)))
            db.dispose()
            if latest is not None:
                times.append(latest)
        return max(times)

    def _create(self) -> None:
        engine, _ = self._engine(self.worker_id)
        engine.subscribe("p1")
        session_id = engine.create_session(
            SessionRequest(actions=[ActionSpec(plugin="upgrade", type="host")])
        )
        (self.dir / "session_id").write_text(session_id)
        engine.close()

    def _work(self, kill_after: int | None, worker_id: str) -> None:
        engine, _ = self._engine(worker_id)
        ticks = [0]
        ticks_log = self.ticks_file.open("a")

        def tick(*_args: Any, **_kwargs: Any) -> None:
            ticks[0] += 1
            if kill_after is not None and ticks[0] >= kill_after:
                ticks_log.write(f"{ticks[0]}\n")
                ticks_log.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        event.listen(engine.database, "commit", tick)  # before the database commits
        event.listen(Session, "after_commit", tick)
        deliveries = self.deliveries_file.open("a")

        def delivered(_sender: Engine, payload: dict[str, Any], name: str) -> None:
            deliveries.write(f"{payload['session_id']} {payload['seq']} {name}\n")
            deliveries.flush()
            tick()

        for name, sig in signals.SIGNALS.items():
            sig.connect(
                lambda s, payload, n=name: delivered(s, payload, n), sender=engine, weak=False
            )
        _around_saves(SimulatedCloud, tick)
        _around_saves(TimedAction, tick)
        engine.run_until_done(self.session_id)
        ticks_log.write(f"{ticks[0]}\n")
        ticks_log.flush()
        os._exit(0)


def _around_saves(cls: Any, tick: Any) -> None:
    """Tick before and after every state-file write of a test double."""
    original = cls._save

    def save(self: Any) -> None:
        tick()
        original(self)
        tick()

    cls._save = save
