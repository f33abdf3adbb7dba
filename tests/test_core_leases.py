"""The engine's lease keeper (fenix_core.core.leases) and due poller
(fenix_core.core.poller), on the ``session_clock`` rows the engine steps, on a SQLite
file and, where a server can be started, on PostgreSQL: claims are
compare-and-set on the token, a taken-over lease gets a new token (so the old
holder's fence no longer matches), SKIP LOCKED never waits, and on
PostgreSQL the database's clock decides what has expired."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, select, update

from fenix_core.clock import SimClock
from fenix_core.core.leases import DatabaseClock, LeaseLost, SqlLeaseKeeper
from fenix_core.core.poller import SqlDbPoller
from fenix_core.store.database import migrate, open_database
from fenix_core.store.schema import InboxRow, SessionClockRow, SessionRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def database(url: str, *sessions: str) -> Engine:
    db = open_database(url)
    migrate(db)
    with db.begin() as connection:
        for sid in sessions:
            connection.execute(
                SessionRow.__table__.insert().values(  # type: ignore[attr-defined]
                    id=sid,
                    workflow="rolling",
                    request={},
                    state="MAINTENANCE",
                    phase="",
                    data={},
                    seq=0,
                    version=0,
                    percent_done=0,
                    created_at=T0,
                    updated_at=T0,
                    lease_token=0,
                )
            )
            connection.execute(
                SessionClockRow.__table__.insert().values(session_id=sid)  # type: ignore[attr-defined]
            )
    return db


def lease_row(db: Engine, sid: str) -> tuple[str | None, int, datetime | None]:
    with db.connect() as connection:
        row = connection.execute(
            select(
                SessionClockRow.lease_owner,
                SessionClockRow.lease_token,
                SessionClockRow.lease_expires,
            ).where(SessionClockRow.session_id == sid)
        ).one()
    return row[0], row[1], row[2]


def test_a_lease_is_held_until_it_expires_then_taken_with_a_new_token(database_url: str) -> None:
    db = database(database_url, "s1", "s2")
    clock = SimClock(start=T0)
    a = SqlLeaseKeeper(db, "a", 30, clock)
    b = SqlLeaseKeeper(db, "b", 30, clock)
    got = a.claim(["s1", "s2"])
    assert sorted(got) == ["s1", "s2"]
    assert got["s1"].token == 1
    assert lease_row(db, "s1") == ("a", 1, T0 + timedelta(seconds=30))
    assert b.claim(["s1"]) == {}
    with pytest.raises(LeaseLost):
        b.fence("s1")
    assert a.claim(["s1"])["s1"].token == 1  # a renewal keeps the token
    clock.advance(31)
    taken = b.claim(["s1"])
    assert taken["s1"].token == 2
    assert b.fence("s1").token == 2
    assert a.claim(["s1"]) == {}  # b holds it now; a forgets it
    with pytest.raises(LeaseLost):
        a.fence("s1")
    b.release_all()
    assert lease_row(db, "s1") == (None, 2, None)
    assert a.claim(["s1"])["s1"].token == 3
    db.dispose()


def test_the_fence_carries_the_version_seen_at_the_claim(database_url: str) -> None:
    db = database(database_url, "s1")
    with db.begin() as connection:
        connection.execute(
            update(SessionClockRow).where(SessionClockRow.session_id == "s1").values(version=7)
        )
    keeper = SqlLeaseKeeper(db, "a", 30, SimClock(start=T0))
    keeper.claim(["s1"])
    assert keeper.fence("s1").version == 7
    keeper.lost("s1")
    with pytest.raises(LeaseLost):
        keeper.fence("s1")
    db.dispose()


def test_postgresql_skips_a_locked_row_instead_of_waiting(postgres_url: str) -> None:
    db = database(postgres_url, "s1", "s2")
    keeper = SqlLeaseKeeper(db, "a", 30)
    with db.connect() as locker:
        locker.execute(
            select(SessionClockRow.session_id)
            .where(SessionClockRow.session_id == "s1")
            .with_for_update()
        )
        result: dict[str, object] = {}
        worker = threading.Thread(target=lambda: result.update(keeper.claim(["s1", "s2"])))
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "claim waited on a locked row"
        locker.rollback()
    assert sorted(result) == ["s2"]
    db.dispose()


def test_postgresql_expiry_follows_the_database_clock(postgres_url: str) -> None:
    db = database(postgres_url, "s1")
    keeper = SqlLeaseKeeper(db, "a", 30)
    assert isinstance(keeper.clock, DatabaseClock)
    # A lease that expired by the database's clock (a year ago) is free even
    # if this machine's clock were far behind: the comparison is now() in SQL.
    with db.begin() as connection:
        connection.execute(
            update(SessionClockRow)
            .where(SessionClockRow.session_id == "s1")
            .values(lease_owner="dead", lease_token=4, lease_expires=T0 - timedelta(days=365))
        )
    assert keeper.claim(["s1"])["s1"].token == 5
    _, _, expires = lease_row(db, "s1")
    assert expires is not None
    assert abs(expires - (keeper.clock.now() + timedelta(seconds=30))) < timedelta(seconds=5)
    db.dispose()


def test_the_poller_finds_due_sessions_no_live_lease_covers(database_url: str) -> None:
    db = database(database_url, "free", "later", "held", "expired", "replied", "held-replied")
    clock = SimClock(start=T0)
    later = T0 + timedelta(hours=1)
    with db.begin() as connection:
        for sid, wake, owner, expires in (
            ("free", T0, None, None),
            ("later", later, None, None),
            ("held", T0, "b", T0 + timedelta(seconds=10)),
            ("expired", T0, "b", T0 - timedelta(seconds=1)),
            ("replied", None, None, None),
            ("held-replied", None, "b", T0 + timedelta(seconds=10)),
        ):
            connection.execute(
                update(SessionClockRow)
                .where(SessionClockRow.session_id == sid)
                .values(next_wake=wake, lease_owner=owner, lease_expires=expires)
            )
        for sid in ("replied", "held-replied"):
            connection.execute(
                InboxRow.__table__.insert().values(  # type: ignore[attr-defined]
                    session_id=sid, project_id="p", state="ACK", instance_actions={}, received_at=T0
                )
            )
    poller = SqlDbPoller(db, clock)
    assert poller.poll(T0) == ["expired", "free", "replied"]
    assert poller.replied == {"replied"}  # found for a reply, not a wake-up
    assert poller.poll(later) == ["expired", "free", "later", "replied"]
    clock.advance(11)  # b's leases ran out
    assert poller.poll(T0) == ["expired", "free", "held", "held-replied", "replied"]
    assert poller.replied == {"held-replied", "replied"}
    db.dispose()


def test_the_poller_finds_notifications_a_dead_worker_committed_and_did_not_send(
    database_url: str,
) -> None:
    """A session whose stored delivery watermark is behind its last
    notification, not due for hours: found, flagged ``behind``, once its
    holder's lease has run out (or is this worker's), not while it is live."""
    db = database(database_url, "behind", "sent", "due-behind", "held-behind")
    clock = SimClock(start=T0)
    later = T0 + timedelta(hours=1)
    with db.begin() as connection:
        for sid, wake, seq, delivered, owner in (
            ("behind", later, 4, 3, None),
            ("sent", later, 4, 4, None),
            ("due-behind", T0, 4, 3, None),
            ("held-behind", later, 4, 3, "b"),
        ):
            connection.execute(
                update(SessionClockRow)
                .where(SessionClockRow.session_id == sid)
                .values(
                    next_wake=wake,
                    seq=seq,
                    delivered_seq=delivered,
                    lease_owner=owner,
                    lease_expires=T0 + timedelta(seconds=10) if owner else None,
                )
            )
    poller = SqlDbPoller(db, clock)
    assert poller.poll(T0) == ["behind", "due-behind"]
    assert poller.behind == {"behind"}  # the other is due anyway
    assert poller.replied == frozenset()
    clock.advance(11)  # b's lease ran out
    assert poller.poll(T0) == ["behind", "due-behind", "held-behind"]
    assert poller.behind == {"behind", "held-behind"}
    assert SqlDbPoller(db, SimClock(start=T0), owner="b").poll(T0) == [
        "behind",
        "due-behind",
        "held-behind",  # b's own: b restarted under its id takes it back at once
    ]
    db.dispose()


def test_a_claim_takes_at_most_its_limit_in_one_statement(database_url: str) -> None:
    """Six due sessions, two workers claiming three each: one statement per
    claim (not one per session), session id order, and what the first took
    is not the second's."""
    sids = [f"s{n}" for n in range(6)]
    db = database(database_url, *sids)
    assert db.dialect.update_returning
    clock = SimClock(start=T0)
    a = SqlLeaseKeeper(db, "a", 30, clock)
    b = SqlLeaseKeeper(db, "b", 30, clock)
    statements: list[str] = []
    event.listen(db, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert sorted(a.claim(sids, 3)) == ["s0", "s1", "s2"]
    assert len(statements) == 1
    assert sorted(b.claim(sids, 3)) == ["s3", "s4", "s5"]
    assert len(statements) == 2
    assert b.claim(sids, 3) == {"s3": b.fence("s3"), "s4": b.fence("s4"), "s5": b.fence("s5")}
    assert a.claim(sids, 0) == {}
    assert [lease_row(db, s)[:2] for s in sids] == [("a", 1)] * 3 + [("b", 1)] * 3
    db.dispose()


def test_postgresql_a_claim_takes_the_next_rows_past_those_another_claim_locks(
    postgres_url: str,
) -> None:
    """Two workers claiming from the same due list at once split it: rows
    the other's claim has locked are skipped, and the limit is filled from
    the rows after them, without waiting."""
    sids = [f"s{n}" for n in range(6)]
    db = database(postgres_url, *sids)
    keeper = SqlLeaseKeeper(db, "b", 30)
    with db.connect() as other:  # "a"'s claim, in flight
        other.execute(
            select(SessionClockRow.session_id)
            .where(SessionClockRow.session_id.in_(sids[:3]))
            .with_for_update()
        )
        result: dict[str, object] = {}
        worker = threading.Thread(target=lambda: result.update(keeper.claim(sids, 2)))
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "claim waited on locked rows"
        other.rollback()
    assert sorted(result) == ["s3", "s4"]
    db.dispose()


def test_without_returning_a_claim_is_a_compare_and_set_per_session(tmp_path: Path) -> None:
    """SQLite before 3.35 has no RETURNING: the same claims, limits and
    tokens, by a read and a compare-and-set per session."""
    sids = [f"s{n}" for n in range(4)]
    db = database(f"sqlite:///{tmp_path / 'old.db'}", *sids)
    db.dialect.update_returning = False
    clock = SimClock(start=T0)
    a = SqlLeaseKeeper(db, "a", 30, clock)
    b = SqlLeaseKeeper(db, "b", 30, clock)
    assert sorted(a.claim(sids, 2)) == ["s0", "s1"]
    assert sorted(b.claim(sids)) == ["s2", "s3"]
    assert a.claim(["s0"])["s0"].token == 1  # renewed
    clock.advance(31)
    assert b.claim(["s0"])["s0"].token == 2  # taken
    assert lease_row(db, "s0") == ("b", 2, T0 + timedelta(seconds=61))
    db.dispose()
