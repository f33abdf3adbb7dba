"""What a session did over time: host phases, group impacts, waves, makespan.

Pure functions over read-only views (:meth:`Engine.get_session
<fenix_core.engine.Engine.get_session>` and :meth:`Engine.list_operations
<fenix_core.engine.Engine.list_operations>`), so a finished real session read
from its database and a simulated one give the same picture:

* a host is **draining** from the first move of an instance off it (or from an
  earlier time the caller observed, e.g. the notification asking its projects),
  **in maintenance** from ``started_at`` to ``finished_at``, then **done**;
* an instance is **impacted** from the start of its move until its group's
  ``recovery_time`` after the move ended (failed moves too), the rule the
  constrained workflow keeps; a group's impact is the number of its members
  impacted at once;
* a **wave** is a set of hosts in maintenance at overlapping times: a new wave
  starts when a host is taken into maintenance after every host of the
  current wave is done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import attrs

from ..constraints import (
    DEFAULT_GROUP,
    GroupConstraints,
    InstanceConstraints,
    implicit_group_id,
)
from ..model import OperationView, ProjectView, SessionView

__all__ = [
    "GroupLane",
    "HostLane",
    "Timeline",
    "build_timeline",
    "recorded_timeline",
    "step_counts",
    "with_implicit_groups",
]

_MOVES = ("move", "watch")
#: A time of a step series: a datetime, or seconds since some start.
T = TypeVar("T", datetime, float)


@attrs.frozen
class HostLane:
    """One host's phases: draining from ``drain_start``, in maintenance from
    ``maintenance_start`` to ``end``."""

    name: str
    type: str
    state: str
    drain_start: datetime | None
    maintenance_start: datetime | None
    end: datetime | None
    reason: str | None = None


@attrs.frozen
class GroupLane:
    """Impacted members of one group over time: ``steps`` are (time, count)
    pairs, each count holding until the next time."""

    group_id: str
    project_id: str
    members: int
    limit: int | None
    steps: tuple[tuple[datetime, int], ...]

    @property
    def peak(self) -> int:
        return max((count for _, count in self.steps), default=0)


@attrs.frozen
class Timeline:
    """What a session did over time (see the module documentation)."""

    session_id: str
    workflow: str
    state: str
    reason: str | None
    start: datetime
    end: datetime
    hosts: tuple[HostLane, ...]
    groups: tuple[GroupLane, ...]

    @property
    def makespan(self) -> float:
        """Seconds from the session's creation to its end (or its last change)."""
        return (self.end - self.start).total_seconds()

    def waves(self) -> list[list[HostLane]]:
        """Hosts grouped by overlapping maintenance, in time order."""
        taken = sorted(
            (h for h in self.hosts if h.maintenance_start is not None),
            key=lambda h: (h.maintenance_start, h.name),
        )
        waves: list[list[HostLane]] = []
        wave_end: datetime | None = None
        for host in taken:
            assert host.maintenance_start is not None
            end = host.end or self.end
            if waves and wave_end is not None and host.maintenance_start < wave_end:
                waves[-1].append(host)
                wave_end = max(wave_end, end)
            else:
                waves.append([host])
                wave_end = end
        return waves

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601, offsets and durations in seconds."""

        def offset(when: datetime | None) -> float | None:
            return None if when is None else (when - self.start).total_seconds()

        def span(a: datetime | None, b: datetime | None) -> float | None:
            return None if a is None or b is None else (b - a).total_seconds()

        return {
            "session_id": self.session_id,
            "workflow": self.workflow,
            "state": self.state,
            "reason": self.reason,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "makespan_seconds": self.makespan,
            "hosts": [
                {
                    "name": h.name,
                    "type": h.type,
                    "state": h.state,
                    "reason": h.reason,
                    "drain_start": offset(h.drain_start),
                    "maintenance_start": offset(h.maintenance_start),
                    "end": offset(h.end),
                    "drain_seconds": span(h.drain_start, h.maintenance_start),
                    "maintenance_seconds": span(h.maintenance_start, h.end),
                }
                for h in self.hosts
            ],
            "waves": [
                {
                    "index": index,
                    "hosts": [h.name for h in wave],
                    "start": offset(min(h.maintenance_start for h in wave if h.maintenance_start)),
                    "end": offset(max((h.end or self.end) for h in wave)),
                }
                for index, wave in enumerate(self.waves())
            ],
            "groups": [
                {
                    "group_id": g.group_id,
                    "project_id": g.project_id,
                    "members": g.members,
                    "max_impacted_members": g.limit,
                    "peak_impacted": g.peak,
                }
                for g in self.groups
            ],
        }


def build_timeline(
    view: SessionView,
    operations: Sequence[OperationView],
    *,
    projects: Mapping[str, str] | None = None,
    groups: Iterable[GroupConstraints] = (),
    members: Mapping[str, str] | None = None,
    drain_seen: Mapping[str, datetime] | None = None,
) -> Timeline:
    """The timeline of a session.

    ``projects`` maps instance ids to their project (instances of projects
    without an explicit group form the project's implicit group);
    ``members`` maps instance ids to an explicit group id, and ``groups``
    gives those groups' limits and recovery times. ``drain_seen`` are drain
    start times observed by the caller (they win when earlier).
    """
    moves = [op for op in operations if op.kind in _MOVES and op.instance_id]
    drain: dict[str, datetime] = {}
    for op in moves:
        if op.source is not None:
            drain[op.source] = min(drain.get(op.source, op.created_at), op.created_at)
    for host, when in (drain_seen or {}).items():
        drain[host] = min(drain.get(host, when), when)
    ends = [view.updated_at, *(op.finished_at for op in operations if op.finished_at)]
    end = max(ends)
    hosts = tuple(
        HostLane(
            name=h.name,
            type=h.type,
            state=h.state,
            drain_start=_before(drain.get(h.name), h.started_at),
            maintenance_start=h.started_at,
            end=h.finished_at,
            reason=h.reason,
        )
        for h in view.hosts
    )
    lanes = _group_lanes(moves, end, projects or {}, {g.group_id: g for g in groups}, members or {})
    return Timeline(
        session_id=view.session_id,
        workflow=view.workflow,
        state=view.state,
        reason=view.reason,
        start=view.created_at,
        end=end,
        hosts=hosts,
        groups=lanes,
    )


def recorded_timeline(
    view: SessionView,
    operations: Sequence[OperationView],
    project_views: Iterable[ProjectView],
    instance_constraints: Iterable[InstanceConstraints],
    group_constraints: Iterable[GroupConstraints],
) -> Timeline:
    """The timeline of a recorded session, its groups taken from the stored
    constraints of the instances in ``project_views`` (pass only one
    project's views and constraints for that project's picture)."""
    projects = {i.instance_id: p.project_id for p in project_views for i in p.instances}
    members = {
        c.instance_id: c.group_id
        for c in instance_constraints
        if c.group_id is not None and c.instance_id in projects
    }
    used = set(members.values())
    groups = [g for g in group_constraints if g.group_id in used]
    return build_timeline(
        view,
        operations,
        projects=projects,
        groups=with_implicit_groups(
            groups,
            projects,
            members,
            view.workflow,
            view.request.get("default_group_constraints"),
        ),
        members=members,
    )


def with_implicit_groups(
    groups: Iterable[GroupConstraints],
    projects: Mapping[str, str],
    members: Mapping[str, str],
    workflow: str,
    default: Mapping[str, Any] | None = None,
) -> list[GroupConstraints]:
    """``groups`` plus, for the constrained workflow, the implicit group of
    each project with unconstrained instances (it holds them to ``default``,
    the session's ``default_group_constraints``, else
    :data:`~fenix_core.constraints.DEFAULT_GROUP`; other workflows set no limit)."""
    out = list(groups)
    if workflow != "constrained":
        return out
    known = {g.group_id for g in out}
    for project in sorted({p for i, p in projects.items() if i not in members}):
        group_id = implicit_group_id(project)
        if group_id not in known:
            rules = {**DEFAULT_GROUP, **(default or {})}
            out.append(GroupConstraints(group_id=group_id, project_id=project, **rules))
    return out


def _before(drain: datetime | None, maintenance: datetime | None) -> datetime | None:
    if drain is None or maintenance is None:
        return drain
    return min(drain, maintenance)


def _group_lanes(
    moves: Sequence[OperationView],
    end: datetime,
    projects: Mapping[str, str],
    groups: Mapping[str, GroupConstraints],
    members: Mapping[str, str],
) -> tuple[GroupLane, ...]:
    def group_of(instance_id: str) -> str | None:
        if instance_id in members:
            return members[instance_id]
        project = projects.get(instance_id)
        return None if project is None else implicit_group_id(project)

    intervals: dict[str, list[tuple[datetime, datetime]]] = {}
    for op in moves:
        assert op.instance_id is not None
        group_id = group_of(op.instance_id)
        if group_id is None:
            continue
        start = op.started_at or op.created_at
        stop = op.finished_at or end
        group = groups.get(group_id)
        if group is not None and op.status in ("done", "failed"):
            stop += timedelta(seconds=group.recovery_time)
        intervals.setdefault(op.instance_id, []).append((start, max(stop, start)))

    changes: dict[str, list[tuple[datetime, int]]] = {}
    for instance_id, spans in intervals.items():
        group_id = group_of(instance_id)
        assert group_id is not None
        for start, stop in _merged(spans):
            changes.setdefault(group_id, []).extend([(start, 1), (stop, -1)])

    sizes: dict[str, int] = {}
    for instance_id in {*projects, *members}:
        group_id = group_of(instance_id)
        if group_id is not None:
            sizes[group_id] = sizes.get(group_id, 0) + 1
    lanes = []
    for group_id in sorted({*sizes, *changes, *groups}):
        group = groups.get(group_id)
        project = group.project_id if group else group_id.removeprefix("project:")
        lanes.append(
            GroupLane(
                group_id=group_id,
                project_id=project,
                members=sizes.get(group_id, 0),
                limit=group.max_impacted_members if group else None,
                steps=step_counts(changes.get(group_id, [])),
            )
        )
    return tuple(lanes)


def _merged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for start, stop in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


def step_counts(changes: Iterable[tuple[T, int]]) -> tuple[tuple[T, int], ...]:
    """``(time, +1 / -1)`` changes as ``(time, count)`` steps, one per time.

    Ends sort before starts at the same time: a member that recovers as
    another is impacted (a host handed over to the next) does not count twice.
    """
    steps: list[tuple[T, int]] = []
    count = 0
    for when, delta in sorted(changes):
        count += delta
        if steps and steps[-1][0] == when:
            steps[-1] = (when, count)
        else:
            steps.append((when, count))
    return tuple(steps)
