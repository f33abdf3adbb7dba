"""core cut-over: the previous release's sessions in the state the core reads

0007 split each session's ``data`` into components named after the previous
engine's parts (``controls``, ``lifecycle``, ``rolling``, ``session``) with
its keys, and that engine went on writing ``sessions.data`` and its own
columns (not the new tables) afterwards. The core reads other components
with other fields (``pipeline``, the contract workflows' ``rolling`` and
``constrained``, a flat ``session``), admission times on the hosts and
timers under other names.

For every session the previous release wrote (``sessions.data`` not empty:
the core never writes that column) this revision

1. runs 0007's conversion again for it (clock, host marks, moved_from,
   refused, draining), from the columns the previous engine kept writing;
2. replaces its components, host columns and timers by the translation of
   :mod:`fenix_core.store.migrations.release_sessions` (the constrained
   waves: :mod:`~fenix_core.store.migrations.release_constrained`), built
   with the pieces of this release's code frozen in
   :mod:`~fenix_core.store.migrations.release_frozen` (this revision imports
   nothing of fenix_core outside its migrations package);
3. empties its ``data`` (so no later conversion can take it for one of the
   previous release).

A session whose state cannot be carried over faithfully (a plug-in's
workflow, an unknown key, phase or timer) fails the upgrade before anything
is written, naming each such session: let it finish on the previous release
(or cancel it), then upgrade (docs/operations.md).

The downgrade changes nothing; it refuses while a session is unfinished (the
previous release cannot resume a session in the core's state).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op

from fenix_core.store.migrations.release_frozen import (
    FINAL_SESSION_STATES,
    SESSION_STATES,
    OldRequest,
)
from fenix_core.store.migrations.release_sessions import (
    CoreState,
    OldHost,
    OldInstance,
    OldOp,
    OldProject,
    OldSession,
    OldTimer,
    Untranslatable,
)
from fenix_core.store.migrations.release_translate import translate

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _utc(value: datetime | None) -> datetime | None:
    """A stored time as UTC (SQLite's columns read back without a zone)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _state(value: str) -> str:
    if value not in SESSION_STATES:
        raise ValueError(f"{value!r} is not a session state")
    return value


def _convert_0007() -> Callable[..., None]:
    """0007's ``convert`` (revision files are not importable by name)."""
    path = Path(__file__).with_name("0007_core_v2.py")
    spec = importlib.util.spec_from_file_location("fenix_migration_0007", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    convert: Callable[..., None] = module.convert
    return convert


def _tables(bind: sa.engine.Connection) -> dict[str, sa.Table]:
    meta = sa.MetaData()
    names = ["sessions", "session_hosts", "session_instances", "session_projects"]
    names += ["operations", "timers", "session_state"]
    return {name: sa.Table(name, meta, autoload_with=bind) for name in names}


def _old_session(bind: sa.engine.Connection, t: dict[str, sa.Table], row: Any) -> OldSession:
    sid = row.id
    hosts, instances = t["session_hosts"], t["session_instances"]
    projects, ops, timers = t["session_projects"], t["operations"], t["timers"]
    return OldSession(
        id=sid,
        workflow=row.workflow,
        state=_state(row.state),
        phase=row.phase or "",
        version=row.version or 0,
        data=_json(row.data) or {},
        request=OldRequest.from_json(_json(row.request)),
        hosts={
            h.name: OldHost(
                h.name, h.type, h.state, h.stage or 0, bool(h.enabled), bool(h.disabled_by_session)
            )
            for h in bind.execute(sa.select(hosts).where(hosts.c.session_id == sid))
        },
        instances={
            i.instance_id: OldInstance(
                i.instance_id,
                i.host,
                i.state,
                i.attempts or 0,
                _utc(i.not_before),
                _utc(i.impacted_until),
            )
            for i in bind.execute(sa.select(instances).where(instances.c.session_id == sid))
        },
        projects={
            p.project_id: OldProject(p.project_id, p.state, bool(p.awaiting), _utc(p.reply_at))
            for p in bind.execute(sa.select(projects).where(projects.c.session_id == sid))
        },
        ops=[
            OldOp(o.kind, o.host, o.instance_id, _json(o.params) or {})
            for o in bind.execute(
                sa.select(ops)
                .where(ops.c.session_id == sid, ops.c.handled == sa.false())
                .order_by(ops.c.id)
            )
        ],
        timers=[
            OldTimer(m.kind, _utc(m.due) or m.due, _json(m.data) or {})
            for m in bind.execute(
                sa.select(timers).where(timers.c.session_id == sid).order_by(timers.c.id)
            )
        ],
    )


def _write(bind: sa.engine.Connection, t: dict[str, sa.Table], sid: str, new: CoreState) -> None:
    hosts, instances, timers = t["session_hosts"], t["session_instances"], t["timers"]
    state, sessions = t["session_state"], t["sessions"]
    bind.execute(state.delete().where(state.c.session_id == sid))
    for component, body in sorted(new.components.items()):
        bind.execute(
            state.insert().values(session_id=sid, component=component, schema_version=1, body=body)
        )
    for name, columns in new.hosts.items():
        bind.execute(
            hosts.update().where(hosts.c.session_id == sid, hosts.c.name == name).values(**columns)
        )
    for instance_id, columns in new.instances.items():
        bind.execute(
            instances.update()
            .where(instances.c.session_id == sid, instances.c.instance_id == instance_id)
            .values(**columns)
        )
    bind.execute(timers.delete().where(timers.c.session_id == sid))
    for name, due, data in new.timers:
        bind.execute(timers.insert().values(session_id=sid, kind=name, due=due, data=data))
    bind.execute(sessions.update().where(sessions.c.id == sid).values(data={}))


def upgrade() -> None:
    bind = op.get_bind()
    t = _tables(bind)
    sessions = t["sessions"]
    rows = [r for r in bind.execute(sa.select(sessions).order_by(sessions.c.id)) if _json(r.data)]
    translated: dict[str, CoreState] = {}
    refused: list[str] = []
    for row in rows:
        try:
            translated[row.id] = translate(_old_session(bind, t, row))
        except Untranslatable as e:
            refused.append(str(e))
    if refused:
        raise RuntimeError(
            "migration 0008 cannot carry these sessions of the previous release over to "
            "this one (nothing was converted):\n" + "\n".join(refused)
        )
    if not translated:
        return
    _convert_0007()(bind, only=list(translated))
    for sid, new in translated.items():
        _write(bind, t, sid, new)


def downgrade() -> None:
    sessions = sa.Table("sessions", sa.MetaData(), autoload_with=op.get_bind())
    final = sorted(FINAL_SESSION_STATES)
    running = (
        op.get_bind()
        .execute(sa.select(sessions.c.id).where(sessions.c.state.not_in(final)))
        .scalars()
        .all()
    )
    if running:
        raise RuntimeError(
            "migration 0008 downgrade: the previous release cannot resume sessions in the "
            f"core's state; finish or cancel {', '.join(running)} first (or restore the "
            "database saved before the upgrade)"
        )
