"""The session store on SQL: a session loaded by Core selects
into a :class:`WorkingSet`, and a step's :class:`StepWrite` written in ONE
transaction with one executemany per table, fenced by the lease in the
``session_clock`` UPDATE's WHERE clause: unless that UPDATE matches exactly
one row (this worker's owner and token, the version it loaded), the whole
transaction is rolled back and :class:`LeaseLost` raised."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final, Protocol

from sqlalchemy import JSON, Boolean, Connection, DateTime
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

from ..errors import NotFound
from ..store import json_text
from ..store.leases import LeaseLost
from ..store.schema import operation_id, outbox_id
from .ports import NewSession, OutboxRec, StepWrite
from .statements import INBOX_ROW, OP_CHANGED, OP_ROW, STATEMENTS, params
from .working_set import (
    ComponentRec,
    HostRec,
    InstanceRec,
    OpRec,
    ProjectRec,
    SessionRec,
    SessionRecords,
    TimerRec,
    WorkingSet,
)

__all__ = ["Driver", "Prepared", "SqlSessionStore", "key_number"]

S = STATEMENTS
#: An operation row as ``upsert_ops_sqlite`` takes it: the fields, the
#: key's number, then the flag.
_OP_UPSERT_ROW = (*OP_ROW, OP_CHANGED)
#: An outbox row, and a reply's outcome (``StepWrite.inbox_outcomes``).
_OUTBOX_ROW = ("session_id", "id", "seq", "signal", "payload", "created_at")
_OUTCOME_ROW = ("id", "outcome", "processed_at")
#: A timer row (``StepWrite.timers``).
_TIMER_ROW = ("kind", "due", "data")
#: The fenced UPDATE's values (``b_session_id`` aside): the lease it holds,
#: the version it moves on from and what it sets; a claim binds the token
#: before the lease's too.
_FENCE_ROW = (
    "owner", "token", "version", "new_version", "seq", "next_wake", "lease_expires",
    "delivered_seq", "inbox_seen_id",
)  # fmt: skip
_CLAIM_ROW = (*_FENCE_ROW, "token_before")


def key_number(session_id: str, key: str) -> int:
    """The number of an operation's key, ``<session id>:<n>`` (the only form
    the engine makes): the operations' primary key is ``(session_id, n)``.
    Another key is refused: its row could not be found again by its number."""
    head, _, tail = key.rpartition(":")
    if head != session_id or not tail.isdigit():
        raise ValueError(f"operation key {key!r} is not '{session_id}:<number>'")
    return int(tail)


def _numbered(
    session_id: str, first: int, ops: Sequence[tuple[Any, ...]], *flag: int
) -> list[tuple[Any, ...]]:
    """Operation records (``OpRec.FIELDS``) with their key's number and row
    id added (``OP_ROW``; ``first``: the id of the session's number 0), then
    ``flag`` if given. A key :func:`key_number` refuses is refused."""
    head = session_id + ":"
    cut = len(head)
    numbered = []
    for row in ops:
        key = row[0]
        tail = key[cut:]
        # key_number's test, written out (once or twice a step).
        if not (key.startswith(head) and tail.isdigit()):
            key_number(session_id, key)  # raises
        n = int(tail)
        numbered.append((*row, n, first + n, *flag))
    return numbered


def _rows(
    fields: Sequence[str], rows: Sequence[tuple[Any, ...]], **extra: Any
) -> list[dict[str, Any]]:
    return [params(fields, row, **extra) for row in rows]


#: Bound values a processor remembers before it starts over (a step binds
#: the same few instants many times: its own time, the operations' times).
#: One memory per type serves every statement of a store, so this is one
#: dict of datetimes' texts: large enough that an operation's instants are
#: still there when its row is written again at its end (with 256, 30 % of
#: the texts a rolling step made were of instants formatted before: 2.6 a
#: step, 1.8 with 4,096).
_REMEMBERED = 4096

_SEQ: Final = attrgetter("seq")


def _remembering(process: Any, known: dict[datetime, Any], utc: bool = False) -> Any:
    """``process`` answering a repeated value from memory: a datetime's text
    (the UTC type and SQLite's formatting are pure functions of the instant)
    and None's bound form (JSON's ``null``). Other values are processed each
    time (dicts cannot be keys; a JSON body may change in place). ``known``
    is shared by every placeholder of the same type: a step's instants are
    bound in many columns of several statements. ``utc``: ``process`` binds
    an aware UTC instant as :func:`_utc_text` (``_utc_exact``), which is
    called for a new one instead (most instants a step binds are new: its
    own time, the next poll; SQLAlchemy's processors, a type decorator's
    then SQLite's formatting through a dict, were a visible part of the
    write)."""
    if process is None:
        return None
    none = process(None)

    def remembered(value: Any) -> Any:
        if value is None:
            return none
        if type(value) is not datetime:
            return process(value)
        found = known.get(value)
        if found is None:
            if len(known) >= _REMEMBERED:
                known.clear()
            if utc and value.tzinfo is UTC:
                found = known[value] = value.isoformat(" ", "microseconds")[:-6]  # _utc_text
            else:
                found = known[value] = process(value)
        return found

    return remembered


_SAMPLES: Final = (
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(987, 6, 5, 4, 3, 2, 10, tzinfo=UTC),
)


def _utc_text(value: datetime) -> str:
    """SQLite's default storage text of an aware UTC instant, less the
    "+00:00" every UTC instant's ISO text ends with (no naive copy made)."""
    return value.isoformat(" ", "microseconds")[:-6]


def _utc_exact(process: Any) -> bool:
    """Whether ``process`` (a datetime column's bind processor) binds an
    aware UTC instant as :func:`_utc_text` (SQLite's default storage
    format): checked on samples."""
    return all(_utc_text(sample) == process(sample) for sample in _SAMPLES)


_JSON_SAMPLES: Final = ({"a": [1, 2.5, None, True, "é\u2028"], "b": {}}, ["x", {"y": "z"}])


def _json_text(process: Any, dialect: Any) -> Callable[[Any, int], Any] | None:
    """The C encoder whose joined pieces are exactly what ``process`` (a JSON
    placeholder's bind processor) binds for a non-empty dict or list: the
    dialect serialises with :func:`json_text.dumps` and binds its text as it
    is. Else None (each value goes through ``process``)."""
    encoder = json_text.parts
    if encoder is None or getattr(dialect, "_json_serializer", None) is not json_text.dumps:
        return None
    if any(process(sample) != "".join(encoder(sample, 0)) for sample in _JSON_SAMPLES):
        return None
    return encoder


def _json_encoding(process: Any) -> Any:
    """A JSON placeholder's processor with the empty containers' text made
    once (a new operation's ``result``, a reply without instance actions:
    most JSON values a step binds that are not its state are empty)."""
    empty: dict[type, Any] = {dict: process({}), list: process([])}

    def encode(value: Any) -> Any:
        if not value:
            found = empty.get(type(value))
            if found is not None:
                return found
        return process(value)

    return encode


class Driver:
    """A write's statements sent to the SQLite driver's cursor in the
    connection of ``db`` (in the transaction SQLAlchemy began and commits,
    or, for a step's write, the one the first statement begins and
    :meth:`commit` commits), without SQLAlchemy's per-execute work
    (execution context, result set-up): on a step of a few small statements
    that work cost more than SQLite's. The engine's
    ``before_cursor_execute``/``after_cursor_execute`` and ``commit``
    listeners are still called (instrumentation and the statement and
    commit counters see every one, those added later too; the context
    argument is None). One driver serves every transaction of its
    connection (the store keeps it with the connection)."""

    __slots__ = (
        "_committing", "_cursor", "_db", "_dbapi", "_dispatch", "_error", "_listening",
    )  # fmt: skip

    def __init__(self, db: Connection) -> None:
        self._db = db
        # The DBAPI connection of the pool's checkout (the driver lives as
        # long as the checkout).
        dbapi = db.connection.dbapi_connection
        assert dbapi is not None  # a connection checked out of the pool
        self._dbapi: Any = dbapi  # do_commit is typed for the pool's proxy
        self._cursor = dbapi.cursor()
        self._dispatch = db.dispatch
        self._error: type[Exception] = db.dialect.loaded_dbapi.Error
        # The cursor listeners taken at the start of a step's write, until
        # it commits or rolls back (None: each statement looks them up),
        # and the commit listeners taken with them (None: at the commit).
        self._listening: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None
        self._committing: tuple[Any, ...] | None = None

    def listen_once(self) -> None:
        """Take the engine's cursor and commit listeners now for every
        statement until :meth:`commit` or :meth:`rollback`: a step's write
        looks them up once, not twice a statement and again at its commit
        (SQLAlchemy's look-up walks the engine's and the connection's
        listener collections each time). A listener added during the write
        sees the next one."""
        dispatch = self._dispatch
        # tuple(iter(...)): a collection's length is two more look-ups.
        self._listening = (
            tuple(iter(dispatch.before_cursor_execute)),
            tuple(iter(dispatch.after_cursor_execute)),
        )
        self._committing = tuple(iter(dispatch.commit))

    def run(self, sql: str, params: Any, many: bool) -> int:
        """Execute (``many``: executemany); return the row count."""
        cursor = self._cursor
        listening = self._listening
        if listening is None:
            dispatch = self._dispatch
            before: Any = dispatch.before_cursor_execute
            after: Any = dispatch.after_cursor_execute
        else:
            before, after = listening
        for listen in before:
            listen(self._db, cursor, sql, params, None, many)
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        for listen in after:
            listen(self._db, cursor, sql, params, None, many)
        return int(cursor.rowcount)

    def commit(self) -> None:
        """Commit the transaction the driver's statements began, as
        SQLAlchemy's commit would: the ``commit`` listeners first (counters,
        the poller's), then the dialect's ``do_commit``; a driver error is
        raised as SQLAlchemy's (an OperationalError is retried as one)."""
        self._listening = None
        db = self._db
        committing, self._committing = self._committing, None
        for listen in self._dispatch.commit if committing is None else committing:
            listen(db)
        try:
            # The DBAPI connection itself, not the pool's proxy SQLAlchemy's
            # commit passes: the dialect's do_commit calls its ``commit``,
            # which the proxy answers through a __getattr__ each time.
            db.dialect.do_commit(self._dbapi)
        except self._error as error:
            raise DBAPIError.instance(
                "COMMIT", None, error, self._error, dialect=db.dialect
            ) from error

    def rollback(self) -> None:
        """Roll back what the driver's statements began (nothing if none)."""
        self._listening = self._committing = None
        with suppress(Exception):
            self._dbapi.rollback()

    def fetch(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        """A query's rows (the listeners see it as they see every statement)."""
        cursor = self._cursor
        dispatch = self._dispatch
        for listen in dispatch.before_cursor_execute:
            listen(self._db, cursor, sql, params, None, False)
        rows: list[tuple[Any, ...]] = cursor.execute(sql, params).fetchall()
        for listen in dispatch.after_cursor_execute:
            listen(self._db, cursor, sql, params, None, False)
        return rows


class Prepared:
    """A statement compiled once for a positional-parameter dialect (SQLite):
    its SQL text, and per placeholder the parameter name and the type's bind
    processor, so a write sends rows to the driver without SQLAlchemy
    compiling, caching or re-processing the statement each time.

    :meth:`rows` turns record tuples into the driver's rows with a function
    generated once per record layout: one tuple per row built by a single
    expression, datetimes answered from the shared memory, booleans and
    None bound without a call (a Python call per value, and a list per row,
    were most of what binding a step's rows cost)."""

    __slots__ = ("_convert", "_plans", "_row", "names", "processors", "sql")

    def __init__(
        self, statement: Any, dialect: Any, known: dict[str, dict[datetime, Any]] | None = None
    ) -> None:
        """``known``: type (its repr) -> the bound forms its values had,
        shared with other statements (None: this statement's own)."""
        known = {} if known is None else known
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or ())
        found = compiled._bind_processors  # the type's own (datetimes, JSON, booleans)
        self.processors: list[Any] = []
        # Per placeholder: how rows() binds it ("plain", "bool", "json",
        # "datetime", "other") and what the generated code calls.
        self._convert: list[tuple[str, Any, Any]] = []
        for name in self.names:
            bind_type = compiled.binds[name].type
            process = found.get(name)
            if process is None:
                self.processors.append(None)
                self._convert.append(("plain", None, None))
                continue
            memory = known.setdefault(repr(bind_type), {})
            if isinstance(bind_type, JSON):
                encode = _json_encoding(process)
                self.processors.append(_remembering(encode, memory))
                text = _json_text(process, dialect)
                self._convert.append(("json", encode, (process(None), text)))
            elif isinstance(bind_type, Boolean):
                self.processors.append(process)
                self._convert.append(("bool", process, None))
            else:
                dated = bind_type._type_affinity is DateTime  # the column's kind
                remembered = _remembering(process, memory, dated and _utc_exact(process))
                self.processors.append(remembered)
                if dated and process(None) is None:
                    self._convert.append(("datetime", remembered, memory))
                else:
                    self._convert.append(("other", remembered, None))
        self._plans: dict[tuple[str, ...], Callable[..., list[tuple[Any, ...]]]] = {}
        self._row: Callable[[dict[str, Any]], tuple[Any, ...]] | None = None

    def row(self, values: dict[str, Any]) -> tuple[Any, ...]:
        """The driver's row from ``b_<name>`` -> value (generated once, as
        :meth:`rows`; SQLAlchemy's exec_driver_sql takes tuples)."""
        convert = self._row
        if convert is None:
            convert = self._row = self._generate(
                [f"v[{name!r}]" for name in self.names], "def convert(v):\n    return ({},)\n"
            )
        return convert(values)

    def rows(
        self, fields: tuple[str, ...], rows: Sequence[tuple[Any, ...]], session_id: str | None
    ) -> list[tuple[Any, ...]]:
        """The driver's rows straight from record tuples laid out as
        ``fields`` (``b_session_id``, if the statement has it, is
        ``session_id``): no dict per row, the same values as :meth:`row`."""
        convert = self._plans.get(fields)
        if convert is None:
            convert = self._plans[fields] = self.plan(fields)
        return convert(rows, session_id)

    def plan(self, fields: tuple[str, ...], one: bool = False) -> Callable[..., Any]:
        """:meth:`rows`'s conversion for ``fields``, to keep: ``convert(rows,
        session_id)``, the list of the driver's rows; ``one``:
        ``convert(row, session_id)``, one row's tuple (no list made)."""
        where = {f"b_{name}": f"r[{i}]" for i, name in enumerate(fields)}
        where.setdefault("b_session_id", "sid")
        missing = [name for name in self.names if name not in where]
        if missing:
            raise KeyError(f"{missing} are not among the fields {fields}")
        template = (
            "def convert(r, sid):\n    return ({},)\n"
            if one
            else "def convert(rows, sid):\n    return [({},) for r in rows]\n"
        )
        return self._generate([where[name] for name in self.names], template)

    def _generate(self, values: list[str], template: str) -> Callable[..., Any]:
        """A conversion as generated code: ``values`` (one expression per
        placeholder, in order) each bound as its type binds it, joined into
        ``template``. The source is made of those expressions (indices and
        placeholder names) and numbered names of this module's objects (and
        ``join``) only: no value of a row reaches it."""
        names: dict[str, Any] = {}
        parts = []
        for j, value in enumerate(values):
            kind, call, extra = self._convert[j]
            if kind == "plain":
                parts.append(value)
                continue
            names[f"c{j}"] = call
            if kind == "bool":
                parts.append(f"(1 if (x := {value}) is True else 0 if x is False else c{j}(x))")
            elif kind == "json":
                names[f"n{j}"], text = extra
                if text is None:
                    parts.append(f"(n{j} if (x := {value}) is None else c{j}(x))")
                else:
                    # A non-empty dict or list (most values) joined from the C
                    # encoder's pieces here: no Python frame per value.
                    names[f"e{j}"], names["join"] = text, "".join
                    parts.append(
                        f"(n{j} if (x := {value}) is None else join(e{j}(x, 0))"
                        f" if x and (type(x) is dict or type(x) is list) else c{j}(x))"
                    )
            elif kind == "datetime":
                names[f"k{j}"] = extra
                parts.append(f"(None if (x := {value}) is None else k{j}.get(x) or c{j}(x))")
            else:
                parts.append(f"c{j}({value})")
        exec(template.format(", ".join(parts)), names)  # see the docstring
        convert: Callable[..., Any] = names["convert"]
        return convert


class _Sent:
    """A step statement as the SQLite write sends it: its text and the
    conversion of its rows, looked up once per store (not per statement of
    every write)."""

    __slots__ = ("convert", "sql")

    def __init__(self, prepared: Prepared, fields: tuple[str, ...], one: bool = False) -> None:
        self.sql = prepared.sql
        self.convert = prepared.plan(fields, one)


class _Bound:
    """A step statement as SQLAlchemy executes it (PostgreSQL): the
    statement and its rows as parameter dicts (``one``: a single row, only
    the values ``fields`` names bound), the same interface as :class:`_Sent`."""

    __slots__ = ("fields", "one", "sql")

    def __init__(self, statement: Any, fields: tuple[str, ...], one: bool = False) -> None:
        self.sql = statement
        self.fields = fields
        self.one = one

    def convert(self, rows: Any, session_id: str | None) -> Any:
        extra = {} if session_id is None else {"session_id": session_id}
        if self.one:
            return params(self.fields, rows[: len(self.fields)], **extra)
        return _rows(self.fields, rows, **extra)


class _Executing:
    """:meth:`Driver.run` through SQLAlchemy's execute, in ``db``'s
    transaction (PostgreSQL's step write)."""

    __slots__ = ("_db",)

    def __init__(self, db: Connection) -> None:
        self._db = db

    def run(self, statement: Any, values: Any, many: bool) -> int:
        return int(self._db.execute(statement, values).rowcount)


class _Runs(Protocol):
    def run(self, sql: Any, params: Any, many: bool) -> int: ...


class _Entry(Protocol):
    sql: Any

    def convert(self, rows: Any, session_id: str | None) -> Any: ...


class _StepSql:
    """The statements of a step's write, each with its rows' conversion,
    made once per store by ``make(statement, fields, one)``: a
    :class:`_Sent` on SQLite, a :class:`_Bound` elsewhere. SQLite writes the
    operations with one upsert that counts the new keys (``upsert_ops``);
    elsewhere it is None, and they are inserted and updated (``insert_ops``,
    ``update_ops``)."""

    __slots__ = (
        "claim", "components", "delete_timers", "fence", "inbox", "insert_hosts",
        "insert_instances", "insert_ops", "insert_projects", "insert_timers", "outbox",
        "outcomes", "session", "update_hosts", "update_instances", "update_ops",
        "update_projects", "update_timers", "upsert_ops",
    )  # fmt: skip

    def __init__(
        self, make: Callable[[Any, tuple[str, ...], bool], _Entry], components: Insert, sqlite: bool
    ) -> None:
        self.fence = make(S.fence, _FENCE_ROW, True)
        self.claim = make(S.fence_claim, _CLAIM_ROW, True)
        self.session = make(S.update_session, SessionRec.CHANGING, True)
        self.insert_hosts = make(S.insert_hosts, HostRec.FIELDS, False)
        self.update_hosts = make(S.update_hosts, HostRec.FIELDS, False)
        self.insert_instances = make(S.insert_instances, InstanceRec.FIELDS, False)
        self.update_instances = make(S.update_instances, InstanceRec.FIELDS, False)
        self.insert_projects = make(S.insert_projects, ProjectRec.FIELDS, False)
        self.update_projects = make(S.update_projects, ProjectRec.FIELDS, False)
        self.upsert_ops = make(S.upsert_ops_sqlite, _OP_UPSERT_ROW, False) if sqlite else None
        self.insert_ops = make(S.insert_ops, OP_ROW, False)
        self.update_ops = make(S.update_ops, OP_ROW, False)
        self.outbox = make(S.insert_outbox, _OUTBOX_ROW, False)
        self.components = make(components, ComponentRec.FIELDS, False)
        self.delete_timers = make(S.delete_timers, ("kind",), False)
        self.update_timers = make(S.update_timers, _TIMER_ROW, False)
        self.insert_timers = make(S.insert_timers, _TIMER_ROW, False)
        self.outcomes = make(S.inbox_outcomes, _OUTCOME_ROW, False)
        self.inbox = make(S.insert_inbox, INBOX_ROW, False)


#: Per kind of SQLite dialect: the bound forms remembered per type (shared
#: by the prepared statements) and statement id -> (statement, Prepared).
#: What a Prepared holds is a pure function of the statement and the
#: dialect's settings; two threads preparing one at once make two alike.
_Compiled = tuple[dict[str, dict[datetime, Any]], dict[int, tuple[Any, Prepared]]]
_COMPILED: dict[tuple[Any, ...], _Compiled] = {}


def _compiled_for(dialect: Any) -> _Compiled:
    key = (type(dialect), dialect.paramstyle, getattr(dialect, "_json_serializer", None))
    return _COMPILED.setdefault(key, ({}, {}))


class SqlSessionStore:
    """Implements :class:`fenix_core.core.ports.SessionStore` on a database
    migrated to 0007 or later."""

    def __init__(self, database: SAEngine) -> None:
        self.database = database
        self._upsert_components: Insert = S.upsert_components[database.dialect.name]
        dialect = database.dialect
        # SQLite takes positional parameters: steps write through Prepared,
        # compiled once a process for every store on the same kind of
        # database (each Engine made its own: a few ms at every start).
        self._prepared: dict[int, tuple[Any, Prepared]] | None = None
        if dialect.name == "sqlite" and dialect.positional:
            self._known, self._prepared = _compiled_for(dialect)
        # On SQLite the steps' writes keep one connection (checking one out
        # of the pool and back per step cost as much as a small statement,
        # and a connection's cache is dropped when another one commits);
        # other dialects take one from the pool per write, as the reads do.
        self._writer: Connection | None = None
        self._driver: Driver | None = None  # the kept connection's
        self._writer_lock = threading.Lock()
        # Each session's number (its outbox ids'), as loaded or inserted.
        self._numbers: dict[str, int] = {}
        # The step's statements on SQLite, prepared at the first write.
        self._step_sql: _StepSql | None = None

    def close(self) -> None:
        """Give back the connection the writes kept (the store still works:
        the next write takes one again)."""
        with self._writer_lock:
            writer, self._writer, self._driver = self._writer, None, None
            if writer is not None:
                writer.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction (committed when the block exits cleanly). On
        SQLite it is on the connection the store keeps: a step's write, a
        batch of replies and the reads of :meth:`reading` all use that one
        connection, so its page cache outlives each commit (a connection
        reading after another one's commit drops its whole cache and reads
        the pages again)."""
        if self._prepared is None:
            with self.database.begin() as db:
                yield db
            return
        with self._on_kept() as writer, writer.begin():
            yield writer

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection to read on, outside any transaction of this store:
        on SQLite the kept one (its cache holds what the last write left),
        a pooled one elsewhere. What the block reads through SQLAlchemy is
        not left open (the read transaction it began is rolled back)."""
        if self._prepared is None:
            with self.database.connect() as db:
                yield db
            return
        with self._on_kept() as reader:
            try:
                yield reader
            finally:
                if reader.in_transaction():
                    reader.rollback()

    @contextmanager
    def _on_kept(self) -> Iterator[Connection]:
        """The kept connection, for this thread alone until the block ends;
        one the database failed on is not kept."""
        with self._writer_lock:
            kept = self._kept()
            try:
                yield kept
            except DBAPIError:
                self._drop_kept()
                raise

    def _kept(self) -> Connection:
        """The connection SQLite's writes keep (taken from the pool once)."""
        if self._writer is None:
            self._writer = self.database.connect()
            self._driver = Driver(self._writer)
        return self._writer

    def driver(self, db: Connection) -> Driver:
        """The driver of ``db``: the kept one for the kept connection."""
        if db is self._writer and self._driver is not None:
            return self._driver
        return Driver(db)

    def _drop_kept(self) -> None:
        """A connection the database failed on is not kept: the next write
        (a retry) checks one out again. Its transaction may be open still (a
        COMMIT that failed on the way: SQLAlchemy no longer rolls it back),
        holding SQLite's write lock: it is rolled back, if the connection
        still answers, and given back to the pool (not invalidated: an
        in-memory database is that one connection, and would be lost with
        it). Called with the writer lock held."""
        writer, self._writer, self._driver = self._writer, None, None
        if writer is None:
            return
        with suppress(Exception):
            writer.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
        writer.close()

    def _exec(
        self,
        db: Connection,
        statement: Any,
        values: dict[str, Any] | list[dict[str, Any]],
        driver: Driver | None = None,
    ) -> int:
        """``db.execute(statement, values)``, through the prepared text on
        SQLite (``driver``: the write's cursor); returns the row count."""
        if self._prepared is None:
            return int(db.execute(statement, values).rowcount)
        prepared = self._prepare(statement)
        if isinstance(values, list):
            params: Any = [prepared.row(v) for v in values]
        else:
            params = prepared.row(values)
        if driver is not None:
            return driver.run(prepared.sql, params, isinstance(values, list))
        return int(db.exec_driver_sql(prepared.sql, params).rowcount)

    # ------------------------------------------------------------------ load

    def load(self, session_id: str) -> WorkingSet:
        """The session as last committed, to be stepped."""
        sid = {"b_session_id": session_id}
        with self.database.connect() as db:
            session = self._load_session(db, sid)
            return WorkingSet(
                session,
                hosts=[HostRec(*r) for r in db.execute(S.load_hosts, sid)],
                instances=[InstanceRec(*r) for r in db.execute(S.load_instances, sid)],
                projects=[ProjectRec(*r) for r in db.execute(S.load_projects, sid)],
                ops=[OpRec(*r) for r in db.execute(S.load_ops, sid)],
                timers=[TimerRec(*r) for r in db.execute(S.load_timers, sid)],
                components=[ComponentRec(*r) for r in db.execute(S.load_components, sid)],
                last_op=db.execute(S.last_op_number, sid).scalar() or 0,
            )

    def load_view(self, session_id: str) -> SessionRecords:
        """The session as last committed, for ``get_session``: without its
        instance rows (most of a large session: 20,000 at 1,000 hosts),
        which that view does not show, with only the operations it reads
        (``load_view_ops``), and without indexes."""
        sid = {"b_session_id": session_id}
        with self.database.connect() as db:
            session = self._load_session(db, sid)
            return SessionRecords(
                session,
                hosts={r.name: r for r in (HostRec(*r) for r in db.execute(S.load_hosts, sid))},
                projects={
                    r.project_id: r
                    for r in (ProjectRec(*r) for r in db.execute(S.load_projects, sid))
                },
                ops={r.key: r for r in (OpRec(*r) for r in db.execute(S.load_view_ops, sid))},
                components={
                    r.component: r
                    for r in (ComponentRec(*r) for r in db.execute(S.load_components, sid))
                },
            )

    def _load_session(self, db: Connection, sid: dict[str, str]) -> SessionRec:
        row = db.execute(S.load_session, sid).first()
        if row is None:
            raise NotFound("session", sid["b_session_id"])
        *fields, self._numbers[sid["b_session_id"]] = row
        return SessionRec(*fields)

    def unprocessed_replies(self, session_id: str) -> list[tuple[Any, ...]]:
        """The session's unprocessed inbox rows, in ``InboxRec.FIELDS`` order
        (read through the partial index of unprocessed rows). All of them,
        not those above the highest id processed: on PostgreSQL an id is
        drawn at the INSERT and seen at the commit, so replies written at
        once through two engines can commit out of id order."""
        with self.reading() as db:
            found = db.execute(S.unprocessed, {"b_session_id": session_id})
            return [tuple(r) for r in found]

    def undelivered(self, session_id: str, after_seq: int) -> list[OutboxRec]:
        """Outbox rows above the delivery watermark ``after_seq``, in seq order
        (the :class:`~fenix_core.core.outbox.OutboxSource` of a load)."""
        with self.reading() as db:
            found = db.execute(
                S.undelivered, {"b_session_id": session_id, "b_after_seq": after_seq}
            )
            return [OutboxRec(session_id, seq, signal, payload) for seq, signal, payload in found]

    # ------------------------------------------------------------------ insert

    def insert(
        self,
        new: NewSession,
        *,
        check: Callable[[Connection], None] | None = None,
        also: Callable[[Connection], None] | None = None,
    ) -> None:
        """Insert the session's rows in one transaction; ``check`` runs first
        in it (what it raises rolls the transaction back), ``also`` after the
        rows (what else the session's creation writes: one commit for all)."""
        session = SessionRec(*new.session)
        sid = session.id
        with self.database.begin() as db:
            if check is not None:
                check(db)
            number = db.execute(
                S.insert_session, params(SessionRec.ROW, session.row()[: len(SessionRec.ROW)])
            ).scalar_one()
            db.execute(
                S.insert_clock,
                params(SessionRec.CLOCK, session.row()[len(SessionRec.ROW) :], session_id=sid),
            )
            self._many(db, S.insert_hosts, HostRec.FIELDS, new.hosts, sid)
            self._many(db, S.insert_instances, InstanceRec.FIELDS, new.instances, sid)
            self._many(db, S.insert_projects, ProjectRec.FIELDS, new.projects, sid)
            self._many(db, self._upsert_components, ComponentRec.FIELDS, new.components, sid)
            if also is not None:
                also(db)
        self._numbers[sid] = number

    def _many(
        self,
        db: Connection,
        statement: Any,
        fields: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        session_id: str | None,
        driver: Driver | None = None,
    ) -> int:
        """One executemany of ``rows`` (nothing for none); the row count."""
        if not rows:
            return 0
        if self._prepared is None:
            extra = {} if session_id is None else {"session_id": session_id}
            return self._exec(db, statement, _rows(fields, rows, **extra))
        prepared = self._prepare(statement)
        params = prepared.rows(tuple(fields), rows, session_id)
        if driver is not None:
            return driver.run(prepared.sql, params, True)
        return int(db.exec_driver_sql(prepared.sql, params).rowcount)

    def _prepare(self, statement: Any) -> Prepared:
        assert self._prepared is not None
        found = self._prepared.get(id(statement))
        if found is None or found[0] is not statement:  # an id may be reused
            found = self._prepared[id(statement)] = (
                statement,
                Prepared(statement, self.database.dialect, self._known),
            )
        return found[1]

    def insert_replies(self, db: Connection, rows: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Write accepted replies (session id, a row in ``INBOX_ROW`` order)
        in ``db``'s transaction: one executemany per session, through the
        statement the step's write binds (a reply is the hottest call from
        outside; SQLAlchemy's per-call compile-cache lookup cost more than
        SQLite's insert)."""
        by_session: dict[str, list[tuple[Any, ...]]] = {}
        for session_id, row in rows:
            by_session.setdefault(session_id, []).append(row)
        driver = self.driver(db) if self._prepared is not None else None
        for session_id, session_rows in by_session.items():
            self._many(db, S.insert_inbox, INBOX_ROW, session_rows, session_id, driver)

    def append_replies(self, rows: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Commit accepted replies (as :meth:`insert_replies` takes them) in a
        transaction of their own that reads nothing (their sessions' facts
        were checked in memory). On SQLite it is sent to the kept
        connection's driver and committed there, as a step's write is,
        without SQLAlchemy's transaction: for one reply at a time, its
        begin and commit cost more than the INSERT."""
        if self._prepared is None:
            with self.database.begin() as db:
                self.insert_replies(db, rows)
            return
        self._driven(lambda kept, _driver: self.insert_replies(kept, rows))

    # ------------------------------------------------------------------ the step's write

    def write(self, write: StepWrite) -> None:
        """One transaction; only the statements that have rows run. On
        SQLite it is the kept connection's, begun by the driver's first
        statement and committed by :meth:`Driver.commit` without
        SQLAlchemy's transaction (its set-up and commit cost more than a
        statement; the ``commit`` listeners still run)."""
        step = self._step_sql
        if step is None:
            step = self._step_sql = self._step_statements()
        if self._prepared is None:
            with self.database.begin() as db:
                self._send(_Executing(db), step, write, lambda sid: self._number(db, None, sid))
            return
        self._driven(
            lambda _kept, driver: self._send(
                driver, step, write, lambda sid: self._number(None, driver, sid)
            )
        )

    def _step_statements(self) -> _StepSql:
        if self._prepared is None:
            return _StepSql(_Bound, self._upsert_components, sqlite=False)
        prepare = self._prepare
        return _StepSql(
            lambda statement, fields, one: _Sent(prepare(statement), fields, one),
            self._upsert_components,
            sqlite=True,
        )

    def _driven(self, send: Callable[[Connection, Driver], None]) -> None:
        """One transaction sent to the kept connection's driver (SQLite):
        ``send(connection, driver)`` runs its statements, the driver
        commits; anything raised rolls it back, and a database error drops
        the connection (the retry takes another)."""
        with self._writer_lock:
            kept = self._kept()
            driver = self._driver
            assert driver is not None
            try:
                driver.listen_once()
                send(kept, driver)
                driver.commit()
            except BaseException as error:
                driver.rollback()
                if isinstance(error, DBAPIError):
                    self._drop_kept()
                raise

    def _send(
        self, d: _Runs, step: _StepSql, write: StepWrite, number: Callable[[str], int]
    ) -> None:
        """The step's statements in one transaction: sent to ``d`` (the kept
        SQLite connection's driver, or SQLAlchemy's execute) with each one's
        rows' conversion kept in ``step`` (on SQLite the look-ups and calls
        between a StepWrite and the driver were a visible part of every
        write). A table with no rows costs a test, not a call; ``number``:
        the session's number."""
        fence = write.fence
        sid = fence.session_id
        sent = step.claim if fence.claims else step.fence
        if d.run(sent.sql, sent.convert(_fence_row(write), sid), False) != 1:
            raise _lease_lost(write)
        run = d.run
        if (changing := write.session) is not None:
            run(step.session.sql, step.session.convert(changing, sid), False)
        rows: Sequence[Any]
        if rows := write.new_hosts:
            run(step.insert_hosts.sql, step.insert_hosts.convert(rows, sid), True)
        if rows := write.hosts:
            run(step.update_hosts.sql, step.update_hosts.convert(rows, sid), True)
        if rows := write.new_instances:
            run(step.insert_instances.sql, step.insert_instances.convert(rows, sid), True)
        if rows := write.instances:
            run(step.update_instances.sql, step.update_instances.convert(rows, sid), True)
        if rows := write.new_projects:
            run(step.insert_projects.sql, step.insert_projects.convert(rows, sid), True)
        if rows := write.projects:
            run(step.update_projects.sql, step.update_projects.convert(rows, sid), True)
        new, changed = write.new_ops, write.changed_ops
        if new or changed:
            first = operation_id(number(sid), 0)  # n is added to it
            upsert = step.upsert_ops
            if upsert is None:
                if new:
                    rows = _numbered(sid, first, new)
                    run(step.insert_ops.sql, step.insert_ops.convert(rows, sid), True)
                if changed:
                    rows = _numbered(sid, first, changed)
                    run(step.update_ops.sql, step.update_ops.convert(rows, sid), True)
            else:
                ops = _numbered(sid, first, new, 0)
                if changed:
                    ops += _numbered(sid, first, changed, 1)
                # A new key that exists already is not written (a key is
                # never reused: the counter that makes them is written with
                # them).
                if run(upsert.sql, upsert.convert(ops, sid), True) != len(ops):
                    raise KeyError(
                        f"operation key(s) exist already among {sorted(row[0] for row in new)}: "
                        "the step is not written"
                    )
        if write.outbox:
            first = outbox_id(number(sid), 0)  # a seq is added to it
            rows = _outbox_rows(write, sid, first)
            run(step.outbox.sql, step.outbox.convert(rows, None), True)
        if rows := write.components:
            run(step.components.sql, step.components.convert(rows, sid), True)
        if write.timers:
            self._send_timers(d, step, sid, write.timers, write.fresh_timers)
        if rows := write.inbox_outcomes:
            run(step.outcomes.sql, step.outcomes.convert(rows, None), True)
        if rows := write.new_inbox:
            run(step.inbox.sql, step.inbox.convert(rows, sid), True)

    def _number(self, db: Connection | None, d: Driver | None, session_id: str) -> int:
        """The session's number: as loaded or inserted, else read (in the
        write's transaction: ``d``'s, else ``db``'s) and kept."""
        number = self._numbers.get(session_id)
        if number is None:
            values = {"b_session_id": session_id}
            if d is None:
                assert db is not None
                number = db.execute(S.session_number, values).scalar_one()
            else:
                prepared = self._prepare(S.session_number)
                number = d.fetch(prepared.sql, prepared.row(values))[0][0]
            self._numbers[session_id] = number
        return number

    def _send_timers(
        self,
        d: _Runs,
        step: _StepSql,
        session_id: str,
        timers: Sequence[tuple[str, datetime | None, Any]],
        fresh: Collection[str],
    ) -> None:
        """Named timers: a stored one set again is updated, a cancelled one
        deleted, a ``fresh`` one (no stored row: set for the first time in
        this step) inserted; one statement each kind, most steps have one
        kind. Every timer held when a step began is stored (loaded, or
        written by the last step); should an update find fewer rows than it
        names, those names are written again as delete and insert."""
        cancelled, again, new = _timer_rows(timers, fresh)
        delete = step.delete_timers
        if cancelled:
            d.run(delete.sql, delete.convert(cancelled, session_id), True)
        if again:
            # Without a reliable executemany count (some PostgreSQL drivers)
            # the update cannot be checked: delete and insert.
            updated = -1
            if self.database.dialect.supports_sane_multi_rowcount:
                sent = step.update_timers
                updated = d.run(sent.sql, sent.convert(again, session_id), True)
            if updated != len(again):
                names = [(name,) for name, _, _ in again]
                d.run(delete.sql, delete.convert(names, session_id), True)
                new = [*again, *new]
        if new:
            d.run(step.insert_timers.sql, step.insert_timers.convert(new, session_id), True)


def _timer_rows(
    timers: Sequence[tuple[str, datetime | None, Any]], fresh: Collection[str]
) -> tuple[list[tuple[str]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A step's timers as the names to delete (cancelled), the rows to
    update (set again) and the rows to insert (``fresh``: no stored row)."""
    cancelled = [(name,) for name, due, _ in timers if due is None and name not in fresh]
    again = [t for t in timers if t[1] is not None and t[0] not in fresh]
    new = [t for t in timers if t[1] is not None and t[0] in fresh]
    return cancelled, again, new


def _fence_row(write: StepWrite) -> tuple[Any, ...]:
    """The fenced UPDATE's values (``_CLAIM_ROW``; ``_FENCE_ROW`` is its
    first nine)."""
    fence, outbox = write.fence, write.outbox
    return (
        fence.owner,
        fence.token,
        fence.version,
        fence.version + 1,
        max(map(_SEQ, outbox)) if outbox else 0,
        write.next_wake,
        write.lease_expires,
        write.delivered_seq,
        write.inbox_seen_id,
        fence.token - 1,  # only the claim binds it
    )


def _lease_lost(write: StepWrite) -> LeaseLost:
    fence = write.fence
    return LeaseLost(
        f"session {fence.session_id}: the lease of {fence.owner} (token {fence.token}, "
        f"version {fence.version}) no longer holds; the step is not written"
    )


def _outbox_rows(write: StepWrite, session_id: str, first: int) -> list[tuple[Any, ...]]:
    """The outbox rows (``_OUTBOX_ROW``; ``first``: the id of the session's
    seq 0). Their ``created_at`` is the engine's clock (the outbox lag is
    measured on it); diagnostics only: delivery goes by seq."""
    now = write.at or datetime.now(UTC)
    return [(session_id, first + o.seq, o.seq, o.signal, o.payload, now) for o in write.outbox]
