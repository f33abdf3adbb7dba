"""The session store on SQL (plan §3.2): a session loaded by Core selects
into a :class:`WorkingSet`, and a step's :class:`StepWrite` written in ONE
transaction with one executemany per table, fenced by the lease in the
``session_clock`` UPDATE's WHERE clause: unless that UPDATE matches exactly
one row (this worker's owner and token, the version it loaded), the whole
transaction is rolled back and :class:`LeaseLost` raised."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.sql.dml import Insert

from ..errors import NotFound
from ..store.leases import LeaseLost
from .ports import NewSession, OutboxRec, StepWrite
from .statements import STATEMENTS, params
from .working_set import (
    ComponentRec,
    HostRec,
    InstanceRec,
    OpRec,
    ProjectRec,
    SessionRec,
    TimerRec,
    WorkingSet,
)

__all__ = ["SqlSessionStore"]

S = STATEMENTS


def _rows(
    fields: Sequence[str], rows: Sequence[tuple[Any, ...]], **extra: Any
) -> list[dict[str, Any]]:
    return [params(fields, row, **extra) for row in rows]


class _Prepared:
    """A statement compiled once for a positional-parameter dialect (SQLite):
    its SQL text, and per placeholder the parameter name and the type's bind
    processor, so a write sends rows to the driver without SQLAlchemy
    compiling, caching or re-processing the statement each time."""

    __slots__ = ("_plans", "names", "processors", "sql")

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or ())
        found = compiled._bind_processors  # the type's own (datetimes, JSON, booleans)
        self.processors = [found.get(name) for name in self.names]
        self._plans: dict[tuple[str, ...], tuple[tuple[int, Any], ...]] = {}

    def row(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            values[n] if p is None else p(values[n])
            for n, p in zip(self.names, self.processors, strict=True)
        )

    def rows(
        self, fields: tuple[str, ...], rows: Sequence[tuple[Any, ...]], session_id: str | None
    ) -> list[tuple[Any, ...]]:
        """The driver's rows straight from record tuples laid out as
        ``fields`` (``b_session_id``, if the statement has it, is
        ``session_id``): no dict per row, the same values as :meth:`row`."""
        plan = self._plans.get(fields)
        if plan is None:
            where = {f"b_{name}": i for i, name in enumerate(fields)}
            where["b_session_id"] = where.get("b_session_id", -1)
            plan = self._plans[fields] = tuple(
                (where[n], p) for n, p in zip(self.names, self.processors, strict=True)
            )
        out = []
        for row in rows:
            values = (*row, session_id)  # index -1: the session id
            out.append(tuple(values[i] if p is None else p(values[i]) for i, p in plan))
        return out


class SqlSessionStore:
    """Implements :class:`fenix_core.core.ports.SessionStore` on a database
    migrated to 0007 or later."""

    def __init__(self, database: SAEngine) -> None:
        self.database = database
        self._upsert_components: Insert = S.upsert_components[database.dialect.name]
        dialect = database.dialect
        # SQLite takes positional parameters: steps write through _Prepared.
        self._prepared: dict[int, _Prepared] | None = (
            {} if dialect.name == "sqlite" and dialect.positional else None
        )

    def _exec(
        self, db: Connection, statement: Any, values: dict[str, Any] | list[dict[str, Any]]
    ) -> Any:
        """``db.execute(statement, values)``, through the prepared text on SQLite."""
        if self._prepared is None:
            return db.execute(statement, values)
        prepared = self._prepare(statement)
        if isinstance(values, list):
            return db.exec_driver_sql(prepared.sql, [prepared.row(v) for v in values])
        return db.exec_driver_sql(prepared.sql, prepared.row(values))

    # ------------------------------------------------------------------ load

    def load(self, session_id: str) -> WorkingSet:
        sid = {"b_session_id": session_id}
        with self.database.connect() as db:
            row = db.execute(S.load_session, sid).first()
            if row is None:
                raise NotFound("session", session_id)
            session = SessionRec(*row)
            return WorkingSet(
                session,
                hosts=[HostRec(*r) for r in db.execute(S.load_hosts, sid)],
                instances=[InstanceRec(*r) for r in db.execute(S.load_instances, sid)],
                projects=[ProjectRec(*r) for r in db.execute(S.load_projects, sid)],
                ops=[OpRec(*r) for r in db.execute(S.load_ops, sid)],
                timers=[TimerRec(*r) for r in db.execute(S.load_timers, sid)],
                components=[ComponentRec(*r) for r in db.execute(S.load_components, sid)],
            )

    def unprocessed_replies(self, session_id: str, after_id: int) -> list[tuple[Any, ...]]:
        """Unprocessed inbox rows above ``after_id``, in ``InboxRec.FIELDS``
        order (read through the partial index of unprocessed rows)."""
        with self.database.connect() as db:
            found = db.execute(S.unprocessed, {"b_session_id": session_id, "b_after_id": after_id})
            return [tuple(r) for r in found]

    def undelivered(self, session_id: str, after_seq: int) -> list[OutboxRec]:
        """Outbox rows above the delivery watermark ``after_seq``, in seq order
        (the :class:`~fenix_core.core.outbox.OutboxSource` of a load)."""
        with self.database.connect() as db:
            found = db.execute(
                S.undelivered, {"b_session_id": session_id, "b_after_seq": after_seq}
            )
            return [OutboxRec(session_id, seq, signal, payload) for seq, signal, payload in found]

    # ------------------------------------------------------------------ insert

    def insert(self, new: NewSession, *, check: Callable[[Connection], None] | None = None) -> None:
        """Insert the session's rows in one transaction; ``check`` runs first
        in it (what it raises rolls the transaction back)."""
        session = SessionRec(*new.session)
        sid = session.id
        with self.database.begin() as db:
            if check is not None:
                check(db)
            db.execute(
                S.insert_session, params(SessionRec.ROW, session.row()[: len(SessionRec.ROW)])
            )
            db.execute(
                S.insert_clock,
                params(SessionRec.CLOCK, session.row()[len(SessionRec.ROW) :], session_id=sid),
            )
            self._many(db, S.insert_hosts, HostRec.FIELDS, new.hosts, sid)
            self._many(db, S.insert_instances, InstanceRec.FIELDS, new.instances, sid)
            self._many(db, S.insert_projects, ProjectRec.FIELDS, new.projects, sid)
            self._many(db, self._upsert_components, ComponentRec.FIELDS, new.components, sid)

    def _many(
        self,
        db: Connection,
        statement: Any,
        fields: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        session_id: str | None,
    ) -> None:
        if not rows:
            return
        if self._prepared is None:
            extra = {} if session_id is None else {"session_id": session_id}
            self._exec(db, statement, _rows(fields, rows, **extra))
            return
        prepared = self._prepare(statement)
        db.exec_driver_sql(prepared.sql, prepared.rows(tuple(fields), rows, session_id))

    def _prepare(self, statement: Any) -> _Prepared:
        assert self._prepared is not None
        prepared = self._prepared.get(id(statement))
        if prepared is None:
            prepared = self._prepared[id(statement)] = _Prepared(statement, self.database.dialect)
        return prepared

    # ------------------------------------------------------------------ the step's write

    def write(self, write: StepWrite) -> None:
        """One transaction; only the statements that have rows run."""
        fence = write.fence
        sid = fence.session_id
        with self.database.begin() as db:
            fenced = self._exec(
                db,
                S.fence,
                {
                    "b_session_id": sid,
                    "b_owner": fence.owner,
                    "b_token": fence.token,
                    "b_version": fence.version,
                    "b_new_version": fence.version + 1,
                    "b_seq": max((o.seq for o in write.outbox), default=0),
                    "b_next_wake": write.next_wake,
                    "b_lease_expires": write.lease_expires,
                    "b_delivered_seq": write.delivered_seq,
                    "b_inbox_seen_id": write.inbox_seen_id,
                },
            )
            if fenced.rowcount != 1:
                raise LeaseLost(
                    f"session {sid}: the lease of {fence.owner} (token {fence.token}, "
                    f"version {fence.version}) no longer holds; the step is not written"
                )
            if write.session is not None:
                self._exec(
                    db, S.update_session, params(SessionRec.CHANGING, write.session, session_id=sid)
                )
            self._many(db, S.insert_hosts, HostRec.FIELDS, write.new_hosts, sid)
            self._many(db, S.update_hosts, HostRec.FIELDS, write.hosts, sid)
            self._many(db, S.insert_instances, InstanceRec.FIELDS, write.new_instances, sid)
            self._many(db, S.update_instances, InstanceRec.FIELDS, write.instances, sid)
            self._many(db, S.insert_projects, ProjectRec.FIELDS, write.new_projects, sid)
            self._many(db, S.update_projects, ProjectRec.FIELDS, write.projects, sid)
            self._many(db, S.insert_ops, OpRec.FIELDS, write.new_ops, sid)
            if write.changed_ops:
                self._many(db, S.update_ops, OpRec.FIELDS, write.changed_ops, None)
            if write.outbox:
                now = datetime.now(UTC)  # diagnostics only: delivery goes by seq
                self._exec(
                    db,
                    S.insert_outbox,
                    [
                        {
                            "b_session_id": o.session_id,
                            "b_seq": o.seq,
                            "b_signal": o.signal,
                            "b_payload": o.payload,
                            "b_created_at": now,
                        }
                        for o in write.outbox
                    ],
                )
            self._many(db, self._upsert_components, ComponentRec.FIELDS, write.components, sid)
            if write.timers:
                self._write_timers(db, sid, write.timers)
            if write.inbox_outcomes:
                self._exec(
                    db,
                    S.inbox_outcomes,
                    [
                        {"b_id": i, "b_outcome": outcome, "b_processed_at": at}
                        for i, outcome, at in write.inbox_outcomes
                    ],
                )

    def _write_timers(
        self, db: Connection, session_id: str, timers: Sequence[tuple[str, datetime | None, Any]]
    ) -> None:
        """Named timers: the old row of each name goes, the new one (if set) comes."""
        self._exec(
            db,
            S.delete_timers,
            [{"b_session_id": session_id, "b_kind": name} for name, _, _ in timers],
        )
        kept = [
            {"b_session_id": session_id, "b_kind": name, "b_due": due, "b_data": data}
            for name, due, data in timers
            if due is not None
        ]
        if kept:
            self._exec(db, S.insert_timers, kept)
