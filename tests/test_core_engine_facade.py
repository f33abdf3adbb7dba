"""What the front ends (fenix-api, the CLI, the crash harness) call on the
engine, on Engine: the production loop (run_forever / stop, including a
session another process created), transaction() for the REST front end's
own tables, unsubscribe, plug-ins from entry points, the admin project.
Each expectation is today's Engine's for the same call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder, fill
from query_plans import sent_plans
from sqlalchemy import event, text

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.clock import SimClock
from fenix_core.errors import InvalidInput, NotFound
from fenix_core.model import SessionView
from fenix_core.testing import ScriptedManager, SimulatedCloud, TimedAction
from fenix_core.testing.seams import stored_clock
from fenix_core.workflows.rolling import RollingWorkflow

LAYOUT = {
    "cmp-0": [("vm-a1", "pa", 2)],
    "cmp-1": [("vm-a2", "pa", 2)],
    "cmp-2": [],
}
ACTIONS = [ActionSpec("upgrade", "host")]
FINAL = ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")

Factory = Callable[..., Engine]


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def cloud(clock: SimClock) -> SimulatedCloud:
    made = SimulatedCloud(clock=clock)
    fill(made, LAYOUT)
    return made


@pytest.fixture
def core(tmp_path: Path, clock: SimClock, cloud: SimulatedCloud) -> Iterator[Factory]:
    made: list[Engine] = []

    def make(**kwargs: Any) -> Engine:
        engine = Engine(
            f"sqlite:///{tmp_path / 'fenix.db'}",
            clock=clock,
            plugins=[cloud, TimedAction("upgrade", 600)],
            workflows={"rolling": RollingWorkflow},
            **kwargs,
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def wait_for(what: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Loop:
    """``engine.run_forever()`` in a thread, stopped and joined at the end."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.engine.run_forever()
        except BaseException as error:  # the test reports it
            self.error = error

    def stop(self) -> None:
        self.engine.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "run_forever did not return after stop()"
        assert self.error is None


def test_run_forever_runs_a_session_to_the_end_and_stop_returns(core: Factory) -> None:
    engine = core()
    ScriptedManager(engine, "pa")  # type: ignore[arg-type]
    loop = Loop(engine)
    sid = engine.create_session(SessionRequest(actions=ACTIONS))
    wait_for(lambda: engine.get_session(sid).state in FINAL)
    loop.stop()
    assert engine.get_session(sid).state == "MAINTENANCE_DONE"
    assert engine.held_sessions() == []


def test_run_until_done_makes_no_step_that_finds_nothing(
    core: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stepping until idle stops when the due queue says nothing is due,
    instead of ending each instant with a step() that found nothing (one
    such call per instant of a run)."""
    engine = core()
    ScriptedManager(engine, "pa")  # type: ignore[arg-type]
    results: list[int] = []
    step = engine.step

    def counted() -> int:
        stepped = step()
        results.append(stepped)
        return stepped

    monkeypatch.setattr(engine, "step", counted)
    sid = engine.create_session(SessionRequest(actions=ACTIONS))
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert results.count(0) <= 1, results  # the first: the poll found the new session
    assert len(results) > 10


def test_run_forever_with_nothing_to_do_returns_on_stop(core: Factory) -> None:
    loop = Loop(core())
    time.sleep(0.05)
    loop.stop()


def test_run_forever_takes_up_a_session_another_process_created(core: Factory) -> None:
    """The CLI creates a session in the database fenix-api serves; the
    serving engine finds it at its next look at the database."""
    serving = core(worker_id="api", lease_seconds=0.4)  # looks every 0.1 s
    ScriptedManager(serving, "pa")  # type: ignore[arg-type]
    loop = Loop(serving)
    other = core(worker_id="cli")
    sid = other.create_session(SessionRequest(actions=ACTIONS))
    other.close()  # never steps it
    wait_for(lambda: serving.get_session(sid).state in FINAL)
    loop.stop()
    assert serving.get_session(sid).state == "MAINTENANCE_DONE"


def test_transaction_commits_on_exit_and_rolls_back_on_error(core: Factory) -> None:
    engine = core()
    with engine.transaction() as orm:
        orm.execute(text("CREATE TABLE extension (x INTEGER)"))
        orm.execute(text("INSERT INTO extension VALUES (1)"))

    def failing() -> None:
        with engine.transaction() as orm:
            orm.execute(text("INSERT INTO extension VALUES (2)"))
            raise RuntimeError("the extension failed")

    with pytest.raises(RuntimeError):
        failing()
    with engine.transaction() as orm:
        assert orm.execute(text("SELECT x FROM extension")).scalars().all() == [1]


@pytest.mark.no_cover
def test_unsubscribe_forgets_the_project_and_a_new_session_asks_it_nothing(
    core: Factory,
) -> None:
    engine = core()
    engine.subscribe("pa")
    engine.subscribe("pb")
    engine.unsubscribe("pa")
    engine.unsubscribe("pa")  # twice: nothing to forget, no error
    assert engine.subscriptions() == ["pb"]
    with pytest.raises(InvalidInput, match="project_id"):
        engine.unsubscribe("")
    recorder = Recorder(engine)  # type: ignore[arg-type]
    sid = engine.create_session(SessionRequest(actions=ACTIONS))
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    # pa is not listening any more: it is told nothing, and nothing waits for it.
    assert [p["project_id"] for p in recorder.of("maintenance_planned")] == []
    recorder.close()


def test_the_admin_project_is_kept_as_the_engine_was_given_it(core: Factory) -> None:
    assert core(admin_project_id="admin").admin_project_id == "admin"
    assert core().admin_project_id is None


def test_entry_point_plugins_are_loaded_unless_turned_off(
    core: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []

    def load_setuptools_entrypoints(self: Any, group: str, name: str | None = None) -> int:
        loaded.append(group)
        return 0

    monkeypatch.setattr(
        "pluggy.PluginManager.load_setuptools_entrypoints", load_setuptools_entrypoints
    )
    core()
    assert loaded == ["fenix"]
    core(load_entry_points=False)
    assert loaded == ["fenix"]


def test_lease_holder_names_the_live_lease_and_its_expiry(core: Factory) -> None:
    lease_clock = SimClock()
    a = core(worker_id="a", lease_clock=lease_clock)
    b = core(worker_id="b", lease_clock=lease_clock)
    sid = a.create_session(SessionRequest(actions=ACTIONS))
    assert b.lease_holder(sid) is None  # created, not claimed yet
    a.step()
    assert b.lease_holder(sid) == ("a", lease_clock.now() + timedelta(seconds=30))
    lease_clock.advance(31)
    assert b.lease_holder(sid) is None  # expired: nobody holds it
    with pytest.raises(NotFound):
        b.lease_holder("no-such-session")


class _ReadCounting(SimClock):
    """A lease clock that counts its readings."""

    reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return super().now()


def test_a_step_of_a_held_session_reads_the_lease_clock_at_most_twice(
    core: Factory, clock: SimClock
) -> None:
    """One reading serves the engine's look at the host changes and the
    step's lease expiry; the only other one is the check, after the commit,
    that the lease still holds before the step's operations start. (A
    lease long enough that no step looks at the database for sessions.)"""
    leases = _ReadCounting()
    engine = core(lease_clock=leases, lease_seconds=1e6)
    engine.create_session(SessionRequest(actions=ACTIONS))
    engine.step()  # claimed and loaded: held from now on
    per_step = []
    for _ in range(8):
        wake = engine.next_wake()
        assert wake is not None
        clock.advance_to(wake)
        reads = leases.reads
        assert engine.step() == 1
        per_step.append(leases.reads - reads)
    assert max(per_step) <= 2, per_step


def _looks(engine: Engine) -> list[int]:
    """A one-item counter of the poller's looks at the database (its due
    query, the only statement that reads the inbox's partial index)."""
    seen = [0]

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if "INDEXED BY ix_inbox_unprocessed" in sql:
            seen[0] += 1

    event.listen(engine.database, "before_cursor_execute", statement)
    return seen


def test_a_held_session_on_simulated_time_steps_without_looks_while_nothing_else_is_due(
    core: Factory, clock: SimClock
) -> None:
    """The looks a simulated clock adds (every lease_seconds / 4 of it) find
    nothing while this engine holds every session that has a wake-up: they
    are skipped; the lease clock's own looks (real time) remain."""
    engine = core(worker_id="alone")  # lease_seconds 30: a real-time look every 7.5 s
    ScriptedManager(engine, "pa")  # type: ignore[arg-type]
    looks = _looks(engine)
    started = time.monotonic()
    sid = engine.create_session(SessionRequest(actions=ACTIONS))
    engine.run_until_done(sid)
    real_looks = 1 + int((time.monotonic() - started) / 7.5)
    assert engine.steps_run >= 20
    # The first look (it finds the new session, whose wake-up is then the
    # earliest of a session not held here), the next one, the one after the
    # session ended and was let go, and those of real time.
    assert looks[0] <= real_looks + 2


def test_a_session_another_engine_left_due_later_is_found_when_it_falls_due(
    core: Factory, clock: SimClock
) -> None:
    """Another engine of this process writes a session due in 30 minutes of
    simulated time after this one's last look: this one, stepping on the
    same simulated clock, takes it when it falls due, not at a later look of
    real time."""
    serving = core(worker_id="serving")
    ScriptedManager(serving, "pa")  # type: ignore[arg-type]
    serving.step()  # its first look: nothing there yet
    due = clock.now() + timedelta(minutes=30)
    other = core(worker_id="cli")
    ScriptedManager(other, "pa")  # type: ignore[arg-type]
    sid = other.create_session(SessionRequest(actions=ACTIONS, maintenance_at=due))
    other.run_until_idle()  # asked and answered, then waits for maintenance_at
    other.close()
    while stored_clock(serving.database, sid).owner != "serving":
        assert clock.now() <= due + timedelta(minutes=1), "not taken when due"
        clock.advance(10)
        serving.step()
    assert clock.now() >= due


def test_get_session_reads_no_instance_row(core: Factory) -> None:
    """A session's view shows its hosts and projects, not its instances,
    which are most of a large session's rows (20,000 at 1,000 hosts):
    ``get_session`` (each GET of a session, a dashboard's refresh, the
    view ``run_until_done`` returns) does not load them."""
    engine = core()
    ScriptedManager(engine, "pa")  # type: ignore[arg-type]
    sid = engine.create_session(SessionRequest(actions=ACTIONS))
    statements: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(" ".join(sql.split()))

    def view() -> SessionView:
        event.listen(engine.database, "before_cursor_execute", statement)
        try:
            return engine.get_session(sid)
        finally:
            event.remove(engine.database, "before_cursor_execute", statement)

    before = view()
    engine.run_until_done(sid)
    done = view()
    assert [sql for sql in statements if "FROM sessions" in sql], "the views read the session"
    # The one read of session_instances looks up the instances that stored
    # constraints name (the test below checks how).
    reads = [sql for sql in statements if "session_instances" in sql]
    assert reads
    assert all(sql.startswith("SELECT instance_constraints.") for sql in reads), reads
    assert [h.name for h in before.hosts] == ["cmp-0", "cmp-1", "cmp-2"]
    assert (done.state, done.percent_done) == ("MAINTENANCE_DONE", 100)
    assert {h.state for h in done.hosts} == {"MAINTAINED"}
    assert [i.instance_id for i in engine.project_view(sid, "pa").instances] == ["vm-a1", "vm-a2"]


def test_get_session_looks_up_only_the_instances_that_stored_constraints_name(
    core: Factory,
) -> None:
    """The check for constraints the cloud contradicts reads each stored
    instance constraint and looks its instance up in the session by the
    primary key. Joined the other way round, SQLite walked every instance of
    the session for each view (15 ms of the 43 ms of a 1,000-host view)."""
    engine = core()
    sid = engine.create_session(SessionRequest(actions=ACTIONS))
    engine.set_instance_constraints({"instance_id": "vm-a2", "project_id": "pa"})
    assert engine.get_session(sid).ignored_constraints == ()
    plans = sent_plans(engine.database, lambda _c: engine.get_session(sid), "session_instances")
    assert len(plans) == 1, plans
    assert "SCAN instance_constraints" in plans[0], plans
    lookup = "sqlite_autoindex_session_instances_1 (session_id=? AND instance_id=?)"
    assert f"SEARCH session_instances USING INDEX {lookup}" in plans[0], plans
