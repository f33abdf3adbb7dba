"""Reading and writing constraints in the database (the engine's API calls these).

Rows are keyed by (project, id): a project reads, replaces and deletes only
its own rows, and an id it does not hold answers NotFound exactly as an id
nobody holds (no owner is ever named). Every write checks ownership (the
instance's project per the cloud) and references before it changes a row,
bumps the constraint revision in the same transaction, and so either happens
whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from .constraints import GroupConstraints, InstanceConstraints
from .errors import Conflict, Forbidden, InvalidInput, NotFound
from .model import IgnoredConstraint
from .store.schema import (
    ConstraintRevisionRow,
    GroupConstraintRow,
    InstanceConstraintRow,
    InstanceRow,
    SessionRow,
)

Row = TypeVar("Row", GroupConstraintRow, InstanceConstraintRow)

__all__ = [
    "UNKNOWN",
    "cloud_groups",
    "contradicted",
    "delete_group",
    "delete_instance",
    "get_group",
    "get_instance",
    "instance_project_in_sessions",
    "list_groups",
    "list_instances",
    "load_all",
    "revision",
    "write",
]

_GROUP_FIELDS = GroupConstraints._FIELDS
_INSTANCE_FIELDS = InstanceConstraints._FIELDS


#: Sentinel: the cloud could not say who owns the instance (no capable driver).
UNKNOWN = "?unknown"


def _acting_for(acting: str | None, project_id: str) -> None:
    if acting is not None and acting != project_id:
        raise Forbidden(acting, "a project may only set its own constraints")


def _not_yours(kind: str, ident: str, project_id: str | None) -> NotFound:
    """What a caller learns about an id that is not its project's: as for an
    id that does not exist (no owner, no hint that another project has it)."""
    return NotFound(kind if project_id is None else f"project {project_id}'s {kind}", ident)


def _group(row: GroupConstraintRow) -> GroupConstraints:
    return GroupConstraints(**{f: getattr(row, f) for f in _GROUP_FIELDS})


def _instance(row: InstanceConstraintRow) -> InstanceConstraints:
    return InstanceConstraints(**{f: getattr(row, f) for f in _INSTANCE_FIELDS})


def revision(orm: Session) -> int:
    return (
        orm.scalar(select(ConstraintRevisionRow.revision).where(ConstraintRevisionRow.id == 1)) or 0
    )


def _bump(orm: Session) -> int:
    """Move the stored revision on; the new revision."""
    row = orm.get(ConstraintRevisionRow, 1)
    if row is None:
        orm.add(ConstraintRevisionRow(id=1, revision=1))
        return 1
    row.revision += 1
    return row.revision


def instance_project_in_sessions(orm: Session, instance_id: str) -> str | None:
    """The project the cloud reported for the instance in the latest session
    that listed it, if any (the fallback when the driver cannot say)."""
    return orm.scalar(
        select(InstanceRow.project_id)
        .join(SessionRow, SessionRow.id == InstanceRow.session_id)
        .where(InstanceRow.instance_id == instance_id)
        .order_by(SessionRow.created_at.desc())
        .limit(1)
    )


def write(
    orm: Session,
    now: datetime,
    *,
    group: GroupConstraints | None,
    instance: InstanceConstraints | None,
    acting: str | None,
    cloud_owner: str | None = UNKNOWN,
) -> int:
    """Create or replace a project's group and/or instance constraints,
    checked first; the new revision.

    ``cloud_owner``: the instance's project per the cloud (None: no such
    instance; :data:`UNKNOWN`: the driver cannot say, so the project a
    session's listing recorded is used, else the writer's). Rows are keyed by
    project, so a write only ever replaces the writer's own rows.
    """
    if group is not None:
        _acting_for(acting, group.project_id)
    if instance is not None:
        project = instance.project_id
        _acting_for(acting, project)
        owner = cloud_owner
        if owner == UNKNOWN:
            owner = instance_project_in_sessions(orm, instance.instance_id) or project
        if owner != project:
            raise _not_yours("instance", instance.instance_id, project)
        wanted = instance.group_id
        in_call = group is not None and (group.project_id, group.group_id) == (project, wanted)
        if (
            wanted is not None
            and not in_call
            and orm.get(GroupConstraintRow, (project, wanted)) is None
        ):
            raise InvalidInput(
                "group_id",
                f"project {project} has no group {wanted!r}: set the group's "
                "constraints first or in the same call",
            )
    if group is not None:
        orm.merge(GroupConstraintRow(**group.to_dict(), updated_at=now))
    if instance is not None:
        orm.merge(InstanceConstraintRow(**instance.to_dict(), updated_at=now))
    return _bump(orm)


def _held(
    orm: Session, model: type[Row], id_column: Any, ident: str, acting: str | None, kind: str
) -> Row:
    """The row of ``ident`` of the acting project; for the admin (None), the
    one row of that id (Conflict when several projects hold one)."""
    if acting is not None:
        row = orm.get(model, (acting, ident))
        if row is None:
            raise _not_yours(kind, ident, acting)
        return row
    rows = list(orm.scalars(select(model).where(id_column == ident).limit(10)))
    if not rows:
        raise NotFound(kind, ident)
    if len(rows) > 1:
        holders = ", ".join(sorted(r.project_id for r in rows))
        raise Conflict(
            f"{kind} {ident!r} is held by several projects ({holders}): name one as project_id"
        )
    return rows[0]


def _group_row(orm: Session, group_id: str, acting: str | None) -> GroupConstraintRow:
    return _held(orm, GroupConstraintRow, GroupConstraintRow.group_id, group_id, acting, "group")


def _instance_row(orm: Session, instance_id: str, acting: str | None) -> InstanceConstraintRow:
    return _held(
        orm,
        InstanceConstraintRow,
        InstanceConstraintRow.instance_id,
        instance_id,
        acting,
        "instance constraints",
    )


def get_group(orm: Session, group_id: str, acting: str | None) -> GroupConstraints:
    return _group(_group_row(orm, group_id, acting))


def get_instance(orm: Session, instance_id: str, acting: str | None) -> InstanceConstraints:
    return _instance(_instance_row(orm, instance_id, acting))


def list_groups(orm: Session, project_id: str | None) -> list[GroupConstraints]:
    query = select(GroupConstraintRow).order_by(
        GroupConstraintRow.group_id, GroupConstraintRow.project_id
    )
    if project_id is not None:
        query = query.where(GroupConstraintRow.project_id == project_id)
    return [_group(row) for row in orm.scalars(query)]


def list_instances(orm: Session, project_id: str | None) -> list[InstanceConstraints]:
    query = select(InstanceConstraintRow).order_by(
        InstanceConstraintRow.instance_id, InstanceConstraintRow.project_id
    )
    if project_id is not None:
        query = query.where(InstanceConstraintRow.project_id == project_id)
    return [_instance(row) for row in orm.scalars(query)]


def delete_group(orm: Session, group_id: str, acting: str | None) -> int:
    """Delete a group; its members fall back to their project's implicit
    group. The new revision."""
    row = _group_row(orm, group_id, acting)
    orm.execute(
        update(InstanceConstraintRow)
        .where(
            InstanceConstraintRow.project_id == row.project_id,
            InstanceConstraintRow.group_id == group_id,
        )
        .values(group_id=None)
    )
    orm.delete(row)
    return _bump(orm)


def delete_instance(orm: Session, instance_id: str, acting: str | None) -> int:
    """Delete an instance's constraints; the new revision."""
    orm.delete(_instance_row(orm, instance_id, acting))
    return _bump(orm)


def load_all(orm: Session) -> tuple[int, list[GroupConstraints], list[InstanceConstraints]]:
    """The revision and every constraint, for the engine's cache."""
    return revision(orm), list_groups(orm, None), list_instances(orm, None)


def cloud_groups(data: Mapping[str, Any] | None) -> dict[str, str]:
    """The cloud's groups a session was created with (its ``cloud_constraints``
    as stored in the session's data): group id -> project."""
    return {
        str(g["group_id"]): str(g["project_id"])
        for g in ((data or {}).get("cloud_constraints") or {}).get("groups", ())
    }


# Read from the stored constraints, each looking its instance up by the
# session's primary key: a join lets SQLite walk every instance of the
# session instead (20,000 probes at 1,000 hosts, for no constraint). Built
# once: get_session sends it at every call.
_listed = (
    select(InstanceRow.project_id)
    .where(
        InstanceRow.session_id == bindparam("session_id"),
        InstanceRow.instance_id == InstanceConstraintRow.instance_id,
    )
    .scalar_subquery()
)
_CONTRADICTED = (
    select(InstanceConstraintRow.instance_id, InstanceConstraintRow.project_id, _listed)
    .where(_listed != InstanceConstraintRow.project_id)
    .order_by(InstanceConstraintRow.instance_id, InstanceConstraintRow.project_id)
)


def contradicted(
    orm: Session, session_id: str, cloud_groups: Mapping[str, str]
) -> list[IgnoredConstraint]:
    """Stored constraints that the session's cloud listing contradicts: an
    instance's under another project than the cloud's, a group whose id is
    another project's cloud group (``cloud_groups``: :func:`cloud_groups`).
    Workflows never apply them (their lookups are keyed by the cloud's
    project); the engine reports them."""
    found = [
        IgnoredConstraint("instance", instance_id, stored, cloud)
        for instance_id, stored, cloud in orm.execute(_CONTRADICTED, {"session_id": session_id})
    ]
    if cloud_groups:
        for group_id, stored in orm.execute(
            select(GroupConstraintRow.group_id, GroupConstraintRow.project_id)
            .where(GroupConstraintRow.group_id.in_(sorted(cloud_groups)))
            .order_by(GroupConstraintRow.group_id, GroupConstraintRow.project_id)
        ):
            if cloud_groups[group_id] != stored:
                found.append(IgnoredConstraint("group", group_id, stored, cloud_groups[group_id]))
    return found
