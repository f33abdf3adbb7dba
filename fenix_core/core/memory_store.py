"""The reference session store: everything in dicts, the same contract as
:class:`~fenix_core.core.sql_store.SqlSessionStore` (``tests/store_contract.py``
runs one suite against both). A write is checked whole and applied whole:
a failed fence leaves nothing of the step. It also stands in for a lease
keeper (:meth:`set_lease`) and a reply intake (:meth:`add_reply`) in tests."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ..errors import NotFound
from ..store.leases import LeaseLost
from .ports import NewSession, StepWrite
from .working_set import (
    ComponentRec,
    HostRec,
    InstanceRec,
    OpRec,
    ProjectRec,
    SessionRec,
    TimerRec,
    WorkingSet,
    op_number,
)

__all__ = ["MemorySessionStore"]


@attrs.define
class _Stored:
    session: dict[str, Any]
    hosts: dict[str, tuple[Any, ...]]
    instances: dict[str, tuple[Any, ...]]
    projects: dict[str, tuple[Any, ...]]
    components: dict[str, tuple[Any, ...]]
    ops: dict[str, tuple[Any, ...]] = attrs.field(factory=dict)
    timers: dict[str, tuple[Any, ...]] = attrs.field(factory=dict)
    outbox: dict[int, tuple[str, dict[str, Any]]] = attrs.field(factory=dict)
    # id -> (InboxRec row, processed_at, outcome)
    inbox: dict[int, tuple[tuple[Any, ...], datetime | None, str | None]] = attrs.field(
        factory=dict
    )


def _keyed(rows: Any) -> dict[str, tuple[Any, ...]]:
    return {row[0]: tuple(copy.deepcopy(row)) for row in rows}


def _insert(into: dict[str, tuple[Any, ...]], rows: Any, what: str) -> None:
    for row in rows:
        if row[0] in into:
            raise KeyError(f"{what} {row[0]!r} exists already")
        into[row[0]] = tuple(copy.deepcopy(row))


def _update(into: dict[str, tuple[Any, ...]], rows: Any) -> None:
    for row in rows:
        if row[0] in into:  # as an UPDATE: a row that is not there stays absent
            into[row[0]] = tuple(copy.deepcopy(row))


class MemorySessionStore:
    """Implements :class:`fenix_core.core.ports.SessionStore` in memory."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Stored] = {}
        self._op_keys: set[str] = set()
        self._next_inbox_id = 1

    # ------------------------------------------------------------------ test seams

    def set_lease(
        self, session_id: str, owner: str | None, token: int, expires: datetime | None
    ) -> None:
        s = self._stored(session_id).session
        s.update(lease_owner=owner, lease_token=token, lease_expires=expires)

    def add_reply(
        self, session_id: str, project_id: str, state: str, actions: Mapping[str, Any], at: datetime
    ) -> int:
        stored = self._stored(session_id)
        inbox_id = self._next_inbox_id
        self._next_inbox_id += 1
        stored.inbox[inbox_id] = ((inbox_id, project_id, state, dict(actions), at), None, None)
        return inbox_id

    def outbox(self, session_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        return [(seq, *row) for seq, row in sorted(self._stored(session_id).outbox.items())]

    def reply_outcomes(self, session_id: str) -> dict[int, tuple[datetime | None, str | None]]:
        return {i: (at, out) for i, (_, at, out) in self._stored(session_id).inbox.items()}

    def _stored(self, session_id: str) -> _Stored:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise NotFound("session", session_id) from None

    # ------------------------------------------------------------------ the store

    def insert(self, new: NewSession) -> None:
        session = SessionRec(*copy.deepcopy(new.session))
        if session.id in self._sessions:
            raise KeyError(f"session {session.id!r} exists already")
        self._sessions[session.id] = _Stored(
            session=dict(zip(SessionRec.FIELDS, session.row(), strict=True)),
            hosts=_keyed(new.hosts),
            instances=_keyed(new.instances),
            projects=_keyed(new.projects),
            components=_keyed(new.components),
        )

    def load(self, session_id: str) -> WorkingSet:
        s = copy.deepcopy(self._stored(session_id))
        return WorkingSet(
            SessionRec(**s.session),
            hosts=sorted((HostRec(*r) for r in s.hosts.values()), key=lambda h: h.position),
            instances=[InstanceRec(*r) for r in s.instances.values()],
            projects=[ProjectRec(*r) for r in s.projects.values()],
            ops=[OpRec(*r) for r in s.ops.values() if not r[OpRec.FIELDS.index("handled")]],
            timers=[TimerRec(*r) for r in s.timers.values()],
            components=[ComponentRec(*r) for r in s.components.values()],
            last_op=max(map(op_number, s.ops), default=0),
        )

    def unprocessed_replies(self, session_id: str) -> list[tuple[Any, ...]]:
        inbox = self._stored(session_id).inbox
        return [row for _, (row, at, _) in sorted(inbox.items()) if at is None]

    def write(self, write: StepWrite) -> None:
        fence = write.fence
        current = self._stored(fence.session_id)
        held = current.session
        expected = (None, fence.token - 1) if fence.claims else (fence.owner, fence.token)
        if (held["lease_owner"], held["lease_token"], held["version"]) != (
            *expected,
            fence.version,
        ):
            raise LeaseLost(
                f"session {fence.session_id}: the lease of {fence.owner} (token "
                f"{fence.token}, version {fence.version}) no longer holds; "
                "the step is not written"
            )
        s = copy.deepcopy(current)  # applied whole or not at all
        s.session.update(
            lease_owner=fence.owner,
            lease_token=fence.token,
            version=fence.version + 1,
            seq=max([s.session["seq"], *(o.seq for o in write.outbox)]),
            next_wake=write.next_wake,
            lease_expires=write.lease_expires,
            delivered_seq=write.delivered_seq,
            inbox_seen_id=write.inbox_seen_id,
        )
        if write.session is not None:
            s.session.update(zip(SessionRec.CHANGING, write.session, strict=True))
        _insert(s.hosts, write.new_hosts, "host")
        _update(s.hosts, write.hosts)
        _insert(s.instances, write.new_instances, "instance")
        _update(s.instances, write.instances)
        _insert(s.projects, write.new_projects, "project")
        _update(s.projects, write.projects)
        new_keys = [row[0] for row in write.new_ops]
        if set(new_keys) & self._op_keys or len(set(new_keys)) != len(new_keys):
            raise KeyError(
                f"operation key(s) exist already: {sorted(set(new_keys) & self._op_keys)}"
            )
        _insert(s.ops, write.new_ops, "operation")
        _update(s.ops, write.changed_ops)
        for o in write.outbox:
            if o.seq in s.outbox:
                raise KeyError(f"outbox seq {o.seq} of {o.session_id} exists already")
            s.outbox[o.seq] = (o.signal, copy.deepcopy(o.payload))
        for row in write.components:
            s.components[row[0]] = tuple(copy.deepcopy(row))
        for name, due, data in write.timers:
            s.timers.pop(name, None)
            if due is not None:
                s.timers[name] = (name, due, copy.deepcopy(data))
        for inbox_id, outcome, at in write.inbox_outcomes:
            if inbox_id in s.inbox:
                s.inbox[inbox_id] = (s.inbox[inbox_id][0], at, outcome)
        for project_id, state, actions, received, at, outcome in write.new_inbox:
            inbox_id = self._next_inbox_id
            self._next_inbox_id += 1
            reply = (inbox_id, project_id, state, copy.deepcopy(actions), received)
            s.inbox[inbox_id] = (reply, at, outcome)
        self._sessions[fence.session_id] = s
        self._op_keys.update(new_keys)
