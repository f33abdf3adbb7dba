"""Commits a session costs beyond one per step (issue 18: at most one commit
per step). Creating a session is one commit, its first listing of the
cloud's hosts included; its first step takes the lease in its own fenced
write, with no claim of its own. What is left is the insert and the
watermark its last step's delivery leaves (no next step carries it).

A session created by an engine that then dies without stepping it was
never leased: another worker takes and runs it at once, and the creator,
should it step after all, is fenced out and starts nothing."""

from __future__ import annotations

import pytest
from commit_counter import Commits
from sqlalchemy import func, select
from test_leases import UPGRADE, build_cloud

from fenix_core import Engine, SessionRequest, signals
from fenix_core.clock import SimClock
from fenix_core.store.schema import InventoryHostRow
from fenix_core.testing import TimedAction
from fenix_core.testing.seams import stored_clock


def worker(url: str, name: str, clock: SimClock, lease_clock: SimClock, *plugins: object) -> Engine:
    return Engine(
        url,
        clock=clock,
        lease_clock=lease_clock,
        plugins=list(plugins),
        load_entry_points=False,
        worker_id=name,
    )


def test_a_session_commits_once_per_step_besides_its_insert_and_last_mark(
    database_url: str,
) -> None:
    """On a fresh database (the inventory's first listing is written: the
    whole fleet), creating a session is one commit; its run is one commit
    per step plus the watermark of its last step's notifications."""
    cloud, upgrade = build_cloud(), TimedAction("upgrade", seconds=60)
    clock = SimClock()
    engine = worker(database_url, "w", clock, clock, cloud, upgrade)
    try:
        commits = Commits(engine)
        sid = engine.create_session(SessionRequest(actions=UPGRADE))
        assert commits.count == 1
        with engine.database.connect() as db:
            listed = db.scalar(select(func.count()).select_from(InventoryHostRow))
        assert listed == len(cloud.list_hosts())
        steps = engine.steps_run
        engine.run_until_done(sid)
        steps = engine.steps_run - steps
        assert engine.get_session(sid).state == "MAINTENANCE_DONE"
        assert commits.count == 1 + steps + 1
    finally:
        engine.close()


def test_the_first_step_takes_the_lease_in_its_write(database_url: str) -> None:
    """The session is stored with no lease until its first step commits;
    that commit is the step's only one and stores this worker's lease."""
    cloud, upgrade = build_cloud(), TimedAction("upgrade", seconds=600)
    clock = SimClock()
    engine = worker(database_url, "w", clock, clock, cloud, upgrade)
    try:
        sid = engine.create_session(SessionRequest(actions=UPGRADE))
        before = stored_clock(engine.database, sid)
        assert (before.owner, before.token, before.version) == (None, 0, 0)
        commits = Commits(engine)
        assert engine.step() == 1
        assert commits.count == 1
        after = stored_clock(engine.database, sid)
        assert (after.owner, after.token, after.version) == ("w", 1, 1)
        clock.advance(60)
        engine.step()  # later steps write under the lease the first one took
        assert stored_clock(engine.database, sid).owner == "w"
        assert stored_clock(engine.database, sid).version >= 2
    finally:
        engine.close()


@pytest.mark.parametrize("creator_steps_later", [False, True])
def test_a_session_whose_creator_dies_is_run_by_another_worker_at_once(
    database_url: str,
    creator_steps_later: bool,
) -> None:
    """The creator dies before its first step (never closed: no lease is
    released, none was taken). Another worker claims the session at its
    first look, without waiting for a lease to expire, and runs it to the
    end. A creator that was only stalled and steps after that is fenced
    out: it starts nothing, and claims the session as usual afterwards
    (finding it taken)."""
    cloud, upgrade = build_cloud(), TimedAction("upgrade", seconds=60)
    clock, lease_clock = SimClock(), SimClock()
    creator = worker(database_url, "creator", clock, lease_clock, cloud, upgrade)
    other = worker(database_url, "other", clock, lease_clock, cloud, upgrade)
    try:
        sid = creator.create_session(SessionRequest(actions=UPGRADE))
        assert other.step() == 1
        assert stored_clock(other.database, sid).owner == "other"
        if creator_steps_later:
            sent: list[str] = []
            for name, signal in signals.SIGNALS.items():
                signal.connect(
                    lambda _s, _p=None, n=name: sent.append(n), sender=creator, weak=False
                )
            version = stored_clock(other.database, sid).version
            assert creator.step() == 0  # fenced out: nothing written, nothing sent
            assert stored_clock(other.database, sid).version == version
            assert stored_clock(other.database, sid).owner == "other"
            assert creator.step() == 0  # claims as usual: the lease is other's
            assert sent == []
        other.run_until_done(sid)
        assert other.get_session(sid).state == "MAINTENANCE_DONE"
    finally:
        other.close()
        creator.database.dispose()
