"""Reading and writing constraints in the database (the engine's API calls these).

Every write checks ownership and references before it changes a row, bumps
the constraint revision in the same transaction, and so either happens whole
or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .constraints import GroupConstraints, InstanceConstraints
from .errors import Forbidden, InvalidInput, NotFound
from .store.schema import (
    ConstraintRevisionRow,
    GroupConstraintRow,
    InstanceConstraintRow,
    InstanceRow,
)

__all__ = [
    "delete_group",
    "delete_instance",
    "get_group",
    "get_instance",
    "list_groups",
    "list_instances",
    "load_all",
    "revision",
    "write",
]

_GROUP_FIELDS = GroupConstraints._FIELDS
_INSTANCE_FIELDS = InstanceConstraints._FIELDS


def _owned(acting: str | None, owner: str, what: str) -> None:
    if acting is not None and acting != owner:
        raise Forbidden(acting, f"{what} belongs to another project")


def _group(row: GroupConstraintRow) -> GroupConstraints:
    return GroupConstraints(**{f: getattr(row, f) for f in _GROUP_FIELDS})


def _instance(row: InstanceConstraintRow) -> InstanceConstraints:
    return InstanceConstraints(**{f: getattr(row, f) for f in _INSTANCE_FIELDS})


def revision(orm: Session) -> int:
    return (
        orm.scalar(select(ConstraintRevisionRow.revision).where(ConstraintRevisionRow.id == 1)) or 0
    )


def _bump(orm: Session) -> None:
    row = orm.get(ConstraintRevisionRow, 1)
    if row is None:
        orm.add(ConstraintRevisionRow(id=1, revision=1))
    else:
        row.revision += 1


def _instance_project_in_sessions(orm: Session, instance_id: str) -> str | None:
    """The project the cloud reported for the instance in any session, if any."""
    return orm.scalar(
        select(InstanceRow.project_id).where(InstanceRow.instance_id == instance_id).limit(1)
    )


def write(
    orm: Session,
    now: datetime,
    *,
    group: GroupConstraints | None,
    instance: InstanceConstraints | None,
    acting: str | None,
) -> None:
    """Create or replace a group and/or an instance's constraints, checked first."""
    if group is not None:
        _owned(acting, group.project_id, f"group {group.group_id!r}")
        existing = orm.get(GroupConstraintRow, group.group_id)
        if existing is not None and existing.project_id != group.project_id:
            raise Forbidden(
                group.project_id,
                f"group {group.group_id!r} belongs to project {existing.project_id}",
            )
    if instance is not None:
        _owned(acting, instance.project_id, f"instance {instance.instance_id!r}")
        existing_inst = orm.get(InstanceConstraintRow, instance.instance_id)
        if existing_inst is not None and existing_inst.project_id != instance.project_id:
            raise Forbidden(
                instance.project_id,
                f"instance {instance.instance_id!r} belongs to project {existing_inst.project_id}",
            )
        reported = _instance_project_in_sessions(orm, instance.instance_id)
        if reported is not None and reported != instance.project_id:
            raise Forbidden(
                instance.project_id,
                f"instance {instance.instance_id!r} belongs to project {reported}",
            )
        if instance.group_id is not None:
            if group is not None and group.group_id == instance.group_id:
                owner = group.project_id
            else:
                row = orm.get(GroupConstraintRow, instance.group_id)
                if row is None:
                    raise InvalidInput(
                        "group_id",
                        f"no group {instance.group_id!r}: set the group's constraints first "
                        "or in the same call",
                    )
                owner = row.project_id
            if owner != instance.project_id:
                raise InvalidInput(
                    "group_id",
                    f"group {instance.group_id!r} belongs to project {owner}, "
                    f"not {instance.project_id}",
                )
    if group is not None:
        orm.merge(GroupConstraintRow(**group.to_dict(), updated_at=now))
    if instance is not None:
        orm.merge(InstanceConstraintRow(**instance.to_dict(), updated_at=now))
    _bump(orm)


def _group_row(orm: Session, group_id: str, acting: str | None) -> GroupConstraintRow:
    row = orm.get(GroupConstraintRow, group_id)
    if row is None:
        raise NotFound("group", group_id)
    _owned(acting, row.project_id, f"group {group_id!r}")
    return row


def _instance_row(orm: Session, instance_id: str, acting: str | None) -> InstanceConstraintRow:
    row = orm.get(InstanceConstraintRow, instance_id)
    if row is None:
        raise NotFound("instance constraints", instance_id)
    _owned(acting, row.project_id, f"instance {instance_id!r}")
    return row


def get_group(orm: Session, group_id: str, acting: str | None) -> GroupConstraints:
    return _group(_group_row(orm, group_id, acting))


def get_instance(orm: Session, instance_id: str, acting: str | None) -> InstanceConstraints:
    return _instance(_instance_row(orm, instance_id, acting))


def list_groups(orm: Session, project_id: str | None) -> list[GroupConstraints]:
    query = select(GroupConstraintRow).order_by(GroupConstraintRow.group_id)
    if project_id is not None:
        query = query.where(GroupConstraintRow.project_id == project_id)
    return [_group(row) for row in orm.scalars(query)]


def list_instances(orm: Session, project_id: str | None) -> list[InstanceConstraints]:
    query = select(InstanceConstraintRow).order_by(InstanceConstraintRow.instance_id)
    if project_id is not None:
        query = query.where(InstanceConstraintRow.project_id == project_id)
    return [_instance(row) for row in orm.scalars(query)]


def delete_group(orm: Session, group_id: str, acting: str | None) -> None:
    """Delete a group; its members fall back to their project's implicit group."""
    row = _group_row(orm, group_id, acting)
    orm.execute(
        update(InstanceConstraintRow)
        .where(InstanceConstraintRow.group_id == group_id)
        .values(group_id=None)
    )
    orm.delete(row)
    _bump(orm)


def delete_instance(orm: Session, instance_id: str, acting: str | None) -> None:
    orm.delete(_instance_row(orm, instance_id, acting))
    _bump(orm)


def load_all(
    orm: Session,
) -> tuple[int, Mapping[str, GroupConstraints], Mapping[str, InstanceConstraints]]:
    """The revision and every constraint, for the engine's cache."""
    groups: dict[str, GroupConstraints] = {g.group_id: g for g in list_groups(orm, None)}
    instances: dict[str, InstanceConstraints] = {
        i.instance_id: i for i in list_instances(orm, None)
    }
    return revision(orm), groups, instances
