"""``ConstraintService``: the engine's constraint API.

Group and instance constraints set, read, listed and deleted per project
(:mod:`fenix_core.constraint_store` holds the rules and the SQL), the
instance's owner asked of the cloud (:class:`~fenix_core.hookspecs.InstanceOwner`)
outside any transaction, the constraints in force resolved into a
:class:`~fenix_core.constraints.ConstraintSet` cached by the stored revision
(so a change written by another worker is seen at the next read), and the
constraints a session's cloud listing contradicts (``ignored_constraints``).

:class:`~fenix_core.Engine` holds one and delegates its public
constraint methods to it; ``changed`` is how the engine that wrote learns
of it, and :meth:`ConstraintService.changed_elsewhere`, asked at the
engine's periodic look at the database, how it learns of another worker's
change (its running sessions decide with the new values at
their next step).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session

from .. import constraint_store
from ..clock import Clock
from ..constraints import CloudConstraints, ConstraintSet, GroupConstraints, InstanceConstraints
from ..errors import CloudError, FenixError
from ..model import IgnoredConstraint, _str
from ..plugins.hookspecs import InstanceOwner

__all__ = ["ConstraintService", "warn_ignored"]

log = logging.getLogger("fenix_core")


def warn_ignored(session_id: str, ignored: Iterable[IgnoredConstraint]) -> None:
    """Log each stored constraint a new session ignores (the cloud contradicts it)."""
    for found in ignored:
        log.warning(
            "session %s ignores the constraints of %s %r stored under project %s: "
            "the cloud puts it in project %s (see ignored_constraints in the view)",
            session_id,
            found.kind,
            found.ident,
            found.project_id,
            found.cloud_project_id,
        )


class ConstraintService:
    """The constraint API over ``database`` (see the module docstring).

    ``driver()``: the cloud driver now (None: none registered);
    ``default_group``: the rules of a project's implicit group (checked by
    :func:`~fenix_core.core.factory.default_group_rules`); ``changed()``:
    called after every committed write; ``lock``: the engine's, held around
    each database call."""

    def __init__(
        self,
        database: SAEngine,
        *,
        clock: Clock,
        driver: Callable[[], object],
        default_group: Mapping[str, Any],
        changed: Callable[[], None],
        lock: threading.RLock | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._driver = driver
        self.default_group = default_group
        self._changed = changed
        self._lock = lock if lock is not None else threading.RLock()
        self._cached: tuple[int, ConstraintSet] | None = None
        # The stored revision at the last look (:meth:`changed_elsewhere`),
        # moved on by this service's own writes; None: no look yet.
        self._seen: int | None = None

    # ------------------------------------------------------------------ writes

    def set_group(
        self, group: GroupConstraints | Mapping[str, Any], *, project_id: str | None = None
    ) -> GroupConstraints:
        value = GroupConstraints.from_dict(group)
        self._write(group=value, instance=None, acting=project_id)
        return value

    def set_instance(
        self,
        instance: InstanceConstraints | Mapping[str, Any],
        *,
        group: GroupConstraints | Mapping[str, Any] | None = None,
        project_id: str | None = None,
    ) -> InstanceConstraints:
        value = InstanceConstraints.from_dict(instance)
        group_value = GroupConstraints.from_dict(group) if group is not None else None
        self._write(group=group_value, instance=value, acting=project_id)
        return value

    def delete_group(self, group_id: str, *, project_id: str | None = None) -> None:
        _str(group_id, "group_id")
        acting = _acting(project_id)
        with self._lock, Session(self._db) as orm, orm.begin():
            revision = constraint_store.delete_group(orm, group_id, acting)
        self._written(revision)

    def delete_instance(self, instance_id: str, *, project_id: str | None = None) -> None:
        _str(instance_id, "instance_id")
        acting = _acting(project_id)
        with self._lock, Session(self._db) as orm, orm.begin():
            revision = constraint_store.delete_instance(orm, instance_id, acting)
        self._written(revision)

    def _write(
        self,
        *,
        group: GroupConstraints | None,
        instance: InstanceConstraints | None,
        acting: str | None,
    ) -> None:
        acting = _acting(acting)
        owner = self._cloud_owner(instance)
        now = self._clock.now()
        with self._lock, Session(self._db) as orm, orm.begin():
            revision = constraint_store.write(
                orm, now, group=group, instance=instance, acting=acting, cloud_owner=owner
            )
        self._written(revision)

    def _written(self, revision: int) -> None:
        """This service wrote ``revision``: the engine's held sessions decide
        again (``changed``); the next look reports only what others wrote."""
        self._cached = None
        if self._seen is not None and revision == self._seen + 1:
            self._seen = revision
        self._changed()

    def changed_elsewhere(self) -> bool:
        """Whether another worker or process changed the stored constraints
        since the last look (one read of the revision). The first look only
        notes it: what a session loads is read afresh anyway."""
        with self._lock, Session(self._db) as orm:
            revision = constraint_store.revision(orm)
        seen, self._seen = self._seen, revision
        return seen is not None and revision != seen

    def _cloud_owner(self, instance: InstanceConstraints | None) -> str | None:
        """The instance's project per the cloud, asked outside any transaction."""
        driver = self._driver()
        if instance is None or not isinstance(driver, InstanceOwner):
            return constraint_store.UNKNOWN
        try:
            return driver.instance_owner(instance.instance_id)
        except FenixError:
            raise
        except Exception as exc:
            raise CloudError(
                f"looking up the project of instance {instance.instance_id!r} failed: {exc}",
                instance_id=instance.instance_id,
            ) from exc

    # ------------------------------------------------------------------ reads

    def get_group(self, group_id: str, *, project_id: str | None = None) -> GroupConstraints:
        _str(group_id, "group_id")
        acting = _acting(project_id)
        with self._lock, Session(self._db) as orm:
            return constraint_store.get_group(orm, group_id, acting)

    def get_instance(
        self, instance_id: str, *, project_id: str | None = None
    ) -> InstanceConstraints:
        _str(instance_id, "instance_id")
        acting = _acting(project_id)
        with self._lock, Session(self._db) as orm:
            return constraint_store.get_instance(orm, instance_id, acting)

    def list_groups(self, project_id: str | None = None) -> list[GroupConstraints]:
        acting = _acting(project_id)
        with self._lock, Session(self._db) as orm:
            return constraint_store.list_groups(orm, acting)

    def list_instances(self, project_id: str | None = None) -> list[InstanceConstraints]:
        acting = _acting(project_id)
        with self._lock, Session(self._db) as orm:
            return constraint_store.list_instances(orm, acting)

    def constraints(self, cloud: CloudConstraints | None = None) -> ConstraintSet:
        """The constraints in force now (plus ``cloud``'s defaults), resolved."""
        with self._lock, Session(self._db) as orm:
            current = self.current(orm)
        if cloud is None:
            return current
        return ConstraintSet(
            groups=current.groups,
            instances=current.instances,
            cloud=cloud,
            default_group=current.default_group,
        )

    def current(self, orm: Session) -> ConstraintSet:
        """The cached constraints, read again when any worker changed them
        (one revision read per call, in ``orm``'s transaction)."""
        revision = constraint_store.revision(orm)
        cached = self._cached
        if cached is None or cached[0] != revision:
            revision, groups, instances = constraint_store.load_all(orm)
            cached = (
                revision,
                ConstraintSet.of(groups, instances, default_group=self.default_group),
            )
            self._cached = cached
        return cached[1]

    def contradicted(
        self, session_id: str, cloud_groups: Mapping[str, str], *, orm: Session | None = None
    ) -> list[IgnoredConstraint]:
        """Stored constraints the session's cloud listing contradicts;
        ``cloud_groups``: the cloud's group id -> project of the session;
        ``orm``: read in that session (a view read in one transaction)."""
        if orm is not None:
            return constraint_store.contradicted(orm, session_id, cloud_groups)
        with self._lock, Session(self._db) as own:
            return constraint_store.contradicted(own, session_id, cloud_groups)


def _acting(project_id: str | None) -> str | None:
    if project_id is not None:
        _str(project_id, "project_id")
    return project_id
