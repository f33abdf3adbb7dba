"""Reading new rows by id when writers commit out of id order
(fenix_core/core/id_cursor.py), and the host changes other workers commit
read that way (fenix_core/core/inventory.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from test_core_leases import database

from fenix_core.core.id_cursor import IdCursor
from fenix_core.core.inventory import InventoryCache
from fenix_core.model import Host

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def read(cursor: IdCursor, committed: set[int], now: float) -> list[int]:
    """What a reader's query returns: committed ids above the mark or among
    the holes, then reported to the cursor."""
    holes = set(cursor.holes())
    found = sorted(i for i in committed if i > cursor.last or i in holes)
    cursor.saw(found, now)
    return found


def test_an_id_committed_after_a_higher_one_is_read_at_the_next_read() -> None:
    cursor = IdCursor()
    assert read(cursor, {1, 2}, now=0) == [1, 2]
    assert read(cursor, {1, 2, 4}, now=1) == [4]  # 3 drawn, not committed yet
    assert cursor.holes() == [3]
    assert read(cursor, {1, 2, 3, 4}, now=2) == [3]
    assert cursor.holes() == []
    assert read(cursor, {1, 2, 3, 4}, now=3) == []


def test_an_id_that_never_commits_is_given_up_after_hold_seconds() -> None:
    cursor = IdCursor(hold_seconds=60)
    read(cursor, {1, 3}, now=0)
    assert cursor.holes() == [2]
    read(cursor, {1, 3}, now=59)
    assert cursor.holes() == [2]
    read(cursor, {1, 3}, now=61)  # rolled back: nothing will fill it
    assert cursor.holes() == []


def test_ids_this_process_wrote_are_not_read_again_and_leave_holes_below_them() -> None:
    cursor = IdCursor()
    cursor.saw([5], now=0)  # its own commit
    assert (cursor.last, cursor.holes()) == (5, [1, 2, 3, 4])
    assert read(cursor, {2, 5}, now=1) == [2]


def test_a_first_read_waits_only_for_the_recent_ids_missing() -> None:
    cursor = IdCursor()
    cursor.start(100, present={97, 98, 100}, window=5, now=0)
    assert (cursor.last, cursor.holes()) == (100, [96, 99])


def test_holes_are_bounded() -> None:
    cursor = IdCursor(limit=3)
    cursor.saw([10], now=0)
    assert cursor.holes() == [7, 8, 9]


@settings(max_examples=300, deadline=None)
@given(
    order=st.permutations(list(range(1, 21))),
    reads=st.lists(st.integers(0, 20), max_size=25),
)
def test_every_committed_id_is_read_exactly_once_whatever_the_commit_order(
    order: list[int], reads: list[int]
) -> None:
    """Ids 1..20 commit in any order; the reader reads after any number of
    commits (then once more at the end, within ``hold_seconds``)."""
    cursor = IdCursor()
    seen: list[int] = []
    for step, _ in enumerate(order):
        committed = set(order[: step + 1])
        if step in reads:
            seen += read(cursor, committed, now=step)
    seen += read(cursor, set(order), now=len(order))
    assert sorted(seen) == list(range(1, 21))


def test_host_changes_two_workers_commit_out_of_id_order_reach_a_third(
    database_url: str,
) -> None:
    """Worker a's change draws its id first and commits last; worker c reads
    b's in between and a's once it committed (it used to read only ids
    above the highest it had read, so a's host never reached c's cache)."""
    db = database(database_url, "s1")
    a, b, c = InventoryCache(db), InventoryCache(db), InventoryCache(db)
    for cache in (a, b, c):
        cache.hosts()
    inserted, release = threading.Event(), threading.Event()
    slow = db.dialect.name == "postgresql"  # SQLite lets one writer in at a time

    def held(_connection: object) -> None:
        if threading.current_thread().name == "worker-a":
            inserted.set()
            assert release.wait(timeout=30)

    event.listen(db, "commit", held)
    admitted = threading.Thread(
        target=lambda: a.admit(Host("from-a", "compute", 8, True), now=T0, session_id="s1"),
        name="worker-a",
    )
    try:
        if slow:
            admitted.start()
            assert inserted.wait(timeout=30)
        b.admit(Host("from-b", "compute", 8, True), now=T0, session_id="s1")
        assert c.poll() == ["from-b"]
    finally:
        release.set()
        if slow:
            admitted.join(timeout=30)
        else:
            admitted.run()
    event.remove(db, "commit", held)
    assert c.poll() == ["from-a"]
    assert {"from-a", "from-b"} <= set(c.hosts())
    assert c.poll() == []
    db.dispose()
