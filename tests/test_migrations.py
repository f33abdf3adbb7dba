"""Alembic migrations from the first revision to head, one step at a time, on
an empty database and on one holding data, compared with the models at the
end; and back down where revisions provide a downgrade. Generic over the
revision chain: a new revision is tested without changing this file."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pg_server
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Text,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy import Table as SATable

from fenix_core import signals
from fenix_core.clock import SimClock
from fenix_core.store.database import alembic_config, open_database
from fenix_core.store.schema import Base, OutboxRow, SessionClockRow
from fenix_core.testing import migrations_per_instance

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def chain() -> list[str]:
    """Revision ids from the first to head."""
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions("base", "heads")))]


def downgradable() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [
        rev.revision
        for rev in script.walk_revisions("base", "heads")
        if "def downgrade" in Path(rev.path).read_text()
        and "raise NotImplementedError" not in Path(rev.path).read_text()
    ]


def alembic(engine: Engine, action: str, target: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, target)


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path / 'fenix.db'}")
    yield engine
    engine.dispose()


def value_for(column: Any, index: int) -> Any:
    """A plausible value of the column's type (only foreign keys to sessions matter)."""
    kind = column.type
    if column.foreign_keys:
        return "s-1"
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return index
    if isinstance(kind, DateTime):
        return T0
    if isinstance(kind, JSON):
        return {}
    if isinstance(kind, String | Text):
        return f"v{index}"
    return None  # pragma: no cover - a new column type: extend this helper


def fill_every_table(engine: Engine) -> dict[str, int]:
    """One row in each table as the schema stands now; return the row counts."""
    reflected = MetaData()
    reflected.reflect(engine)
    others = sorted(t for t in reflected.tables if t not in ("sessions", "alembic_version"))
    order = ["sessions", *others]
    with engine.begin() as connection:
        for index, name in enumerate(order, start=1):
            table: SATable = reflected.tables[name]
            row = {
                c.name: value_for(c, index) for c in table.columns if c.autoincrement is not True
            }
            if name == "sessions":
                row["id"] = "s-1"
            if name == "operations":
                row["key"] = "s-1:1"  # the engine's keys: <session id>:<n> (0013)
            connection.execute(table.insert().values(**row))
    return counts(engine)


def counts(engine: Engine) -> dict[str, int]:
    reflected = MetaData()
    reflected.reflect(engine)
    with engine.connect() as connection:
        return {
            name: int(connection.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in reflected.tables.items()
            if name != "alembic_version"
        }


def test_the_chain_is_linear_and_starts_at_0001() -> None:
    revisions = chain()
    assert revisions[0] == "0001"
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert len(set(revisions)) == len(revisions)


def test_upgrading_step_by_step_on_an_empty_database_reaches_the_models(db: Engine) -> None:
    for revision in chain():
        alembic(db, "upgrade", revision)
        assert current(db) == revision
    with db.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_upgrading_step_by_step_keeps_the_data(db: Engine) -> None:
    revisions = chain()
    alembic(db, "upgrade", revisions[0])
    before = fill_every_table(db)
    for revision in revisions[1:]:
        alembic(db, "upgrade", revision)
        after = counts(db)
        assert {t: after[t] for t in before} == before, f"rows lost migrating to {revision}"
    tables = set(inspect(db).get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)


@pytest.mark.parametrize("revision", downgradable())
def test_each_downgrade_undoes_its_upgrade(db: Engine, revision: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    previous = script.get_revision(revision).down_revision or "base"
    alembic(db, "upgrade", previous)
    with db.connect() as connection:
        shape_before = {
            t: {c["name"] for c in inspect(connection).get_columns(t)}
            for t in inspect(connection).get_table_names()
        }
    alembic(db, "upgrade", revision)
    alembic(db, "downgrade", previous if previous != "base" else "base")
    with db.connect() as connection:
        shape_after = {
            t: {c["name"] for c in inspect(connection).get_columns(t)}
            for t in inspect(connection).get_table_names()
        }
    assert shape_after == shape_before


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(
    request: pytest.FixtureRequest, db: Engine, postgres: pg_server.PostgresServer | None
) -> Iterator[Engine]:
    if request.param == "sqlite":
        yield db
        return
    if postgres is None:
        pytest.skip(f"no PostgreSQL server: {pg_server.unavailable()}")
    engine = open_database(postgres.new_database())
    yield engine
    engine.dispose()


def test_0006_keeps_constraints_and_lets_two_projects_hold_one_id(any_db: Engine) -> None:
    db = any_db
    alembic(db, "upgrade", "0005")
    reflected = MetaData()
    reflected.reflect(db)
    groups, instances = (
        reflected.tables["group_constraints"],
        reflected.tables["instance_constraints"],
    )
    group_row = {
        "group_id": "web",
        "project_id": "pa",
        "group_name": "",
        "anti_affinity_group": False,
        "max_instances_per_host": 0,
        "max_impacted_members": 2,
        "recovery_time": 0,
        "resource_mitigation": False,
        "updated_at": T0,
    }
    instance_row = {
        "instance_id": "vm-1",
        "project_id": "pa",
        "group_id": "web",
        "instance_name": "",
        "max_interruption_time": None,
        "migration_type": None,
        "resource_mitigation": False,
        "lead_time": 5,
        "updated_at": T0,
    }
    with db.begin() as connection:
        connection.execute(groups.insert().values(**group_row))
        connection.execute(instances.insert().values(**instance_row))
    alembic(db, "upgrade", "0006")
    with db.begin() as connection:
        # The same ids under another project: a row of its own, not a clash.
        connection.execute(groups.insert().values(**{**group_row, "project_id": "pb"}))
        connection.execute(instances.insert().values(**{**instance_row, "project_id": "pb"}))
        kept = connection.execute(
            select(instances.c.project_id, instances.c.lead_time).order_by(instances.c.project_id)
        ).all()
    assert [tuple(r) for r in kept] == [("pa", 5), ("pb", 5)]
    assert inspect(db).get_pk_constraint("instance_constraints")["constrained_columns"] == [
        "project_id",
        "instance_id",
    ]
    assert inspect(db).get_pk_constraint("group_constraints")["constrained_columns"] == [
        "project_id",
        "group_id",
    ]


# --------------------------------------------------------------------------- a release's database

RELEASE = Path(__file__).parent / "data"


def _release_fixture() -> Any:
    spec = importlib.util.spec_from_file_location("make_release_db", RELEASE / "make_release_db.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_session_of_the_previous_release_resumes(tmp_path: Path) -> None:
    """The database ``tests/data/make_release_db.py`` wrote with a released
    engine (two sessions stopped mid-run: a live migration running, a reply not
    yet read, notifications never delivered) is upgraded to head, and both
    sessions end as the same scenario run without a stop ends: nothing done
    twice, every notification delivered once."""
    release = _release_fixture()
    for source in (release.DATABASE, release.CLOUD_STATE, release.ACTION_STATE):
        shutil.copy(source, tmp_path / source.name)
    facts = json.loads(release.META.read_text())
    url = f"sqlite:///{tmp_path / release.DATABASE.name}"
    written = open_database(url)
    try:
        assert current(written) in chain()
        outbox = SATable("outbox", MetaData(), autoload_with=written)
        inbox = SATable("inbox", MetaData(), autoload_with=written)
        with written.connect() as connection:
            before = {
                (row.session_id, row.seq): row.delivered_at is not None
                for row in connection.execute(
                    select(outbox.c.session_id, outbox.c.seq, outbox.c.delivered_at)
                )
            }
            unread = connection.execute(
                select(func.count()).select_from(inbox).where(inbox.c.processed_at.is_(None))
            ).scalar_one()
        alembic(written, "upgrade", "head")
        assert current(written) == chain()[-1]
    finally:
        written.dispose()
    undelivered = {key for key, done in before.items() if not done}
    # The fixture holds what it says it does.
    assert undelivered
    assert unread == 1
    assert facts["moving"] == ["vm-c"]

    clock = SimClock(start=datetime.fromisoformat(facts["stopped_at"]))
    engine, cloud, action, _managers = release.scenario_engine(
        url, clock, tmp_path / release.CLOUD_STATE.name, tmp_path / release.ACTION_STATE.name
    )
    sent: Counter[tuple[str, int]] = Counter()

    def record(_sender: object, payload: dict[str, Any]) -> None:
        sent[(payload["session_id"], payload["seq"])] += 1

    for sig in signals.SIGNALS.values():
        sig.connect(record, sender=engine, weak=False)
    with engine:
        for session_id in (facts["rolling"], facts["constrained"]):
            view = engine.run_until_done(session_id)
            assert view.state == "MAINTENANCE_DONE", view.reason
    # The core records delivery as a watermark per session (session_clock),
    # not on each outbox row.
    resumed = open_database(url)
    try:
        with resumed.connect() as connection:
            delivered = dict(
                connection.execute(
                    select(SessionClockRow.session_id, SessionClockRow.delivered_seq)
                ).all()
            )
            after = {
                (row.session_id, row.seq): row.seq <= delivered[row.session_id]
                for row in connection.execute(select(OutboxRow.session_id, OutboxRow.seq))
            }
    finally:
        resumed.dispose()
    assert all(after.values()), "outbox rows left undelivered"
    assert set(after) == {key for key, done in before.items() if done} | set(sent)
    assert undelivered <= set(sent), "a notification the release left was never sent"
    assert not {key for key, done in before.items() if done} & set(sent), "sent again"
    assert all(count == 1 for count in sent.values()), sent

    # The release decided the moves before the stop, this release after it:
    # their placements may differ (the release parked vm-c on a host still to
    # do), so the counts are not compared with a run of either engine alone.
    # What holds whichever engine decides: no migration started twice (the
    # one running at the stop was followed, not started again), every host's
    # action ran once, every instance of the maintained hosts moved, and none
    # more than twice (a second move only off a host emptied early).
    started = Counter(
        (e.instance_id, e.host, e.detail) for e in cloud.events if e.kind == "migration_started"
    )
    assert all(n == 1 for n in started.values()), started
    assert sum(started.values()) == sum(migrations_per_instance(cloud).values())
    assert started[("vm-c", "cmp-1", "cmp-2")] == 1  # running at the stop
    moved = migrations_per_instance(cloud)
    assert set(moved) == {i for layout in (release.ROLLING, release.CONSTRAINED)
                          for insts in layout.values() for i, _p, _v in insts}  # fmt: skip
    assert max(moved.values()) <= 2, moved
    assert sorted(h or "" for h in action.hosts) == sorted([*release.ROLLING, *release.CONSTRAINED])


# --------------------------------------------------------------------------- 0007 (core v2)


def _release_copy(tmp_path: Path) -> tuple[Engine, dict[str, Any]]:
    release = _release_fixture()
    shutil.copy(release.DATABASE, tmp_path / release.DATABASE.name)
    facts = json.loads(release.META.read_text())
    return open_database(f"sqlite:///{tmp_path / release.DATABASE.name}"), facts


def _rows(engine: Engine, table: str, *where: Any) -> list[dict[str, Any]]:
    t = SATable(table, MetaData(), autoload_with=engine)
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(t))]


def test_0007_converts_the_release_sessions_data(tmp_path: Path) -> None:
    """Every key the release fixture's sessions hold lands where plan §5 says:
    the clock from the session row and the outbox/inbox, scalars in
    component bodies, per-host and per-instance facts in the new columns."""
    db, facts = _release_copy(tmp_path)
    try:
        alembic(db, "upgrade", "0007")
        clock = {r["session_id"]: r for r in _rows(db, "session_clock")}
        sessions = {r["id"]: r for r in _rows(db, "sessions")}
        outbox = _rows(db, "outbox")
        state = {(r["session_id"], r["component"]): r for r in _rows(db, "session_state")}
        hosts = {(r["session_id"], r["name"]): r["marks"] for r in _rows(db, "session_hosts")}
        instances = {
            (r["session_id"], r["instance_id"]): r["moved_from"]
            for r in _rows(db, "session_instances")
        }
        projects = {
            (r["session_id"], r["project_id"]): r["draining"] for r in _rows(db, "session_projects")
        }
        inbox = _rows(db, "inbox")
    finally:
        db.dispose()
    rolling, constrained = facts["rolling"], facts["constrained"]
    assert set(clock) == set(sessions)
    for sid, row in clock.items():
        assert (row["version"], row["seq"]) == (sessions[sid]["version"], sessions[sid]["seq"])
        assert row["lease_token"] == sessions[sid]["lease_token"]
        open_seqs = [
            o["seq"] for o in outbox if o["session_id"] == sid and o["delivered_at"] is None
        ]
        assert row["delivered_seq"] == (min(open_seqs) - 1 if open_seqs else sessions[sid]["seq"])
        unread = [i["id"] for i in inbox if i["session_id"] == sid and i["processed_at"] is None]
        if unread:
            assert row["inbox_seen_id"] < min(unread)
    # The constrained session has undelivered notifications and an unread reply.
    assert clock[constrained]["delivered_seq"] < clock[constrained]["seq"]
    assert state[(constrained, "constrained")]["body"] == {"wave": 2}
    assert state[(constrained, "session")]["body"]["op_counter"] == 6
    assert state[(rolling, "rolling")]["body"] == {"drain_host": "cmp-1"}
    assert state[(rolling, "lifecycle")]["body"] == {"hosts_listed": True, "admin_done": []}
    assert state[(rolling, "controls")]["body"] == {"ctl_gate": None}
    # ctl_started -> STARTED (1); ctl_moved_off -> MOVED_OFF (8) and moved_from.
    assert hosts[(constrained, "cmp-3")] == 1 | 8
    assert hosts[(constrained, "cmp-4")] == 1
    assert hosts[(rolling, "cmp-1")] == 1
    assert hosts[(rolling, "cmp-0")] == 0
    assert instances[(constrained, "db-0")] == "cmp-3"
    assert [k for k, v in instances.items() if v] == [(constrained, "db-0")]
    assert [k for k, v in projects.items() if v] == [(rolling, "p1")]


def test_0007_keeps_the_release_hosts_admitted(tmp_path: Path) -> None:
    """The core's session_hosts.started_at / finished_at are the pipeline's
    admission and finish (today's engine kept them in ctl_started /
    ctl_finished): a host whose drain the release had started is admitted
    after the upgrade, so its moves may go on (the core refused them with
    "needs the host admitted by the pipeline first")."""
    db, facts = _release_copy(tmp_path)
    try:
        alembic(db, "upgrade", "0007")
        started = {
            (r["session_id"], r["name"]): r["started_at"] for r in _rows(db, "session_hosts")
        }
    finally:
        db.dispose()
    constrained, rolling = facts["constrained"], facts["rolling"]

    def at(value: Any) -> datetime | None:
        if value is None:
            return None
        found = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return found.replace(tzinfo=None)

    assert at(started[(constrained, "cmp-4")]) == datetime(2026, 1, 1, 0, 2)
    assert at(started[(constrained, "cmp-3")]) == datetime(2026, 1, 1, 0, 0)
    assert at(started[(rolling, "cmp-1")]) == datetime(2026, 1, 1, 0, 1)
    assert started[(rolling, "cmp-0")] is None


def test_0007_refuses_a_data_key_it_does_not_know(db: Engine) -> None:
    alembic(db, "upgrade", "0006")
    fill_every_table(db)
    sessions = SATable("sessions", MetaData(), autoload_with=db)
    with db.begin() as connection:
        connection.execute(sessions.update().values(data={"paused": True, "mystery_key": 1}))
    with pytest.raises(RuntimeError, match="mystery_key"):
        alembic(db, "upgrade", "0007")
    assert current(db) == "0006"
    assert "session_clock" not in inspect(db).get_table_names()


def test_0007_down_and_up_again_on_the_release_database(tmp_path: Path) -> None:
    db, _facts = _release_copy(tmp_path)
    try:
        alembic(db, "upgrade", "0007")
        first = sorted(map(repr, _rows(db, "session_state")))
        alembic(db, "downgrade", "0006")
        assert "session_state" not in inspect(db).get_table_names()
        assert "marks" not in {c["name"] for c in inspect(db).get_columns("session_hosts")}
        alembic(db, "upgrade", "0007")
        assert sorted(map(repr, _rows(db, "session_state"))) == first
    finally:
        db.dispose()


def test_0007_up_down_up_on_a_populated_database(any_db: Engine) -> None:
    """On SQLite and PostgreSQL: a session with per-host and per-instance
    lists in its data is converted, the downgrade removes what 0007 added
    and leaves the old columns as they were, and the upgrade runs again."""
    db = any_db
    alembic(db, "upgrade", "0006")
    fill_every_table(db)
    meta = MetaData()
    meta.reflect(db)
    sessions, hosts = meta.tables["sessions"], meta.tables["session_hosts"]
    with db.connect() as connection:
        name = connection.execute(select(hosts.c.name)).scalar_one()  # fill_every_table's
    data = {
        "paused": True,
        "pause_reason": "night",
        "ctl_skipped": [name],
        "ctl_finished": {name: "2026-01-01T00:00:00+00:00"},
        "refused_targets": {},
        "pre_actions_done": 2,
    }
    with db.begin() as connection:
        connection.execute(sessions.update().values(data=data))
    alembic(db, "upgrade", "0007")
    state = {r["component"]: r["body"] for r in _rows(db, "session_state")}
    assert state == {
        "controls": {"paused": True, "pause_reason": "night"},
        "session": {"sequences": {"pre_actions_done": 2}},
    }
    assert [r["marks"] for r in _rows(db, "session_hosts")] == [2 | 4]
    assert [r["session_id"] for r in _rows(db, "session_clock")] == ["s-1"]
    alembic(db, "downgrade", "0006")
    assert "session_clock" not in inspect(db).get_table_names()
    assert [r["data"] for r in _rows(db, "sessions")] == [data]
    alembic(db, "upgrade", "0007")
    assert {r["component"] for r in _rows(db, "session_state")} == {"controls", "session"}


# ------------------------------------------------------------------------- 0008 (the core's state)


def _legacy_session(db: Engine, data: dict[str, Any], **columns: Any) -> None:
    """fill_every_table's session as the previous release's engine keeps it:
    a rolling session draining its host ``v<n>`` (fill_every_table's host)."""
    meta = MetaData()
    meta.reflect(db)
    sessions, hosts = meta.tables["sessions"], meta.tables["session_hosts"]
    with db.begin() as connection:
        host = connection.execute(select(hosts.c.name)).scalar_one()
        for table in ("timers", "operations"):  # fill_every_table's: of no engine
            connection.execute(meta.tables[table].delete())
        connection.execute(
            hosts.update().values(type="compute", state="DRAINING", stage=0, enabled=True)
        )
        connection.execute(
            sessions.update().values(
                workflow=columns.get("workflow", "rolling"),
                state=columns.get("state", "PREPARE_MAINTENANCE"),
                phase=columns.get("phase", "drain"),
                version=3,
                request={"hosts": [host], "actions": [{"plugin": "upgrade", "type": "host"}]},
                data={"drain_host": host, **data},
            )
        )


def _components(db: Engine) -> dict[str, dict[str, Any]]:
    return {r["component"]: r["body"] for r in _rows(db, "session_state")}


def test_0008_reads_what_the_previous_engine_wrote_after_0007(any_db: Engine) -> None:
    """On SQLite and PostgreSQL: a database at 0007 whose session the
    previous release went on running (it writes ``data``, not 0007's
    components) upgrades to the state the core reads, from ``data``."""
    db = any_db
    alembic(db, "upgrade", "0006")
    fill_every_table(db)
    started = "2026-01-01T00:00:00+00:00"
    _legacy_session(db, {"allowed_actions": ["LIVE_MIGRATE"], "op_counter": 1})
    alembic(db, "upgrade", "0007")
    host = _rows(db, "session_hosts")[0]["name"]
    sessions = SATable("sessions", MetaData(), autoload_with=db)
    with db.begin() as connection:  # the previous engine's next steps
        connection.execute(
            sessions.update().values(
                data={
                    "allowed_actions": ["LIVE_MIGRATE"],
                    "op_counter": 4,
                    "drain_host": host,
                    "ctl_started": {host: started},
                    "paused": True,
                    "pause_reason": "night",
                }
            )
        )
    alembic(db, "upgrade", "0008")
    state = _components(db)
    assert set(state) == {"session", "pipeline", "rolling"}
    assert state["session"] == {"allowed_actions": ["LIVE_MIGRATE"], "op_counter": 4}
    pipeline = state["pipeline"]
    assert (pipeline["paused"], pipeline["pause_reason"]) == (True, "night")
    assert (pipeline["started"], pipeline["in_maintenance"], pipeline["finished"]) == (1, 1, 0)
    rolling = state["rolling"]
    assert (rolling["drain_host"], rolling["phase"]) == (host, "disable")
    (row,) = _rows(db, "session_hosts")
    assert row["started_at"] is not None
    assert row["finished_at"] is None
    assert row["marks"] == 1  # 0007's conversion ran again: STARTED
    assert [r["data"] for r in _rows(db, "sessions")] == [{}]
    clock = _rows(db, "session_clock")
    assert [(c["version"], c["session_id"]) for c in clock] == [(3, "s-1")]


@pytest.mark.parametrize(
    ("columns", "data", "named"),
    [
        ({"workflow": "my-plugin-workflow"}, {}, "plug-in workflow 'my-plugin-workflow'"),
        ({}, {"mystery": 1}, "'mystery'"),
        ({"state": "MAINTENANCE", "phase": "somewhere"}, {}, "phase 'somewhere'"),
    ],
)
def test_0008_refuses_a_session_it_cannot_carry_over(
    db: Engine, columns: dict[str, Any], data: dict[str, Any], named: str
) -> None:
    alembic(db, "upgrade", "0007")
    fill_every_table(db)
    _legacy_session(db, {"allowed_actions": [], **data}, **columns)
    before = _components(db)
    with pytest.raises(RuntimeError, match="session s-1: .*" + named) as refused:
        alembic(db, "upgrade", "0008")
    assert "let it finish (or cancel it) on the previous release" in str(refused.value)
    assert current(db) == "0007"
    assert _components(db) == before  # nothing converted
    assert [r["data"] for r in _rows(db, "sessions")] != [{}]


def test_0007_and_0008_upgrade_a_session_awaiting_approval(db: Engine) -> None:
    """Keys the release writes besides those 0007 first knew (an approval
    record, topology labels) no longer stop the upgrade; the core finds
    them in the session component."""
    alembic(db, "upgrade", "0006")
    fill_every_table(db)
    approval = {"plan_id": "p-1", "hosts": []}
    _legacy_session(
        db,
        {"allowed_actions": [], "approval": approval, "host_labels": {"h": {"zone": "a"}}},
        state="AWAITING_APPROVAL",
        phase="",
    )
    alembic(db, "upgrade", "head")
    session = _components(db)["session"]
    assert session["approval"] == approval
    assert session["host_labels"] == {"h": {"zone": "a"}}


def test_0008_downgrade_refuses_while_a_session_runs(db: Engine) -> None:
    alembic(db, "upgrade", "0007")
    fill_every_table(db)
    _legacy_session(db, {"allowed_actions": []})
    alembic(db, "upgrade", "0008")
    with pytest.raises(RuntimeError, match="finish or cancel s-1 first"):
        alembic(db, "downgrade", "0007")


# --------------------------------------------------------------------------- 0011


def _operations(engine: Engine) -> list[tuple[Any, ...]]:
    """Every operation row but ``id`` (to 0010) and ``n`` (from 0013), in
    key order."""
    ops = SATable("operations", MetaData(), autoload_with=engine)
    columns = [c for c in ops.columns if c.name not in ("id", "n")]
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(select(*columns).order_by(ops.c.key))]


class _Restarts:
    """A small rolling cloud, its host action and a simulated clock shared
    by the engines a test opens one after another on ``db``: one process
    stopped, the database migrated, another started."""

    def __init__(self, db: Engine) -> None:
        from test_leases import build_cloud

        from fenix_core.testing import TimedAction

        self.url = db.url.render_as_string(hide_password=False)
        self.cloud = build_cloud()
        self.upgrade = TimedAction("upgrade", seconds=60)
        self.clock = SimClock()

    def engine(self) -> Any:
        from fenix_core import Engine as FenixEngine

        return FenixEngine(
            self.url,
            clock=self.clock,
            plugins=[self.cloud, self.upgrade],
            load_entry_points=False,
            worker_id="w",
        )


def test_0011_a_session_stopped_under_0010_resumes(any_db: Engine) -> None:
    """A rolling session stopped mid-run (a migration running, operations
    handled and not), its database taken down to 0010's operations (an
    ``id`` rowid, a unique ``key``, the session index) and up again: every
    operation row comes back as it was, and the session ends as one run
    without a stop would: no migration started twice, every host done."""
    from test_leases import UPGRADE

    from fenix_core import SessionRequest

    restarts = _Restarts(any_db)
    cloud, upgrade, clock = restarts.cloud, restarts.upgrade, restarts.clock
    engine = restarts.engine

    first = engine()
    with first:
        sid = first.create_session(SessionRequest(actions=UPGRADE))
        while not any(e.kind == "migration_started" for e in cloud.events):
            first.run_until_idle()
            clock.advance(5)
    stopped = _operations(any_db)
    assert {row[6] for row in stopped} >= {"running", "done"}  # status
    handled = [row[13] for row in stopped]
    assert any(handled)
    assert not all(handled)

    alembic(any_db, "downgrade", "0010")
    shape = {c["name"] for c in inspect(any_db).get_columns("operations")}
    assert "id" in shape
    assert "ix_operations_session" in {
        ix["name"] for ix in inspect(any_db).get_indexes("operations")
    }
    unique = inspect(any_db).get_unique_constraints("operations")
    assert [u["column_names"] for u in unique] == [["key"]]
    assert _operations(any_db) == stopped
    alembic(any_db, "upgrade", "head")
    assert _operations(any_db) == stopped

    with engine() as second:
        view = second.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    started = Counter(
        (e.instance_id, e.host) for e in cloud.events if e.kind == "migration_started"
    )
    assert started
    assert all(n == 1 for n in started.values()), started
    assert sorted(h or "" for h in upgrade.hosts) == sorted(["cmp-0", "cmp-1", "cmp-2"])


# --------------------------------------------------------------------------- 0012


def _timers(engine: Engine) -> list[tuple[Any, ...]]:
    timers = SATable("timers", MetaData(), autoload_with=engine)
    with engine.connect() as connection:
        rows = connection.execute(
            select(timers.c.session_id, timers.c.kind, timers.c.due).order_by(timers.c.kind)
        )
        return [tuple(r) for r in rows]


def test_0012_a_session_awaiting_replies_under_0011_takes_them_after_the_upgrade(
    any_db: Engine,
) -> None:
    """A rolling session waiting for its projects' MAINTENANCE answers (a
    reply deadline timer each), its database taken down to 0011's timers
    index (the session alone) and up again: the timers come back as they
    were, the answers cancel them, and the session ends done."""
    from test_leases import UPGRADE

    from fenix_core import SessionRequest
    from fenix_core.testing import ScriptedManager

    restarts = _Restarts(any_db)
    cloud, upgrade = restarts.cloud, restarts.upgrade
    engine = restarts.engine

    first = engine()
    with first:
        for project in ("p1", "p2"):
            first.subscribe(project)
        sid = first.create_session(SessionRequest(actions=UPGRADE))
        first.run_until_idle()
        assert first.get_session(sid).state == "MAINTENANCE"
    waiting = _timers(any_db)
    assert [kind for _, kind, _ in waiting] == ["reply_deadline:p1", "reply_deadline:p2"]

    alembic(any_db, "downgrade", "0011")
    assert {ix["name"] for ix in inspect(any_db).get_indexes("timers")} == {"ix_timers_session"}
    assert _timers(any_db) == waiting
    alembic(any_db, "upgrade", "head")
    assert {ix["name"] for ix in inspect(any_db).get_indexes("timers")} == {
        "ix_timers_session_kind"
    }
    assert _timers(any_db) == waiting

    with engine() as second:
        managers = [ScriptedManager(second, p, cloud=cloud) for p in ("p1", "p2")]
        for project in ("p1", "p2"):
            second.reply(sid, project, "ACK_MAINTENANCE")
        second.run_until_idle()
        assert not [kind for _, kind, _ in _timers(any_db) if kind.endswith(":p1")]
        view = second.run_until_done(sid)
        for manager in managers:
            manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert sorted(h or "" for h in upgrade.hosts) == sorted(["cmp-0", "cmp-1", "cmp-2"])


# --------------------------------------------------------------------------- 0013


def test_0013_a_session_stopped_under_0012_resumes(any_db: Engine) -> None:
    """A rolling session stopped mid-run (a migration running, operations
    handled and not), its database taken down to 0012's operations (keyed
    by ``(session_id, key)``, no ``n``) and up again: every operation row
    comes back as it was with the key's number as ``n``, the next operation
    numbers on from the highest, and the session ends as one run without a
    stop would: no migration started twice, every host done."""
    from test_leases import UPGRADE

    from fenix_core import SessionRequest

    restarts = _Restarts(any_db)
    cloud, upgrade, clock = restarts.cloud, restarts.upgrade, restarts.clock
    engine = restarts.engine

    def stop_here() -> bool:
        """Keys of one and two digits (":9" sorted after ":10"), a migration
        started and its operation not handled yet."""
        rows = _operations(any_db)
        return len(rows) >= 10 and not all(row[13] for row in rows)  # handled

    with engine() as first:
        sid = first.create_session(SessionRequest(actions=UPGRADE))
        for _ in range(100):
            first.run_until_idle()
            clock.advance(5)
            if stop_here():
                break
    stopped = _operations(any_db)
    assert len(stopped) >= 10
    assert any(e.kind == "migration_started" for e in cloud.events)
    assert any(row[13] for row in stopped)  # handled
    assert not all(row[13] for row in stopped)

    alembic(any_db, "downgrade", "0012")
    assert "n" not in {c["name"] for c in inspect(any_db).get_columns("operations")}
    key = inspect(any_db).get_pk_constraint("operations")["constrained_columns"]
    assert key == ["session_id", "key"]
    assert _operations(any_db) == stopped
    alembic(any_db, "upgrade", "0013")
    assert _operations(any_db) == stopped
    key = inspect(any_db).get_pk_constraint("operations")["constrained_columns"]
    assert key == ["session_id", "n"]
    alembic(any_db, "upgrade", "head")
    assert _operations(any_db) == stopped
    with any_db.connect() as connection:
        numbered = connection.execute(text('SELECT "key", n FROM operations')).all()
    assert numbered
    assert all(k == f"{sid}:{n}" for k, n in numbered)
    last = max(n for _, n in numbered)

    with engine() as second:
        view = second.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    with any_db.connect() as connection:
        after = connection.execute(text('SELECT "key", n FROM operations')).all()
    assert all(k == f"{sid}:{n}" for k, n in after)
    new = sorted(n for _, n in after if n > last)
    assert new == list(range(last + 1, last + 1 + len(new)))  # numbered on, none reused
    assert len(after) == len(numbered) + len(new)
    started = Counter(
        (e.instance_id, e.host) for e in cloud.events if e.kind == "migration_started"
    )
    assert started
    assert all(n == 1 for n in started.values()), started
    assert sorted(h or "" for h in upgrade.hosts) == sorted(["cmp-0", "cmp-1", "cmp-2"])


def test_0013_refuses_a_key_that_is_not_the_sessions_number(db: Engine) -> None:
    """The number becomes the primary key: a key of another form (no engine
    made one) is refused before anything changes."""
    alembic(db, "upgrade", "0012")
    fill_every_table(db)
    with db.begin() as connection:
        connection.execute(text("UPDATE operations SET \"key\" = 's-1:x1'"))
    with pytest.raises(RuntimeError, match="s-1:x1"):
        alembic(db, "upgrade", "0013")
    assert current(db) == "0012"
    assert "n" not in {c["name"] for c in inspect(db).get_columns("operations")}


# --------------------------------------------------------------------------- 0014


def _outbox(engine: Engine) -> list[tuple[Any, ...]]:
    outbox = SATable("outbox", MetaData(), autoload_with=engine)
    with engine.connect() as connection:
        rows = connection.execute(
            select(outbox.c.session_id, outbox.c.seq, outbox.c.signal, outbox.c.payload)
            .order_by(outbox.c.session_id, outbox.c.seq)
        )  # fmt: skip
        return [tuple(r) for r in rows]


def test_0014_a_session_stopped_under_0013_delivers_each_notification_once(
    any_db: Engine,
) -> None:
    """A rolling session stopped mid-run with notifications not delivered
    (its stored watermark three behind, as a worker dying before its next
    write leaves it), its database taken down to 0013's outbox (keyed by
    ``(session_id, seq)``, no session numbers) and up again: every outbox
    row comes back as it was, keyed by the session's number and its seq,
    and the resumed session sends the three once each, then its new ones
    once each, and nothing it had delivered; it ends done."""
    from test_leases import UPGRADE

    from fenix_core import Engine as FenixEngine
    from fenix_core import SessionRequest

    restarts = _Restarts(any_db)
    cloud, upgrade, clock = restarts.cloud, restarts.upgrade, restarts.clock

    def engine(sent: Counter[int]) -> FenixEngine:
        made = restarts.engine()

        def record(_sender: object, payload: dict[str, Any]) -> None:
            sent[payload["seq"]] += 1

        for sig in signals.SIGNALS.values():
            sig.connect(record, sender=made, weak=False)
        return made

    first_sent: Counter[int] = Counter()
    with engine(first_sent) as first:
        sid = first.create_session(SessionRequest(actions=UPGRADE))
        for _ in range(100):
            first.run_until_idle()
            clock.advance(5)
            if len(first_sent) >= 6 and any(e.kind == "migration_started" for e in cloud.events):
                break
    stopped = _outbox(any_db)
    last = len(stopped)
    assert [seq for _, seq, _, _ in stopped] == list(range(1, last + 1))
    assert last >= 6
    with any_db.begin() as connection:
        connection.execute(
            SessionClockRow.__table__.update()
            .where(SessionClockRow.session_id == sid)
            .values(delivered_seq=last - 3)
        )

    alembic(any_db, "downgrade", "0013")
    assert "id" not in {c["name"] for c in inspect(any_db).get_columns("outbox")}
    assert "number" not in {c["name"] for c in inspect(any_db).get_columns("sessions")}
    key = inspect(any_db).get_pk_constraint("outbox")["constrained_columns"]
    assert key == ["session_id", "seq"]
    wake = {"ix_session_clock_wake"}
    assert {ix["name"] for ix in inspect(any_db).get_indexes("session_clock")} == wake
    assert _outbox(any_db) == stopped
    alembic(any_db, "upgrade", "head")
    assert inspect(any_db).get_indexes("session_clock") == []
    assert _outbox(any_db) == stopped
    assert inspect(any_db).get_pk_constraint("outbox")["constrained_columns"] == ["id"]
    with any_db.connect() as connection:
        (number,) = connection.execute(text("SELECT number FROM sessions")).scalars().all()
        ids = connection.execute(text("SELECT id, seq FROM outbox")).all()
    assert number == 1
    assert sorted(ids) == [(number * 2**32 + seq, seq) for seq in range(1, last + 1)]

    second_sent: Counter[int] = Counter()
    with engine(second_sent) as second:
        view = second.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    final = _outbox(any_db)
    assert final[:last] == stopped
    assert set(second_sent) == set(range(last - 2, len(final) + 1))
    assert all(n == 1 for n in second_sent.values()), second_sent
    with any_db.connect() as connection:
        clock_row = connection.execute(
            select(SessionClockRow.seq, SessionClockRow.delivered_seq)
        ).one()
    assert tuple(clock_row) == (len(final), len(final))
    started = Counter(
        (e.instance_id, e.host) for e in cloud.events if e.kind == "migration_started"
    )
    assert all(n == 1 for n in started.values()), started
    assert sorted(h or "" for h in upgrade.hosts) == sorted(["cmp-0", "cmp-1", "cmp-2"])


# --------------------------------------------------------------------------- 0015


def test_0015_a_session_stopped_under_0014_resumes(any_db: Engine) -> None:
    """A rolling session stopped mid-run (a migration running, operations
    handled and not), its database taken down to 0014's operations (keyed
    by ``(session_id, n)``, WITHOUT ROWID on SQLite, a foreign key to the
    session) and up again: every operation row comes back as it was, keyed
    by the session's number and n, the next operation numbers on from the
    highest, and the session ends as one run without a stop would: no
    migration started twice, every host done."""
    from test_leases import UPGRADE

    from fenix_core import SessionRequest

    restarts = _Restarts(any_db)
    cloud, upgrade, clock = restarts.cloud, restarts.upgrade, restarts.clock
    engine = restarts.engine

    with engine() as first:
        sid = first.create_session(SessionRequest(actions=UPGRADE))
        for _ in range(100):
            first.run_until_idle()
            clock.advance(5)
            rows = _operations(any_db)
            if any(e.kind == "migration_started" for e in cloud.events) and not all(
                row[13]
                for row in rows  # handled
            ):
                break
    stopped = _operations(any_db)
    assert any(row[13] for row in stopped)
    assert not all(row[13] for row in stopped)

    alembic(any_db, "downgrade", "0014")
    assert "id" not in {c["name"] for c in inspect(any_db).get_columns("operations")}
    key = inspect(any_db).get_pk_constraint("operations")["constrained_columns"]
    assert key == ["session_id", "n"]
    parents = [k["referred_table"] for k in inspect(any_db).get_foreign_keys("operations")]
    assert parents == ["sessions"]
    assert _operations(any_db) == stopped
    alembic(any_db, "upgrade", "head")
    assert _operations(any_db) == stopped
    assert inspect(any_db).get_pk_constraint("operations")["constrained_columns"] == ["id"]
    assert inspect(any_db).get_foreign_keys("operations") == []
    with any_db.connect() as connection:
        (number,) = connection.execute(text("SELECT number FROM sessions")).scalars().all()
        ids = connection.execute(text("SELECT id, n FROM operations")).all()
    assert ids
    assert all(row_id == number * 2**32 + n for row_id, n in ids)
    last = max(n for _, n in ids)

    with engine() as second:
        view = second.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    with any_db.connect() as connection:
        after = connection.execute(text('SELECT id, n, "key" FROM operations')).all()
    assert all(row_id == number * 2**32 + n and k == f"{sid}:{n}" for row_id, n, k in after)
    new = sorted(n for _, n, _ in after if n > last)
    assert new == list(range(last + 1, last + 1 + len(new)))  # numbered on, none reused
    assert new
    started = Counter(
        (e.instance_id, e.host) for e in cloud.events if e.kind == "migration_started"
    )
    assert started
    assert all(n == 1 for n in started.values()), started
    assert sorted(h or "" for h in upgrade.hosts) == sorted(["cmp-0", "cmp-1", "cmp-2"])
