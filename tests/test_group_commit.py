"""Engine.reply's group commit and Engine.reply_many on a SQLite file.

8 threads x 500 replies: every reply() that returned is in the database,
even when the process is SIGKILLed right after (a child process is killed
while it replies); each sender's replies are in the inbox in the order it
sent them; a failed write raises in every caller that waited on it and
commits nothing; reply_many records the valid items of a burst together
and reports each invalid one, writing nothing half-way."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from commit_counter import Commits
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from fenix_core import ActionSpec, Engine, SessionRequest, signals
from fenix_core.core.sql_store import SqlSessionStore
from fenix_core.errors import Conflict, InvalidInput, NotFound
from fenix_core.model import Reply
from fenix_core.testing import SimClock, SimulatedCloud, TimedAction
from fenix_core.testing.seams import queued_replies, step_in_progress

THREADS = 8
PER_THREAD = 500  # the kill test's; setting up 4,000 asked projects takes about a minute
IN_PROCESS_PER_THREAD = 125
PER_HOST = 50


def asked_engine(
    path: Path, projects: int, answer: Callable[[Engine, str, str], None] | None = None
) -> tuple[Engine, list[tuple[str, str]]]:
    """An engine on ``path`` whose one session asks MAINTENANCE of ``projects``
    projects (one instance each); returns it and the (session, project) asked.
    ``answer(engine, session, project)``: called from inside the step that asks."""
    clock = SimClock()
    cloud = SimulatedCloud(clock=clock)
    for h in range(-(-projects // PER_HOST)):
        cloud.add_host(f"cmp-{h:04d}", vcpus=2 * PER_HOST)
    names = [f"p{p:05d}" for p in range(projects)]
    for p, project in enumerate(names):
        cloud.add_instance(f"vm-{p:05d}", project, f"cmp-{p // PER_HOST:04d}")
    engine = Engine(f"sqlite:///{path}", clock=clock, plugins=[cloud, TimedAction("upgrade", 60)])
    for project in names:
        engine.subscribe(project)
    asked: list[tuple[str, str]] = []

    def on_planned(sender: Engine, payload: dict[str, Any]) -> None:
        if payload["state"] == "MAINTENANCE":
            asked.append((payload["session_id"], payload["project_id"]))
            if answer is not None:
                answer(engine, payload["session_id"], payload["project_id"])

    signals.maintenance_planned.connect(on_planned, sender=engine, weak=False)
    engine.create_session(
        SessionRequest(
            actions=[ActionSpec(plugin="upgrade", type="host")],
            maintenance_at=clock.now() + timedelta(hours=1),
        )
    )
    engine.run_until_idle()
    assert len(asked) == projects
    return engine, sorted(asked, key=lambda a: a[1])


def inbox(path: Path) -> list[tuple[int, str, str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT id, session_id, project_id, state FROM inbox ORDER BY id"
        ).fetchall()


def reply_in_threads(engine: Engine, asked: list[tuple[str, str]], report: Any = None) -> None:
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def sender(thread: int) -> None:
        start.wait()
        try:
            for session_id, project in asked[thread::THREADS]:
                engine.reply(session_id, project, "ACK_MAINTENANCE")
                if report is not None:
                    report(project)
        except BaseException as error:
            failures.append(error)
            raise

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def child(path: str) -> None:
    """Run in a subprocess: reply from 8 threads, printing each project once
    its reply() returned, until the parent kills the process."""
    engine, asked = asked_engine(Path(path), THREADS * PER_THREAD)
    out = threading.Lock()
    print("ready", flush=True)

    def report(project: str) -> None:
        with out:
            sys.stdout.write(project + "\n")
            sys.stdout.flush()

    reply_in_threads(engine, asked, report)
    print("finished", flush=True)
    engine.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "fenix.db"


@pytest.fixture
def many(db_path: Path) -> Iterator[tuple[Engine, list[tuple[str, str]]]]:
    engine, asked = asked_engine(db_path, THREADS * IN_PROCESS_PER_THREAD)
    yield engine, asked
    engine.close()


def test_every_reply_of_eight_busy_threads_is_recorded_in_each_senders_order(
    many: tuple[Engine, list[tuple[str, str]]], db_path: Path
) -> None:
    engine, asked = many
    reply_in_threads(engine, asked)
    rows = inbox(db_path)
    assert sorted((r[1], r[2]) for r in rows) == sorted(asked)
    position = {r[2]: r[0] for r in rows}
    for thread in range(THREADS):
        ids = [position[project] for _, project in asked[thread::THREADS]]
        assert ids == sorted(ids)
    engine.step()  # and the step takes every one of them
    answered = engine.get_session(asked[0][0]).projects
    assert {p for _, p in asked} == {p for p, s in answered.items() if s == "ACK_MAINTENANCE"}


@pytest.mark.slow
def test_a_reply_that_returned_survives_a_kill_right_after(db_path: Path) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        f" import test_group_commit as t; t.child({str(db_path)!r})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert process.stdout is not None
    returned: list[str] = []
    try:
        assert process.stdout.readline().strip() == "ready"
        for line in process.stdout:
            returned.append(line.strip())
            if len(returned) == THREADS * PER_THREAD // 2:
                os.kill(process.pid, signal.SIGKILL)
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    recorded = {r[2] for r in inbox(db_path)}
    assert len(returned) == THREADS * PER_THREAD // 2
    assert set(returned) <= recorded


def test_a_failed_write_raises_in_every_waiting_caller_and_commits_nothing(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, asked = asked_engine(db_path, THREADS)
    try:
        broken = threading.Event()
        real_insert = SqlSessionStore.insert_replies

        # What every batch written on its own calls (in a transaction that
        # reads the stored facts, or, for held sessions, one that reads nothing).
        def insert(self: SqlSessionStore, db: Any, rows: Any) -> None:
            real_insert(self, db, rows)
            if broken.is_set():
                raise OperationalError("INSERT INTO inbox", {}, Exception("disk I/O error"))

        monkeypatch.setattr(SqlSessionStore, "insert_replies", insert)
        errors: dict[str, BaseException | None] = {}

        def send(session_id: str, project: str) -> None:
            try:
                engine.reply(session_id, project, "ACK_MAINTENANCE")
                errors[project] = None
            except BaseException as error:
                errors[project] = error

        # Hold what a step holds so all eight queue for one batch.
        with step_in_progress(engine):
            threads = [threading.Thread(target=send, args=a) for a in asked]
            for thread in threads:
                thread.start()
            while queued_replies(engine) < THREADS:
                threading.Event().wait(0.005)
            broken.set()
        for thread in threads:
            thread.join()
        assert inbox(db_path) == []
        assert all(isinstance(errors[p], OperationalError) for _, p in asked)
        broken.clear()
        engine.reply(*asked[0], "ACK_MAINTENANCE")  # nothing was recorded: it may be sent again
        assert [r[2] for r in inbox(db_path)] == [asked[0][1]]
    finally:
        engine.close()


def test_reply_many_records_the_valid_replies_and_reports_each_refusal(db_path: Path) -> None:
    engine, asked = asked_engine(db_path, 4)
    try:
        (sid, pa), (_, pb), (_, pc), (_, pd) = asked
        results = engine.reply_many(
            [
                (sid, Reply(pa, "ACK_MAINTENANCE")),
                (sid, Reply(pa, "NACK_MAINTENANCE")),
                (sid, Reply(pb, "ACK_FOO")),
                ("no-such-session", Reply(pc, "ACK_MAINTENANCE")),
                (sid, Reply("stranger", "ACK_MAINTENANCE")),
                (sid, Reply(pc, "ACK_PLANNED_MAINTENANCE")),
                (sid, Reply(pd, "NACK_MAINTENANCE")),
            ]
        )
        assert results[0] is None
        assert isinstance(results[1], Conflict)
        assert "already answered" in str(results[1])
        assert isinstance(results[2], InvalidInput)
        assert results[2].field == "state"
        assert isinstance(results[3], NotFound)
        assert results[3].kind == "session"
        assert isinstance(results[4], NotFound)
        assert results[4].kind == "project"
        assert isinstance(results[5], Conflict)
        assert results[6] is None
        assert [(r[2], r[3]) for r in inbox(db_path)] == [
            (pa, "ACK_MAINTENANCE"),
            (pd, "NACK_MAINTENANCE"),
        ]
        with pytest.raises(Conflict):  # one by one, the same rules
            engine.reply(sid, pa, "ACK_MAINTENANCE")
        with pytest.raises(InvalidInput, match=r"replies\[0\]"):
            engine.reply_many([(sid, {"project_id": pb, "state": "ACK_MAINTENANCE"})])  # type: ignore[list-item]
        assert engine.reply_many([]) == []
    finally:
        engine.close()


def test_reply_many_whose_write_fails_raises_and_records_none(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, asked = asked_engine(db_path, 3)
    try:

        def insert(self: SqlSessionStore, db: Any, rows: Any) -> None:
            raise OperationalError("INSERT INTO inbox", {}, Exception("database is locked"))

        def write(self: SqlSessionStore, write: Any) -> None:
            raise OperationalError("UPDATE session_clock", {}, Exception("database is locked"))

        with monkeypatch.context() as patch:
            # Both ways a burst is written: in the step of the session this
            # engine holds, then (that step failed) on its own.
            patch.setattr(SqlSessionStore, "write", write)
            patch.setattr(SqlSessionStore, "insert_replies", insert)
            with pytest.raises(OperationalError):
                engine.reply_many([(s, Reply(p, "ACK_MAINTENANCE")) for s, p in asked])
        assert inbox(db_path) == []
        results = engine.reply_many([(s, Reply(p, "ACK_MAINTENANCE")) for s, p in asked])
        assert results == [None, None, None]
        assert len(inbox(db_path)) == 3
    finally:
        engine.close()


def outcomes(path: Path) -> list[tuple[str, str | None]]:
    """Each inbox row's project and outcome (None: not processed yet)."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT project_id, outcome FROM inbox ORDER BY id").fetchall()


def test_a_burst_to_a_held_session_is_written_by_its_step_in_one_commit(db_path: Path) -> None:
    engine, asked = asked_engine(db_path, 3)
    try:
        commits, steps = Commits(engine), engine.steps_run
        results = engine.reply_many([(s, Reply(p, "ACK_MAINTENANCE")) for s, p in asked])
        assert results == [None, None, None]
        # Durable when reply_many returns, and already taken by the session's
        # step: one commit for the step and the burst.
        assert outcomes(db_path) == [(p, "accepted") for _, p in asked]
        assert (commits.count, engine.steps_run) == (1, steps + 1)
        engine.run_until_idle()  # what the session does next: a commit per step, no more
        assert commits.count == engine.steps_run - steps
        with pytest.raises(Conflict, match="not asked"):  # answered, and processed
            engine.reply(*asked[0], "ACK_MAINTENANCE")
    finally:
        engine.close()


def test_a_reply_to_a_held_session_is_its_insert_and_a_commit_and_nothing_else(
    db_path: Path,
) -> None:
    """Checked on the working set this engine holds, a reply reads nothing:
    its INSERT and the commit go to the connection the steps write on,
    without a SQLAlchemy transaction around them (its begin and commit cost
    more than the INSERT)."""
    engine, asked = asked_engine(db_path, 2)
    try:
        sent: list[str] = []
        begun: list[object] = []
        event.listen(engine.database, "before_cursor_execute", lambda *a: sent.append(a[2]))
        event.listen(engine.database, "begin", begun.append)
        commits = Commits(engine)
        engine.reply(*asked[0], "ACK_MAINTENANCE")
        assert [sql.split()[0] for sql in sent] == ["INSERT"]
        assert (commits.count, begun) == (1, [])
        assert outcomes(db_path) == [(asked[0][1], None)]  # durable, not processed yet
        with pytest.raises(Conflict, match="already answered"):
            engine.reply(*asked[0], "ACK_MAINTENANCE")
        engine.run_until_idle()
        assert outcomes(db_path) == [(asked[0][1], "accepted")]
    finally:
        engine.close()


def test_a_burst_sent_from_inside_a_step_is_committed_alone_and_taken_by_the_next(
    db_path: Path,
) -> None:
    sent: list[list[object]] = []

    def answer(engine: Engine, session_id: str, project_id: str) -> None:
        # A receiver answering from inside the step that delivers to it: no
        # step of the session runs re-entrantly; the burst commits alone.
        sent.append(engine.reply_many([(session_id, Reply(project_id, "ACK_MAINTENANCE"))]))
        assert outcomes(db_path)[-1] == (project_id, None)

    engine, asked = asked_engine(db_path, 2, answer)
    try:
        assert sent == [[None], [None]]
        assert outcomes(db_path) == [(p, "accepted") for _, p in asked]
    finally:
        engine.close()


def test_a_burst_whose_step_is_fenced_out_is_checked_and_written_alone(db_path: Path) -> None:
    engine, asked = asked_engine(db_path, 2)
    try:
        sid = asked[0][0]
        with sqlite3.connect(db_path) as db:  # the lease changed hands meanwhile
            db.execute(
                "UPDATE session_clock SET lease_token = lease_token + 1 WHERE session_id = ?",
                (sid,),
            )
        results = engine.reply_many([(s, Reply(p, "ACK_MAINTENANCE")) for s, p in asked])
        assert results == [None, None]
        assert outcomes(db_path) == [(p, None) for _, p in asked]
        assert engine.held_sessions() == []
        engine.run_until_idle()  # taken back (its own worker id) and processed
        assert outcomes(db_path) == [(p, "accepted") for _, p in asked]
    finally:
        engine.close()


def test_a_burst_whose_step_is_made_again_is_recorded_once(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, asked = asked_engine(db_path, 3)
    try:
        original = SqlSessionStore.write
        failed: list[object] = []

        def write(self: SqlSessionStore, step: Any) -> None:
            if not failed:  # the connection is lost once: the step is made again
                failed.append(step)
                raise OperationalError("UPDATE session_clock", {}, Exception("disk I/O error"))
            original(self, step)

        with monkeypatch.context() as patch:
            patch.setattr(SqlSessionStore, "write", write)
            results = engine.reply_many([(s, Reply(p, "ACK_MAINTENANCE")) for s, p in asked])
        assert results == [None, None, None]
        assert failed
        assert outcomes(db_path) == [(p, "accepted") for _, p in asked]
    finally:
        engine.close()
