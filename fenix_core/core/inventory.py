"""The host inventory in memory, with a generation counter (issue 18 item 3).

The ``inventory_hosts`` table (what the engine knows of the cloud's host
set) is read once, then kept in memory. Every change — a listing that found
hosts added or gone, a session that brought a host into service or retired
one, a change another worker committed — bumps the generation and is logged
with it, so a session that saw generation *g* follows only the hosts
changed since *g* (:meth:`InventoryCache.changed_since`): the work per step
is in proportion to the changes, not to the fleet.

Each change is written with its ``host_changes`` row (HOST_ADDED /
HOST_REMOVED, announced once) in one transaction (its own, or, for the
listing a new session takes, the session's insert), so the stored
inventory and the announcements never disagree; the sessions' records
follow the inventory (a session loaded later compares all its hosts once).
Changes committed by other workers are read from ``host_changes`` above the
highest id seen, and the ids below it not seen yet (another worker's
transaction may commit a lower id later: :class:`~fenix_core.core.id_cursor.IdCursor`),
by primary key (:meth:`InventoryCache.poll`).

The comparison of a listing with the inventory is the pure
:func:`fenix_core.inventory.plan_sync`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Final

import attrs
from sqlalchemy import Connection, Table, func, insert, or_, select, update
from sqlalchemy.engine import Engine as SAEngine

from ..inventory import (
    DECOMMISSIONED,
    HOST_ADDED,
    HOST_REMOVED,
    PRESENT,
    pending_adds_query,
    plan_sync,
)
from ..model import Host
from ..store.schema import HostChangeRow, InventoryHostRow
from .id_cursor import IdCursor

__all__ = ["HostChangeRec", "InventoryCache", "Known"]

#: Changes kept for sessions that follow them; one older than that compares all.
_LOG_LIMIT = 10_000

#: At the first read, the ids below the highest that may still be in
#: transactions under way (those of them not there are asked for again).
_RECENT_IDS = 1_000


@attrs.frozen
class Known:
    """A host of the stored inventory."""

    host: Host
    status: str  # present | removed | decommissioned
    changed_at: datetime
    session_id: str | None  # who noticed the last change (None: nobody's session)


@attrs.frozen
class HostChangeRec:
    """A committed ``host_changes`` row (its id is the payload's ``seq``)."""

    id: int
    host: str
    state: str
    session_id: str | None


_INV: Final[Table] = InventoryHostRow.__table__  # type: ignore[assignment]
_CHG: Final[Table] = HostChangeRow.__table__  # type: ignore[assignment]


class InventoryCache:
    """The stored inventory in memory (see the module docstring)."""

    def __init__(self, database: SAEngine) -> None:
        self._db = database
        self._hosts: dict[str, Known] | None = None  # None: not read yet
        self._changes = IdCursor()  # the host_changes ids applied
        self.generation = 0
        # (generation, host) of each change, oldest first; _floor: the
        # generation before the oldest entry still kept.
        self._log: list[tuple[int, str]] = []
        self._floor = 0

    # ------------------------------------------------------------------ reads

    def hosts(self) -> dict[str, Known]:
        if self._hosts is None:
            with self._db.connect() as db:
                self._read_all(db)
        assert self._hosts is not None
        return self._hosts

    def get(self, name: str) -> Known | None:
        return self.hosts().get(name)

    def changed_since(self, generation: int) -> set[str] | None:
        """The hosts changed after ``generation``; None if that is older
        than the changes kept (compare every host)."""
        if generation < self._floor:
            return None
        out: set[str] = set()
        for gen, name in reversed(self._log):
            if gen <= generation:
                break
            out.add(name)
        return out

    def _read_all(self, db: Connection) -> None:
        self._hosts = {
            r.name: Known(Host(r.name, r.type, r.vcpus, r.enabled), r.status, r.changed_at,
                          r.session_id)
            for r in db.execute(select(_INV))
        }  # fmt: skip
        top = db.scalar(select(func.max(_CHG.c.id))) or 0
        recent = db.scalars(select(_CHG.c.id).where(_CHG.c.id > top - _RECENT_IDS))
        self._changes.start(top, set(recent), _RECENT_IDS, time.monotonic())
        self._bump(())
        self._floor = self.generation  # sessions loaded before compare everything

    def _bump(self, names: Iterable[str]) -> None:
        self.generation += 1
        self._log.extend((self.generation, n) for n in names)
        if len(self._log) > _LOG_LIMIT:
            drop = len(self._log) - _LOG_LIMIT // 2
            self._floor = self._log[drop - 1][0]
            del self._log[:drop]

    def poll(self) -> list[str]:
        """Read the changes other workers committed; return their hosts."""
        with self._db.connect() as db:
            return self._catch_up(db)

    def _catch_up(self, db: Connection) -> list[str]:
        if self._hosts is None:
            self._read_all(db)
            return []
        cursor = self._changes
        holes = cursor.holes()
        newer = _CHG.c.id > cursor.last
        found = list(
            db.execute(
                select(_CHG.c.id, _CHG.c.host)
                .where(or_(newer, _CHG.c.id.in_(holes)) if holes else newer)
                .order_by(_CHG.c.id)
            )
        )
        cursor.saw((r.id for r in found), time.monotonic())
        if not found:
            return []
        names = sorted({r.host for r in found})
        for r in db.execute(select(_INV).where(_INV.c.name.in_(names))):
            self._hosts[r.name] = Known(
                Host(r.name, r.type, r.vcpus, r.enabled), r.status, r.changed_at, r.session_id
            )
        self._bump(names)
        return names

    def _adopt(self, db: Connection, names: Sequence[str]) -> None:
        """Take the rows of ``names`` that another worker wrote without a
        change to announce (its first listing is a baseline, not a change),
        so that this cache does not insert them a second time."""
        assert self._hosts is not None
        found = [
            r
            for start in range(0, len(names), 500)
            for r in db.execute(select(_INV).where(_INV.c.name.in_(names[start : start + 500])))
        ]
        for r in found:
            self._hosts[r.name] = Known(
                Host(r.name, r.type, r.vcpus, r.enabled), r.status, r.changed_at, r.session_id
            )
        if found:
            self._bump(r.name for r in found)

    # ------------------------------------------------------------------ writes

    def sync(
        self,
        listed: Iterable[Host],
        *,
        now: datetime,
        session_id: str | None,
        adding: Iterable[str] = (),
    ) -> list[HostChangeRec]:
        """Bring the inventory in line with a listing of the cloud's hosts;
        return the changes committed. Hosts that running sessions are still
        adding (``add_hosts``, plus ``adding``) are left out until admitted."""
        with self._db.connect() as db:  # one transaction; no commit if nothing changed
            written = self.sync_in(db, listed, now=now, session_id=session_id, adding=adding)
            if written is None:
                return []
            db.commit()
        return written()

    def sync_in(
        self,
        db: Connection,
        listed: Iterable[Host],
        *,
        now: datetime,
        session_id: str | None,
        adding: Iterable[str] = (),
    ) -> Callable[[], list[HostChangeRec]] | None:
        """:meth:`sync`'s writes in ``db``'s transaction, which the caller
        commits (a new session's insert: its first listing is no commit of
        its own). Returns what to call once it committed (the cache follows
        it and the changes are returned), or None when nothing was written."""
        listed = list(listed)
        self._catch_up(db)
        hosts = self.hosts()
        unknown = [h.name for h in listed if h.name not in hosts]
        if unknown:
            self._adopt(db, unknown)
        pending = _pending_adds(db, besides=session_id) | set(adding)
        plan = plan_sync({n: (k.status, k.host) for n, k in hosts.items()}, listed, pending)
        if not (plan.new or plan.refresh or plan.status):
            return None
        kept: dict[str, Known] = {}
        if plan.new:  # one executemany: the baseline lists the whole fleet
            db.execute(insert(_INV), [_row(h, PRESENT, now, session_id) for h in plan.new])
        for host in plan.new:
            kept[host.name] = Known(host, PRESENT, now, session_id)
        by_name = {h.name: h for h in listed}
        for host in plan.refresh:
            db.execute(
                update(_INV)
                .where(_INV.c.name == host.name)
                .values(type=host.type, vcpus=host.vcpus, enabled=host.enabled)
            )
            kept[host.name] = attrs.evolve(hosts[host.name], host=host)
        for name, status in plan.status:
            db.execute(
                update(_INV)
                .where(_INV.c.name == name)
                .values(status=status, changed_at=now, session_id=session_id)
            )
            base = kept.get(name, hosts[name])
            facts = by_name.get(name, base.host)
            kept[name] = Known(facts, status, now, session_id)
        changes = self._record(db, plan.changes, now, session_id)

        def committed() -> list[HostChangeRec]:
            self._commit(kept, changes)
            return changes

        return committed

    def admit(self, host: Host, *, now: datetime, session_id: str) -> list[HostChangeRec]:
        """A session brought ``host`` into service: HOST_ADDED unless it was
        known present."""
        with self._db.begin() as db:
            self._catch_up(db)
            found = self.hosts().get(host.name)
            if found is None:
                db.execute(insert(_INV).values(_row(host, PRESENT, now, session_id)))
            else:
                db.execute(
                    update(_INV)
                    .where(_INV.c.name == host.name)
                    .values(
                        type=host.type, vcpus=host.vcpus, enabled=host.enabled,
                        **({} if found.status == PRESENT else
                           {"status": PRESENT, "changed_at": now, "session_id": session_id}),
                    )
                )  # fmt: skip
            announce = found is None or found.status != PRESENT
            changes = (
                self._record(db, [(host.name, HOST_ADDED)], now, session_id) if announce else []
            )
        kept = (
            Known(host, found.status, found.changed_at, found.session_id)
            if found is not None and not announce
            else Known(host, PRESENT, now, session_id)
        )
        self._commit({host.name: kept}, changes)
        return changes

    def retire(
        self, name: str, host_type: str, *, now: datetime, session_id: str
    ) -> list[HostChangeRec]:
        """A session decommissioned ``name``: HOST_REMOVED unless already
        reported gone."""
        with self._db.begin() as db:
            self._catch_up(db)
            found = self.hosts().get(name)
            facts = Host(name, host_type, 0, False)
            if found is None:
                db.execute(insert(_INV).values(_row(facts, DECOMMISSIONED, now, session_id)))
            else:
                facts = attrs.evolve(found.host, enabled=False)
                db.execute(
                    update(_INV)
                    .where(_INV.c.name == name)
                    .values(
                        status=DECOMMISSIONED, enabled=False, changed_at=now, session_id=session_id
                    )
                )
            announce = found is None or found.status == PRESENT
            changes = self._record(db, [(name, HOST_REMOVED)], now, session_id) if announce else []
        self._commit({name: Known(facts, DECOMMISSIONED, now, session_id)}, changes)
        return changes

    def set_enabled(self, name: str, enabled: bool) -> None:
        """A session enabled or disabled ``name`` in the cloud: the sessions
        this engine holds that only send instances there follow it (another
        session's host being maintained is no target). In memory only: a
        transaction here would be a commit per host disabled or enabled,
        outside the step's one write. The stored row keeps what the last
        listing found; other workers see the host as their listings of the
        cloud show it."""
        found = self.hosts().get(name)
        if found is None or found.status != PRESENT or found.host.enabled == enabled:
            return
        kept = attrs.evolve(found, host=attrs.evolve(found.host, enabled=enabled))
        self._commit({name: kept}, [])

    def _record(
        self,
        db: Connection,
        changes: Sequence[tuple[str, str]],
        now: datetime,
        session_id: str | None,
    ) -> list[HostChangeRec]:
        out = []
        for host, state in changes:
            key = db.execute(
                insert(_CHG).values(
                    host=host, state=state, session_id=session_id, created_at=now,
                    delivered_at=None,
                )
            ).inserted_primary_key  # fmt: skip
            assert key is not None
            out.append(HostChangeRec(int(key[0]), host, state, session_id))
        return out

    def _commit(self, kept: dict[str, Known], changes: Sequence[HostChangeRec]) -> None:
        """After the transaction committed: the cache follows it."""
        assert self._hosts is not None
        self._hosts.update(kept)
        if changes:
            self._changes.saw((c.id for c in changes), time.monotonic())
        if kept or changes:
            self._bump(sorted(set(kept) | {c.host for c in changes}))

    # ------------------------------------------------------------------ delivery

    def undelivered(self) -> list[HostChangeRec]:
        """Host changes committed and not yet announced, oldest first."""
        with self._db.connect() as db:
            return [
                HostChangeRec(r.id, r.host, r.state, r.session_id)
                for r in db.execute(
                    select(_CHG.c.id, _CHG.c.host, _CHG.c.state, _CHG.c.session_id)
                    .where(_CHG.c.delivered_at.is_(None))
                    .order_by(_CHG.c.id)
                )
            ]

    def delivered(self, ids: Sequence[int], at: datetime) -> None:
        if not ids:
            return
        with self._db.begin() as db:
            db.execute(
                update(_CHG)
                .where(_CHG.c.id.in_(list(ids)), _CHG.c.delivered_at.is_(None))
                .values(delivered_at=at)
            )


def _row(host: Host, status: str, now: datetime, session_id: str | None) -> dict[str, object]:
    return {
        "name": host.name, "type": host.type, "vcpus": host.vcpus, "enabled": host.enabled,
        "status": status, "changed_at": now, "session_id": session_id,
    }  # fmt: skip


def _pending_adds(db: Connection, *, besides: str | None) -> set[str]:
    """Hosts that running sessions (other than ``besides``, whose own the
    caller knows better) are still adding (``add_hosts``)."""
    return set(db.scalars(pending_adds_query(besides or "")))
