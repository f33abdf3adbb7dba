"""The dashboard's JSON, built from read-only views: pure, no I/O.

What a caller sees depends on who it is. The admin (``project_id=None``)
sees everything. A project token sees the session's progress and its host
lanes (hosts are the operator's, not another project's), and of the
per-project parts only its own: its instances, its question, its groups, its
stuck work, its notifications. Free-text reasons that may name another
project's instances (a host's or the session's ``reason``, ``waiting``) are
left out for it.

Host lanes are arrays, not objects, so that 1,000 hosts stay a small answer
polled every few seconds: ``[name, state, drain_start, maintenance_start,
end, wave]`` with times in seconds since the session was created (null when
not reached) and ``wave`` the index of the wave the host was maintained in
(null before).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from ..model import ProjectView, SessionView
from ..sim.timeline import Timeline
from ..states import FINAL_SESSION_STATES, HostState, InstanceState

__all__ = ["HOST_FIELDS", "Notice", "controls", "session_payload", "session_row"]

#: The meaning of each element of a host lane in ``hosts``.
HOST_FIELDS = ("name", "state", "drain_start", "maintenance_start", "end", "wave")
_FINAL = frozenset(s.value for s in FINAL_SESSION_STATES)
#: How many notifications per project the page lists (newest first).
NOTICES_SHOWN = 20


@attrs.frozen
class Notice:
    """One ``maintenance.planned`` notification the session sent a project."""

    seq: int
    project_id: str
    state: str
    instances: int
    sent_at: datetime
    reply_at: datetime | None
    #: The webhook POST's state (pending, delivered, rejected, expired,
    #: dropped), or None when the project has no subscription (in-process only).
    delivery: str | None


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _progress(view: SessionView) -> dict[str, Any]:
    p = view.progress
    if p is None:  # pragma: no cover - the engine always builds it
        return {}
    return {
        "hosts_done": p.hosts_done,
        "hosts_in_progress": p.hosts_in_progress,
        "hosts_waiting": p.hosts_waiting,
        "hosts_skipped": p.hosts_skipped,
        "hosts_failed": p.hosts_failed,
        "hosts_removed": p.hosts_removed,
        "estimated_end": _iso(p.estimated_end),
        "eta_seconds": p.eta_seconds,
    }


def controls(view: SessionView) -> dict[str, bool]:
    """Which admin controls the session takes now (the REST routes answer
    409 to the others)."""
    running = view.state not in _FINAL
    return {
        "pause": running and not view.paused,
        "resume": running and view.paused,
        "cancel": running,
        "retry": view.state == "MAINTENANCE_FAILED",
    }


def session_row(
    view: SessionView, *, project_id: str | None = None, awaiting: bool = False
) -> dict[str, Any]:
    """One line of the sessions list. ``awaiting``: the project's reply is
    awaited (only shown to a project token)."""
    row: dict[str, Any] = {
        "session_id": view.session_id,
        "workflow": view.workflow,
        "state": view.state,
        "paused": view.paused,
        "percent_done": view.percent_done,
        "hosts": sum(1 for h in view.hosts if h.state not in _NOT_WORK),
        "created_at": _iso(view.created_at),
        "updated_at": _iso(view.updated_at),
        "maintenance_at": _iso(view.maintenance_at),
        "progress": _progress(view),
    }
    if project_id is None:
        row["reason"] = view.reason
        row["projects"] = len(view.projects)
    else:
        row["awaiting_reply"] = awaiting
    return row


#: Hosts that only receive instances: shown, but not counted as work.
_NOT_WORK = frozenset({HostState.ADDING, HostState.ADDED, HostState.OUT_OF_SCOPE})


def session_payload(
    view: SessionView,
    timeline: Timeline,
    projects: Mapping[str, ProjectView],
    notices: Sequence[Notice],
    *,
    now: datetime,
    project_id: str | None = None,
    refused: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The session page's data. ``projects``: the project views the caller
    may see (the admin: all; a project: its own); ``project_id``: the
    project token's project, None for the admin. ``refused``: instance id ->
    {target host ("" for the cloud's scheduler): why} for the targets the
    cloud refused in the instance's current move."""
    admin = project_id is None
    seen = {p for p in projects if admin or p == project_id}
    start = timeline.start

    def offset(when: datetime | None) -> float | None:
        return None if when is None else round((when - start).total_seconds(), 3)

    wave_of = {h.name: index for index, wave in enumerate(timeline.waves()) for h in wave}
    hosts = [
        [
            h.name,
            h.state,
            offset(h.drain_start),
            offset(h.maintenance_start),
            offset(h.end),
            wave_of.get(h.name),
        ]
        for h in timeline.hosts
    ]
    instance_project = {i.instance_id: p.project_id for p in projects.values() for i in p.instances}
    owned = {i for i, p in instance_project.items() if p in seen}
    stuck = [
        {
            "kind": s.kind,
            "host": s.host,
            "instance_id": s.instance_id,
            "project_id": instance_project.get(s.instance_id or ""),
            "detail": s.detail,
            "since": _iso(s.since),
            "age_seconds": max(0.0, (now - s.since).total_seconds()),
            "policy": s.policy,
        }
        for s in view.stuck
        if admin or (s.instance_id is not None and s.instance_id in owned)
    ]
    payload: dict[str, Any] = {
        "session": {
            **session_row(view, project_id=project_id),
            "waiting": view.waiting if admin else None,
            "reason": view.reason if admin else None,
        },
        "now": now.isoformat(),
        "start": start.isoformat(),
        "now_offset": offset(now),
        "host_fields": list(HOST_FIELDS),
        "hosts": hosts,
        "host_reasons": {h.name: h.reason for h in timeline.hosts if h.reason} if admin else {},
        "waves": len(set(wave_of.values())),
        "groups": [
            {
                "group_id": g.group_id,
                "project_id": g.project_id,
                "members": g.members,
                "limit": g.limit,
                "impacted_now": _count_at(g.steps, now),
                "peak": g.peak,
            }
            for g in timeline.groups
            if g.project_id in seen
        ],
        "questions": [
            _question(p, now) for p in projects.values() if p.project_id in seen and p.reply_at
        ],
        "blocked": _blocked([p for p in projects.values() if p.project_id in seen], refused or {}),
        "stuck": stuck,
        "projects": {p: projects[p].state for p in sorted(seen)},
        "notifications": _notices(notices, seen),
        "controls": controls(view) if admin else None,
    }
    return payload


def _blocked(
    projects: Sequence[ProjectView], refused: Mapping[str, Mapping[str, str]]
) -> list[dict[str, Any]]:
    """What the moves of these projects' instances wait for (the cloud's word,
    e.g. a PodDisruptionBudget), and the targets the cloud refused them."""
    out: list[dict[str, Any]] = []
    for project in projects:
        for inst in project.instances:
            why = [inst.detail] if inst.detail else []
            for target, reason in sorted(refused.get(inst.instance_id, {}).items()):
                where = f"target {target}" if target else "the cloud's scheduler"
                why.append(f"{where} refused: {reason}")
            out.extend(
                {
                    "instance_id": inst.instance_id,
                    "project_id": project.project_id,
                    "host": inst.host,
                    "detail": detail,
                }
                for detail in why
            )
    return out


def _count_at(steps: Sequence[tuple[datetime, int]], when: datetime) -> int:
    count = 0
    for at, value in steps:
        if at > when:
            break
        count = value
    return count


def _question(view: ProjectView, now: datetime) -> dict[str, Any]:
    asked = [i.instance_id for i in view.instances if i.state == InstanceState.ACTION_REQUESTED]
    assert view.reply_at is not None
    return {
        "project_id": view.project_id,
        "state": view.state,
        "reply_at": view.reply_at.isoformat(),
        "seconds_left": (view.reply_at - now).total_seconds(),
        "instance_ids": asked or list(view.instance_ids),
    }


def _notices(notices: Sequence[Notice], seen: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for project in sorted(seen):
        mine = [n for n in notices if n.project_id == project]
        out[project] = {
            "total": len(mine),
            "latest": [
                {
                    "seq": n.seq,
                    "state": n.state,
                    "instances": n.instances,
                    "sent_at": n.sent_at.isoformat(),
                    "reply_at": _iso(n.reply_at),
                    "delivery": n.delivery,
                }
                for n in sorted(mine, key=lambda n: -n.seq)[:NOTICES_SHOWN]
            ],
        }
    return out
