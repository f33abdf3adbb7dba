"""The session store contract: one suite that every SessionStore passes
(tests/test_sql_store.py runs it on MemorySessionStore, SQLite and
PostgreSQL). A ``harness`` fixture gives the store and the seams a test
needs that the store port does not have (setting a lease, putting a reply
in the inbox, reading the outbox)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

from fenix_core.core.ports import Fence, NewSession, SessionStore
from fenix_core.core.working_set import (
    ComponentRec,
    HostMark,
    HostRec,
    InstanceRec,
    OpRec,
    ProjectRec,
    SessionRec,
    WorkingSet,
)
from fenix_core.errors import NotFound
from fenix_core.store.leases import LeaseLost

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = "worker-a"


class Harness(Protocol):
    store: SessionStore

    def set_lease(self, session_id: str, owner: str | None, token: int) -> None: ...
    def add_reply(self, session_id: str, project_id: str, state: str) -> int: ...
    def outbox(self, session_id: str) -> list[tuple[int, str, dict[str, Any]]]: ...
    def reply_outcomes(self, session_id: str) -> dict[int, str | None]: ...


def new_session(sid: str = "s-1", hosts: int = 3, per_host: int = 2) -> NewSession:
    session = SessionRec(
        id=sid, workflow="rolling", request={"hosts": hosts}, created_at=T0,
        state="MAINTENANCE", phase="", reason=None, failed_state=None, percent_done=0,
        maintenance_at=T0, updated_at=T0, finished_at=None,
        version=0, seq=0, next_wake=T0, lease_owner=None, lease_token=0, lease_expires=None,
        delivered_seq=0, inbox_seen_id=0,
    )  # fmt: skip
    host_rows = [
        HostRec(f"cmp-{n}", "compute", 8, "PENDING", n, 0, True, False, 0, None, None, None)
        for n in range(hosts)
    ]
    instances = [
        InstanceRec(
            f"vm-{n}-{k}",
            f"p{k}",
            f"vm {n}.{k}",
            f"cmp-{n}",
            1 + k,
            True,
            "PENDING",
            None,
            None,
            0,
            0,
            None,
            None,
            None,
            None,
            None,
        )
        for n in range(hosts)
        for k in range(per_host)
    ]
    projects = [ProjectRec(f"p{k}", True, None, False, None, None, False) for k in range(per_host)]
    return NewSession(
        session=session.row(),
        hosts=[h.row() for h in host_rows],
        instances=[i.row() for i in instances],
        projects=[p.row() for p in projects],
        components=[ComponentRec("rolling", 1, {"wave": 0}).row()],
    )


def held(harness: Harness, sid: str = "s-1", token: int = 1) -> tuple[WorkingSet, Fence]:
    harness.set_lease(sid, OWNER, token)
    ws = harness.store.load(sid)
    return ws, Fence(sid, OWNER, token, ws.version)


def records(ws: WorkingSet) -> dict[str, Any]:
    """Everything a working set holds, comparable across loads."""
    return {
        "session": ws.session.row(),
        "hosts": sorted(h.row() for h in ws.hosts.values()),
        "instances": {i.instance_id: i.row() for i in ws.instances.values()},
        "projects": {p.project_id: p.row() for p in ws.projects.values()},
        "ops": {o.key: o.row() for o in ws.ops.values()},
        "timers": {t.name: t.row() for t in ws.timers.values()},
        "components": {c.component: c.row() for c in ws.components.values()},
    }


def an_op(key: str, host: str, instance_id: str | None) -> OpRec:
    """A pending move operation, as a workflow's submit records it."""
    return OpRec(
        key, "move", host, instance_id, {"action": "LIVE_MIGRATE"}, "pending", None, None,
        None, 0, None, {}, False, T0, None, None,
    )  # fmt: skip


def a_step(ws: WorkingSet, n: int = 0) -> None:
    """A typical step: one migration ended, the next started, a notice owed."""
    ws.set_instance_state("vm-0-0", "DONE")
    ws.place("vm-0-0", "cmp-1")
    ws.set_target("vm-0-1", "cmp-2")
    ws.set_instance_state("vm-0-1", "IN_ACTION")
    ws.add_op(an_op(f"{ws.session.id}:{n + 1}", "cmp-0", "vm-0-1"))
    ws.emit("maintenance_instance", {"instance_id": "vm-0-0", "state": "DONE"})


def test_insert_then_load_gives_the_rows(harness: Harness) -> None:
    new = new_session()
    harness.store.insert(new)
    ws = harness.store.load("s-1")
    assert records(ws) == records(WorkingSet.from_new(new))
    assert [h.name for h in ws.hosts.values()] == ["cmp-0", "cmp-1", "cmp-2"]
    with pytest.raises(NotFound):
        harness.store.load("nope")


def test_a_write_is_loaded_back_as_written(harness: Harness) -> None:
    harness.store.insert(new_session())
    ws, fence = held(harness)
    a_step(ws)
    ws.update_session(phase="draining", percent_done=10)
    ws.mark_host("cmp-0", HostMark.STARTED)
    ws.update_instance("vm-1-0", refused=["cmp-2"], moved_from="cmp-0")
    ws.update_project("p0", awaiting=True, state="PREPARE", reply_at=T0)
    ws.set_timer("retry_move:vm-1-0", T0 + timedelta(seconds=30), {"instance_id": "vm-1-0"})
    ws.set_component("controls", 1, {"paused": False})
    ws.add_host(HostRec("cmp-9", "compute", 16, "ADDED", 9, 0, True, False, 0, None, None, None))
    # Rows that joined the session with its new host (every kind of row a
    # step writes is in this write).
    ws.add_project(ProjectRec("p9", True, None, False, None, None, False))
    joined = InstanceRec(
        "vm-9-0", "p9", "vm 9.0", "cmp-9", 1, True, "PENDING", None, None, 0, 0,
        None, None, None, None, None,
    )  # fmt: skip
    ws.add_instance(joined)
    wake = T0 + timedelta(seconds=5)
    harness.store.write(ws.take_write(fence, next_wake=wake, lease_expires=T0))
    again = harness.store.load("s-1")
    assert records(again) == records(ws)
    assert again.version == 1
    assert again.session.seq == 1
    assert again.session.next_wake == wake
    assert [seq for seq, _, _ in harness.outbox("s-1")] == [1]


def test_the_next_step_updates_what_the_last_inserted(harness: Harness) -> None:
    harness.store.insert(new_session())
    ws, fence = held(harness)
    a_step(ws)
    harness.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    fence = Fence("s-1", OWNER, 1, ws.version)
    ws.update_op("s-1:1", status="done", handled=True, finished_at=T0)
    ws.cancel_timer("nothing-set")
    ws.set_timer("deadline", T0)
    harness.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert "s-1:1" not in ws.ops  # handled operations are not kept
    again = harness.store.load("s-1")
    assert records(again) == records(ws)
    fence = Fence("s-1", OWNER, 1, ws.version)
    ws.cancel_timer("deadline")
    harness.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert harness.store.load("s-1").timers == {}


@pytest.mark.parametrize(
    "stale",
    [
        lambda f: Fence(f.session_id, "worker-b", f.token, f.version),
        lambda f: Fence(f.session_id, f.owner, f.token - 1, f.version),
        lambda f: Fence(f.session_id, f.owner, f.token, f.version - 1),
    ],
    ids=["other-owner", "old-token", "old-version"],
)
def test_a_stale_fence_raises_lease_lost_and_writes_nothing(
    harness: Harness, stale: Callable[[Fence], Fence]
) -> None:
    harness.store.insert(new_session())
    ws, fence = held(harness, token=2)
    a_step(ws)  # one step written, so the version moved
    harness.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    before = records(harness.store.load("s-1"))
    outbox = harness.outbox("s-1")
    ws = harness.store.load("s-1")
    reply = harness.add_reply("s-1", "p0", "ACK_PREPARE")
    a_step(ws, n=1)
    ws.update_session(state="MAINTENANCE_FAILED")
    ws.set_component("rolling", 1, {"wave": 7})
    ws.set_timer("t", T0)
    ws.processed(reply, "accepted", T0)
    write = ws.take_write(Fence("s-1", OWNER, 2, ws.version), next_wake=None, lease_expires=T0)
    write = type(write)(**{**_fields(write), "fence": stale(write.fence)})
    with pytest.raises(LeaseLost):
        harness.store.write(write)
    assert records(harness.store.load("s-1")) == before
    assert harness.outbox("s-1") == outbox
    assert harness.reply_outcomes("s-1") == {reply: None}


def test_a_claiming_write_takes_a_lease_nobody_took(harness: Harness) -> None:
    """The first write of a session its worker inserted takes the lease
    (``Fence.claims``): it stores the owner and the token, and the next
    write is fenced by them as after a claim."""
    harness.store.insert(new_session())
    ws = harness.store.load("s-1")
    a_step(ws)
    claiming = Fence("s-1", OWNER, 1, 0, claims=True)
    harness.store.write(ws.take_write(claiming, next_wake=None, lease_expires=T0))
    stored = harness.store.load("s-1").session
    assert (stored.lease_owner, stored.lease_token, stored.version) == (OWNER, 1, 1)
    a_step(ws, 1)
    harness.store.write(ws.take_write(Fence("s-1", OWNER, 1, 1), next_wake=None, lease_expires=T0))
    assert harness.store.load("s-1").version == 2


@pytest.mark.parametrize("holder", [("worker-b", 1), (None, 1)], ids=["held", "released"])
def test_a_claiming_write_is_fenced_out_once_anyone_took_the_lease(
    harness: Harness, holder: tuple[str | None, int]
) -> None:
    """Another worker claimed the session first (and may have let it go
    since: the token moved on): the claiming write changes nothing."""
    harness.store.insert(new_session())
    ws = harness.store.load("s-1")
    harness.set_lease("s-1", *holder)
    a_step(ws)
    claiming = Fence("s-1", OWNER, 1, 0, claims=True)
    with pytest.raises(LeaseLost):
        harness.store.write(ws.take_write(claiming, next_wake=None, lease_expires=T0))
    stored = harness.store.load("s-1")
    assert (stored.session.lease_owner, stored.version) == (holder[0], 0)
    assert records(stored)["instances"]["vm-0-0"][6] == "PENDING"


def test_another_worker_taking_the_lease_fences_the_first_out(harness: Harness) -> None:
    harness.store.insert(new_session())
    ws, fence = held(harness, token=1)
    harness.set_lease("s-1", "worker-b", 2)  # the lease expired and b claimed it
    a_step(ws)
    with pytest.raises(LeaseLost):
        harness.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert records(harness.store.load("s-1"))["instances"]["vm-0-0"][6] == "PENDING"


def test_unprocessed_replies_in_id_order_and_their_outcomes(harness: Harness) -> None:
    harness.store.insert(new_session())
    first = harness.add_reply("s-1", "p0", "ACK_PREPARE")
    second = harness.add_reply("s-1", "p1", "ACK_PREPARE")
    rows = harness.store.unprocessed_replies("s-1")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (first, "p0", "ACK_PREPARE"),
        (second, "p1", "ACK_PREPARE"),
    ]
    ws, fence = held(harness)
    # The later id processed first (on PostgreSQL the earlier one may commit
    # after it): the earlier one is still read.
    ws.processed(second, "accepted", T0)
    harness.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert [r[0] for r in harness.store.unprocessed_replies("s-1")] == [first]
    assert harness.store.load("s-1").session.inbox_seen_id == second
    assert harness.reply_outcomes("s-1") == {first: None, second: "accepted"}


def test_replies_a_step_carried_are_inserted_with_their_outcome(harness: Harness) -> None:
    harness.store.insert(new_session())
    waiting = harness.add_reply("s-1", "p0", "ACK_PREPARE")
    ws, fence = held(harness)
    write = ws.take_write(fence, next_wake=None, lease_expires=T0)
    carried = [
        ("p1", "ACK_PREPARE", {}, T0, T0, "accepted"),
        ("p2", "ACK_PREPARE", {"vm-0-1": "MIGRATE"}, T0, None, None),  # not taken: a broken step
    ]
    harness.store.write(type(write)(**{**_fields(write), "new_inbox": carried}))
    outcomes = harness.reply_outcomes("s-1")
    assert sorted(outcomes.values(), key=str) == sorted([None, "accepted", None], key=str)
    # Inserted processed, a carried reply is not read again; the one not taken is.
    unprocessed = harness.store.unprocessed_replies("s-1")
    assert [(r[1], r[3]) for r in unprocessed] == [("p0", {}), ("p2", {"vm-0-1": "MIGRATE"})]
    assert unprocessed[0][0] == waiting
    assert harness.store.load("s-1").session.inbox_seen_id == 0  # only read rows count


def _fields(write: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(write, recurse=False)
