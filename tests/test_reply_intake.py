"""ReplyIntake (fenix_core/core/replies.py) on its own: the refusals of a
reply checked in memory against a held session (no SQL), group commit
(one transaction for replies that arrive together; each caller returns once
its row is committed; a failed write raises in every caller and commits
nothing) and submit_many's per-item results. The engine's use of it is in
tests/test_group_commit.py."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.core.replies import (
    AcceptedReply,
    CarriedReplies,
    ProjectFacts,
    ReplyFacts,
    ReplyIntake,
    check_reply,
)
from fenix_core.errors import Conflict, FenixError, Forbidden, InvalidInput, NotFound
from fenix_core.model import Reply

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class DictFacts:
    """A session's reply facts in dicts (what a held working set offers)."""

    def __init__(
        self,
        projects: Mapping[str, ProjectFacts],
        instances: Mapping[str, Mapping[str, str]] | None = None,
        allowed: Sequence[str] = ("MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"),
        requires: bool = True,
    ) -> None:
        self.projects = dict(projects)
        self.instances = {p: dict(i) for p, i in (instances or {}).items()}
        self.pending: set[str] = set()
        self.session_state = "MAINTENANCE"
        self.allowed_actions = tuple(allowed)
        self.requires_instance_actions = requires

    def project(self, project_id: str) -> ProjectFacts | None:
        return self.projects.get(project_id)

    def reply_pending(self, project_id: str) -> bool:
        return project_id in self.pending

    def instance_states(self, project_id: str, named: Collection[str]) -> Mapping[str, str]:
        return self.instances.get(project_id, {})

    def note_reply(self, project_id: str) -> None:
        self.pending.add(project_id)


class RowFacts(DictFacts):
    """A session not held: its pending replies are the inbox table's rows."""

    def __init__(self, facts: DictFacts, db: sqlite3.Connection, session_id: str) -> None:
        self.__dict__.update(facts.__dict__)
        self.db = db
        self.session_id = session_id

    def reply_pending(self, project_id: str) -> bool:
        query = "SELECT 1 FROM inbox WHERE session_id = ? AND project_id = ?"
        return self.db.execute(query, (self.session_id, project_id)).fetchone() is not None

    def note_reply(self, project_id: str) -> None:
        raise AssertionError("only a held working set is told of a committed reply")


class Held:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.version = 1


class Sink:
    """ReplySink over a dict of held sessions; records wake-ups."""

    def __init__(self, held: Mapping[str, DictFacts]) -> None:
        self.sets = dict(held)
        self.woken: list[str] = []

    def held(self, session_id: str) -> Held | None:
        return Held(session_id) if session_id in self.sets else None

    def wake(self, session_id: str) -> None:
        self.woken.append(session_id)


class SqliteInbox:
    """An inbox table in a SQLite file; counts statements and transactions.
    ``db_facts`` answers for sessions that are not held (counted as SELECTs)."""

    def __init__(self, path: Path, db_facts: Mapping[str, DictFacts] | None = None) -> None:
        self.path = path
        self.db_facts = dict(db_facts or {})
        self.local = threading.local()
        self.selects = 0
        self.inserts = 0
        self.commits = 0
        self.appends = 0
        self.fail_next = False
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY, session_id TEXT,"
                " project_id TEXT, state TEXT, received_at TEXT)"
            )

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self.local, "db", None)
        if db is None:
            db = self.local.db = sqlite3.connect(self.path, isolation_level=None)
        return db

    @contextmanager
    def _immediate(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on an error; ``fail_next``
        fails it once before the commit."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            if self.fail_next:
                self.fail_next = False
                raise sqlite3.OperationalError("disk I/O error")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[SqliteInbox]:
        with self._immediate():
            yield self
        self.commits += 1

    def facts(self, session_id: str) -> ReplyFacts:
        self.selects += 1
        if session_id not in self.db_facts:
            raise NotFound("session", session_id, session_id=session_id)
        return RowFacts(self.db_facts[session_id], self._db(), session_id)

    def insert(self, rows: Sequence[AcceptedReply]) -> None:
        self.inserts += 1
        self._db().executemany(
            "INSERT INTO inbox (session_id, project_id, state, received_at) VALUES (?, ?, ?, ?)",
            [
                (r.session_id, r.reply.project_id, r.reply.state, r.received_at.isoformat())
                for r in rows
            ],
        )

    def append(self, rows: Sequence[AcceptedReply]) -> None:
        """Replies to held sessions in a transaction of their own that reads
        nothing (ReplyIntake's ``append``); counted apart from ``commits``."""
        with self._immediate():
            self.insert(rows)
        self.appends += 1

    def rows(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as db:
            return db.execute(
                "SELECT id, session_id, project_id, state FROM inbox ORDER BY id"
            ).fetchall()


def awaiting(
    *projects: str, state: str = "MAINTENANCE", reply_at: datetime | None = None
) -> dict[str, ProjectFacts]:
    return {p: ProjectFacts(state=state, awaiting=True, reply_at=reply_at) for p in projects}


def intake(
    inbox: SqliteInbox, sink: Sink, lock: Any = None, *, appending: bool = False
) -> ReplyIntake:
    """``appending``: batches to held sessions only go to ``inbox.append``."""
    return ReplyIntake(
        sink=sink,
        facts_of=lambda held: sink.sets[held.session_id],
        transaction=inbox.transaction,
        lock=lock or threading.RLock(),
        clock=lambda: NOW,
        append=inbox.append if appending else None,
    )


@pytest.fixture
def inbox(tmp_path: Path) -> SqliteInbox:
    return SqliteInbox(tmp_path / "inbox.sqlite")


# --------------------------------------------------------------------------- refusals, in memory


def test_held_session_is_checked_without_sql_and_a_second_reply_is_refused(
    inbox: SqliteInbox,
) -> None:
    facts = DictFacts(awaiting("pa", "pb"))
    sink = Sink({"s1": facts})
    replies = intake(inbox, sink)
    replies.submit("s1", Reply("pa", "ACK_MAINTENANCE"))
    with pytest.raises(Conflict, match="already answered MAINTENANCE"):
        replies.submit("s1", Reply("pa", "ACK_MAINTENANCE"))
    assert inbox.selects == 0  # the held working set answered every check
    assert inbox.rows() == [(1, "s1", "pa", "ACK_MAINTENANCE")]
    assert facts.pending == {"pa"}
    assert sink.woken == ["s1"]


def test_unheld_session_is_checked_in_the_writing_transaction(inbox: SqliteInbox) -> None:
    inbox.db_facts["s2"] = DictFacts(awaiting("pa"))
    replies = intake(inbox, Sink({}))
    replies.submit("s2", Reply("pa", "NACK_MAINTENANCE"))
    assert inbox.selects == 1
    assert inbox.commits == 1
    with pytest.raises(NotFound, match="session"):
        replies.submit("nope", Reply("pa", "ACK_MAINTENANCE"))
    assert len(inbox.rows()) == 1


def test_a_batch_to_held_sessions_only_is_appended_without_a_reading_transaction(
    inbox: SqliteInbox,
) -> None:
    one, two = DictFacts(awaiting("pa", "pb")), DictFacts(awaiting("pa"))
    sink = Sink({"s1": one, "s2": two})
    replies = intake(inbox, sink, appending=True)
    results = replies.submit_many(
        [
            ("s1", Reply("pa", "ACK_MAINTENANCE")),
            ("s2", Reply("pa", "NACK_MAINTENANCE")),
            ("s1", Reply("pa", "ACK_MAINTENANCE")),  # a second answer in the batch
            ("s1", Reply("pb", "ACK_MAINTENANCE")),
        ]
    )
    assert [type(r) for r in results] == [type(None), type(None), Conflict, type(None)]
    assert (inbox.appends, inbox.commits, inbox.selects) == (1, 0, 0)
    assert [r[1:3] for r in inbox.rows()] == [("s1", "pa"), ("s2", "pa"), ("s1", "pb")]
    assert (one.pending, two.pending) == ({"pa", "pb"}, {"pa"})
    assert sink.woken == ["s1", "s2"]
    with pytest.raises(Conflict, match="already answered"):  # the held set noted it
        replies.submit("s2", Reply("pa", "ACK_MAINTENANCE"))
    assert inbox.appends == 1  # nothing accepted: nothing written


def test_a_batch_with_a_session_not_held_is_checked_and_written_in_one_transaction(
    inbox: SqliteInbox,
) -> None:
    held = DictFacts(awaiting("pa"))
    inbox.db_facts["s2"] = DictFacts(awaiting("pb"))
    replies = intake(inbox, Sink({"s1": held}), appending=True)
    results = replies.submit_many(
        [("s1", Reply("pa", "ACK_MAINTENANCE")), ("s2", Reply("pb", "ACK_MAINTENANCE"))]
    )
    assert results == [None, None]
    assert (inbox.appends, inbox.commits, inbox.selects) == (0, 1, 1)
    assert [r[1:3] for r in inbox.rows()] == [("s1", "pa"), ("s2", "pb")]
    assert held.pending == {"pa"}


def test_an_append_that_fails_raises_in_every_caller_and_notes_nothing(
    inbox: SqliteInbox,
) -> None:
    facts = DictFacts(awaiting("pa", "pb"))
    sink = Sink({"s1": facts})
    replies = intake(inbox, sink, appending=True)
    inbox.fail_next = True
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        replies.submit_many(
            [("s1", Reply("pa", "ACK_MAINTENANCE")), ("s1", Reply("pb", "ACK_MAINTENANCE"))]
        )
    assert inbox.rows() == []
    assert facts.pending == set()  # not answered: they may be sent again
    assert sink.woken == []
    replies.submit("s1", Reply("pa", "ACK_MAINTENANCE"))
    assert [r[2] for r in inbox.rows()] == ["pa"]


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (Reply("px", "ACK_MAINTENANCE"), NotFound, "project"),
        (Reply("pa", "ACK_BOGUS"), InvalidInput, "not a reply state"),
        (Reply("pa", "ACK_SCALE_IN"), Conflict, "is not asked for SCALE_IN now"),
        (
            Reply("pl", "ACK_PREPARE_MAINTENANCE"),
            Conflict,
            "deadline for PREPARE_MAINTENANCE passed",
        ),
        (Reply("pp", "ACK_PREPARE_MAINTENANCE", {"b-1": "MIGRATE"}), Forbidden, "not one of its"),
        (Reply("pp", "ACK_PREPARE_MAINTENANCE", {"a-3": "MIGRATE"}), InvalidInput, "not affected"),
        (Reply("pp", "ACK_PREPARE_MAINTENANCE", {"a-1": "FLY"}), InvalidInput, "unknown action"),
        (
            Reply("pp", "ACK_PREPARE_MAINTENANCE", {"a-1": "OWN_ACTION"}),
            InvalidInput,
            "not allowed",
        ),
        (
            Reply("pp", "ACK_PREPARE_MAINTENANCE", {"a-1": "MIGRATE"}),
            InvalidInput,
            "no action given for a-2",
        ),
        (Reply("pp", "NACK_PREPARE_MAINTENANCE", {"a-1": "MIGRATE"}), InvalidInput, "not expected"),
    ],
)
def test_each_refusal_names_its_rule_and_writes_nothing(
    inbox: SqliteInbox, reply: Reply, error: type[FenixError], message: str
) -> None:
    facts = DictFacts(
        {
            "pa": ProjectFacts("MAINTENANCE", True, None),
            "pl": ProjectFacts("PREPARE_MAINTENANCE", True, NOW - timedelta(seconds=1)),
            "pp": ProjectFacts("PREPARE_MAINTENANCE", True, NOW + timedelta(hours=1)),
        },
        instances={
            "pp": {"a-1": "ACTION_REQUESTED", "a-2": "ACTION_REQUESTED", "a-3": "PROCESSING"}
        },
        allowed=("MIGRATE", "LIVE_MIGRATE"),
    )
    replies = intake(inbox, Sink({"s1": facts}))
    with pytest.raises(error, match=message):
        replies.submit("s1", reply)
    assert inbox.rows() == []
    assert facts.pending == set()


def test_check_reply_accepts_what_the_rules_allow() -> None:
    facts = DictFacts(
        awaiting("pp", state="PLANNED_MAINTENANCE"),
        instances={"pp": {"a-1": "ACTION_REQUESTED"}},
        requires=False,
    )
    check_reply(facts, "s1", Reply("pp", "ACK_PLANNED_MAINTENANCE", {"a-1": "LIVE_MIGRATE"}), NOW)
    check_reply(facts, "s1", Reply("pp", "ACK_PLANNED_MAINTENANCE"), NOW)  # not required here
    with pytest.raises(Conflict, match="already answered"):
        check_reply(facts, "s1", Reply("pp", "ACK_PLANNED_MAINTENANCE"), NOW, answered={"pp"})


# --------------------------------------------------------------------------- group commit


def test_replies_that_arrive_together_share_one_transaction(inbox: SqliteInbox) -> None:
    projects = [f"p{i}" for i in range(400)]
    sink = Sink({"s1": DictFacts(awaiting(*projects))})
    replies = intake(inbox, sink)
    start = threading.Barrier(8)

    def answer(thread: int) -> None:
        start.wait()
        for project in projects[thread::8]:
            replies.submit("s1", Reply(project, "ACK_MAINTENANCE"))

    threads = [threading.Thread(target=answer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = inbox.rows()
    assert sorted(r[2] for r in rows) == sorted(projects)
    assert replies.batches == inbox.commits <= len(projects)
    # Each thread's replies are in the inbox in the order it sent them.
    for sender in range(8):
        own = set(projects[sender::8])
        assert [r[2] for r in rows if r[2] in own] == projects[sender::8]


def test_a_failed_write_raises_in_every_caller_and_commits_nothing(inbox: SqliteInbox) -> None:
    projects = [f"p{i}" for i in range(8)]
    facts = DictFacts(awaiting(*projects))
    lock = threading.RLock()
    replies = intake(inbox, Sink({"s1": facts}), lock)
    errors: dict[str, BaseException | None] = {}

    def answer(project: str) -> None:
        try:
            replies.submit("s1", Reply(project, "ACK_MAINTENANCE"))
            errors[project] = None
        except BaseException as error:
            errors[project] = error

    # Hold the lock so that all eight queue up, then let one batch write them.
    with lock:
        threads = [threading.Thread(target=answer, args=(p,)) for p in projects]
        for thread in threads:
            thread.start()
        while replies.queued < 8:
            threading.Event().wait(0.005)
        inbox.fail_next = True
    for thread in threads:
        thread.join()
    assert inbox.rows() == []
    assert inbox.commits == 0
    assert all(isinstance(errors[p], sqlite3.OperationalError) for p in projects)
    assert facts.pending == set()  # the held set learns of nothing that was not committed
    replies.submit("s1", Reply("p0", "ACK_MAINTENANCE"))  # and the replies may be sent again
    assert len(inbox.rows()) == 1


def test_a_reply_from_a_thread_holding_the_engine_lock_does_not_wait_for_another_writer(
    inbox: SqliteInbox,
) -> None:
    """A signal handler replies inside a step, holding the (reentrant) lock."""
    lock = threading.RLock()
    replies = intake(inbox, Sink({"s1": DictFacts(awaiting("pa", "pb"))}), lock)
    other = threading.Thread(target=replies.submit, args=("s1", Reply("pb", "ACK_MAINTENANCE")))
    with lock:
        other.start()
        while not replies.queued:
            threading.Event().wait(0.005)
        replies.submit("s1", Reply("pa", "ACK_MAINTENANCE"))  # writes both, under its own lock
        assert {r[2] for r in inbox.rows()} == {"pa", "pb"}
    other.join(timeout=10)
    assert not other.is_alive()
    assert inbox.commits == 1


# --------------------------------------------------------------------------- submit_many


def test_submit_many_commits_the_valid_ones_together_and_reports_the_others(
    inbox: SqliteInbox,
) -> None:
    inbox.db_facts["s2"] = DictFacts(awaiting("pc"))
    facts = DictFacts(awaiting("pa", "pb"))
    replies = intake(inbox, Sink({"s1": facts}))
    results = replies.submit_many(
        [
            ("s1", Reply("pa", "ACK_MAINTENANCE")),
            ("s1", Reply("pa", "NACK_MAINTENANCE")),  # the same project twice in one burst
            ("s1", Reply("pb", "ACK_NONSENSE")),
            ("s3", Reply("pa", "ACK_MAINTENANCE")),
            ("s2", Reply("pc", "ACK_MAINTENANCE")),
            ("s1", Reply("pb", "ACK_MAINTENANCE")),
        ]
    )
    assert results[0] is None
    assert results[4] is None
    assert results[5] is None
    assert isinstance(results[1], Conflict)
    assert "already answered" in str(results[1])
    assert isinstance(results[2], InvalidInput)
    assert isinstance(results[3], NotFound)
    assert inbox.commits == 1
    assert [r[1:3] for r in inbox.rows()] == [("s1", "pa"), ("s2", "pc"), ("s1", "pb")]


def test_submit_many_raises_a_failed_write_and_commits_nothing(inbox: SqliteInbox) -> None:
    replies = intake(inbox, Sink({"s1": DictFacts(awaiting("pa", "pb"))}))
    inbox.fail_next = True
    with pytest.raises(sqlite3.OperationalError):
        replies.submit_many(
            [("s1", Reply("pa", "ACK_MAINTENANCE")), ("s1", Reply("pb", "ACK_MAINTENANCE"))]
        )
    assert inbox.rows() == []
    assert replies.submit_many([("s1", Reply("pa", "ACK_MAINTENANCE"))]) == [None]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2", "s9"]),
            st.sampled_from(["pa", "pb", "pc", "pz"]),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_submit_many_equals_one_submit_after_another(
    tmp_path_factory: pytest.TempPathFactory, burst: list[tuple[str, str, bool]]
) -> None:
    """Per item, a burst ends as the same replies sent one by one would."""
    results = []
    for many in (True, False):
        inbox = SqliteInbox(
            tmp_path_factory.mktemp("inbox") / "inbox.sqlite",
            {"s2": DictFacts(awaiting("pa", "pc"))},
        )
        replies = intake(inbox, Sink({"s1": DictFacts(awaiting("pa", "pb"))}))
        items = [(s, Reply(p, "ACK_MAINTENANCE" if ok else "ACK_X")) for s, p, ok in burst]
        if many:
            got = [type(e) for e in replies.submit_many(items)]
        else:
            got = []
            for session_id, reply in items:
                try:
                    replies.submit(session_id, reply)
                    got.append(type(None))
                except FenixError as error:
                    got.append(type(error))
        results.append((got, [r[1:] for r in inbox.rows()]))
    assert results[0] == results[1]


# ------------------------------------------------------------------- a burst carried by a step


class Carrier:
    """The engine's ``carry``: records the bursts handed over; ``commits``
    says whether the step committed them."""

    def __init__(self, commits: bool = True) -> None:
        self.commits = commits
        self.carried: list[tuple[str, list[tuple[str, str]]]] = []

    def __call__(self, session_id: str, replies: CarriedReplies) -> bool:
        self.carried.append(
            (session_id, [(r.reply.project_id, r.reply.state) for r in replies.replies])
        )
        if self.commits:
            replies.mark_committed()
        return self.commits


def carrying(inbox: SqliteInbox, sink: Sink, carry: Carrier) -> ReplyIntake:
    return ReplyIntake(
        sink=sink,
        facts_of=lambda held: sink.sets[held.session_id],
        transaction=inbox.transaction,
        lock=threading.RLock(),
        clock=lambda: NOW,
        carry=carry,
    )


def test_a_burst_to_one_held_session_is_handed_to_its_step_and_not_committed_alone(
    inbox: SqliteInbox,
) -> None:
    sink, carry = Sink({"s1": DictFacts(awaiting("pa", "pb"))}), Carrier()
    replies = carrying(inbox, sink, carry)
    results = replies.submit_many(
        [
            ("s1", Reply("pa", "ACK_MAINTENANCE")),
            ("s1", Reply("pa", "ACK_MAINTENANCE")),
            ("s1", Reply("pb", "NACK_MAINTENANCE")),
        ]
    )
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], Conflict)  # checked before anything is written
    assert carry.carried == [("s1", [("pa", "ACK_MAINTENANCE"), ("pb", "NACK_MAINTENANCE")])]
    assert (inbox.commits, inbox.rows(), sink.woken) == (0, [], [])
    replies.submit("s1", Reply("pb", "ACK_MAINTENANCE"))  # reply() commits on its own
    assert inbox.commits == 1
    assert len(carry.carried) == 1


def test_a_burst_its_step_did_not_commit_is_checked_again_and_written_alone(
    inbox: SqliteInbox,
) -> None:
    sink, carry = Sink({"s1": DictFacts(awaiting("pa"))}), Carrier(commits=False)
    replies = carrying(inbox, sink, carry)
    assert replies.submit_many([("s1", Reply("pa", "ACK_MAINTENANCE"))]) == [None]
    assert len(carry.carried) == 1
    assert (inbox.commits, inbox.rows(), sink.woken) == (
        1,
        [(1, "s1", "pa", "ACK_MAINTENANCE")],
        ["s1"],
    )


def test_a_burst_over_two_sessions_or_an_unheld_one_is_committed_alone(
    inbox: SqliteInbox,
) -> None:
    inbox.db_facts = {"s3": DictFacts(awaiting("pc"))}
    sink, carry = (
        Sink({"s1": DictFacts(awaiting("pa")), "s2": DictFacts(awaiting("pb"))}),
        Carrier(),
    )
    replies = carrying(inbox, sink, carry)
    burst = [("s1", Reply("pa", "ACK_MAINTENANCE")), ("s2", Reply("pb", "ACK_MAINTENANCE"))]
    assert replies.submit_many(burst) == [None, None]
    assert replies.submit_many([("s3", Reply("pc", "ACK_MAINTENANCE"))]) == [None]
    assert carry.carried == []
    assert inbox.commits == 2
    assert len(inbox.rows()) == 3
