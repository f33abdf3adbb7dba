"""What an operator decides on before a session: the plan's preview.

:func:`build_preview` reads a planned (simulated) session and its scenario
and says, as JSON-ready data:

* ``hosts``: per host its wave and its expected start (the drain, or the
  maintenance when there is nothing to move), maintenance start and end;
* ``concurrency``: hosts out of service at once over time (a step series:
  each ``[offset, count]`` holds until the next), and its maximum;
* ``moves``: how often each instance is moved, against the bound (every
  instance of a maintained compute host moves at least once);
* ``projects``: which project is asked what and when (first and last
  notification of each state, and how many of its instances they name);
* ``lower_bound``: the makespan against
  ``fenix_core.planner.makespan_lower_bound``, and what limits it: the
  binding group chain, or capacity (how many hosts can be out at once, and
  what caps that: free capacity, ``max_parallel_hosts``, the controls, or the
  serial rolling workflow), plus the controls that the bound leaves out.
  With no room outside the session (docs/constraints.md, "Why no schedule
  finishes before the bound", assumption 4), the group chains start only
  once the first host is maintained (``planner.first_maintained_at``), as in
  ``benchmarks/makespan.py``.

Offsets are seconds since the session was created. Pure: no engine, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from ..budgets import resolve_cap
from ..constraints import implicit_group_id
from ..planner import GroupRule, first_maintained_at, makespan_lower_bound, max_hosts_out
from ..second_moves import first_final_move_at
from .scenario import HostSpec, Scenario
from .timeline import HostLane, Timeline, step_counts, with_implicit_groups

__all__ = ["Ask", "build_preview", "hosts_out_steps"]

#: The workflows that keep the groups' max_impacted_members (the group chain
#: applies); the others move a host's instances without that limit.
_GROUP_LIMITED = ("constrained",)
#: Workflows that maintain one host at a time.
_SERIAL = ("rolling",)


@attrs.frozen
class Ask:
    """A notification to a project (``maintenance_planned``): when, which state,
    which of its instances."""

    at: datetime
    project: str
    state: str
    instances: tuple[str, ...] = ()


def build_preview(
    scenario: Scenario,
    timeline: Timeline,
    moves: Mapping[str, int],
    asks: Sequence[Ask],
) -> dict[str, Any]:
    """The preview of a planned session (see the module documentation).

    ``moves`` maps instance ids to how many times they were moved; ``asks``
    are the notifications the projects got, in any order.
    """
    maintained = [scenario_host for h in timeline.hosts if (scenario_host := _spec(scenario, h))]
    return {
        "hosts": _host_times(timeline),
        "concurrency": _concurrency(timeline),
        "moves": _moves(scenario, maintained, moves),
        "projects": _projects(timeline.start, asks),
        "lower_bound": _lower_bound(scenario, timeline, maintained),
    }


def _spec(scenario: Scenario, lane: HostLane) -> HostSpec | None:
    return next((h for h in scenario.hosts if h.name == lane.name), None)


def _offset(timeline: Timeline, when: datetime | None) -> float | None:
    return None if when is None else (when - timeline.start).total_seconds()


def _host_times(timeline: Timeline) -> list[dict[str, Any]]:
    wave_of = {h.name: index for index, wave in enumerate(timeline.waves()) for h in wave}
    return [
        {
            "name": h.name,
            "wave": wave_of.get(h.name),
            "start": _offset(timeline, h.drain_start or h.maintenance_start),
            "maintenance_start": _offset(timeline, h.maintenance_start),
            "end": _offset(timeline, h.end),
        }
        for h in timeline.hosts
    ]


def hosts_out_steps(timeline: Timeline) -> list[tuple[float, int]]:
    """Hosts out of service at once, from each host's start (drain or
    maintenance) to its end: ``(offset, count)`` steps, each holding until
    the next. A host that never started is never out."""
    changes: list[tuple[float, int]] = []
    for host in timeline.hosts:
        start = host.drain_start or host.maintenance_start
        if start is None:
            continue
        end = host.end or timeline.end
        changes += [(_seconds(timeline, start), 1), (_seconds(timeline, max(end, start)), -1)]
    steps = step_counts(changes)
    # A step that does not change the count (one host handed over to the next
    # at the same instant) says nothing.
    return [s for i, s in enumerate(steps) if i == 0 or s[1] != steps[i - 1][1]]


def _seconds(timeline: Timeline, when: datetime) -> float:
    return (when - timeline.start).total_seconds()


def _concurrency(timeline: Timeline) -> dict[str, Any]:
    steps = hosts_out_steps(timeline)
    peak = max(steps, key=lambda s: (s[1], -s[0]), default=(0.0, 0))
    return {
        "hosts_out": [[when, count] for when, count in steps],
        "max_hosts_out": peak[1],
        "max_at": peak[0] if peak[1] else None,
    }


def _moves(
    scenario: Scenario, maintained: Sequence[HostSpec], moves: Mapping[str, int]
) -> dict[str, Any]:
    emptied = {h.name for h in maintained if h.type == "compute"}
    bound = sum(1 for i in scenario.instances if i.host in emptied)
    counts = Counter(n for n in moves.values() if n > 0)
    total = sum(n * k for n, k in counts.items())
    return {
        "total": total,
        "bound": bound,
        "ratio": round(total / bound, 4) if bound else None,
        "instances_moved": sum(counts.values()),
        "moved_twice_or_more": sum(k for n, k in counts.items() if n >= 2),
        "most": max(counts, default=0),
        "histogram": {str(n): counts[n] for n in sorted(counts)},
        "per_instance": {i: n for i, n in sorted(moves.items()) if n > 0},
    }


def _projects(start: datetime, asks: Sequence[Ask]) -> list[dict[str, Any]]:
    by_project: dict[str, dict[str, dict[str, Any]]] = {}
    for ask in sorted(asks, key=lambda a: (a.at, a.project, a.state)):
        at = (ask.at - start).total_seconds()
        states = by_project.setdefault(ask.project, {})
        entry = states.setdefault(
            ask.state,
            {"state": ask.state, "first": at, "last": at, "notifications": 0, "ids": set()},
        )
        entry["last"] = at
        entry["notifications"] += 1
        entry["ids"].update(ask.instances)
    out = []
    for project, states in by_project.items():
        asked = [
            {k: v for k, v in s.items() if k != "ids"} | {"instances": len(s["ids"])}
            for s in states.values()
        ]
        out.append({"project": project, "first": asked[0]["first"], "asked": asked})
    return sorted(out, key=lambda p: (p["first"], p["project"]))


def _host_work(scenario: Scenario, host: HostSpec) -> float:
    return sum(a.seconds_on(host) for a in scenario.actions if a.type in ("host", host.type))


def _lower_bound(
    scenario: Scenario, timeline: Timeline, maintained: Sequence[HostSpec]
) -> dict[str, Any]:
    request = scenario.session.request
    workflow = timeline.workflow
    load = sum(i.vcpus for i in scenario.instances)
    targets = [h.vcpus for h in scenario.hosts if h.type == "compute" and h.enabled]
    caps = {"capacity": max(1, max_hosts_out(targets, load)) if targets else 1}
    if request.max_parallel_hosts is not None:
        caps["max_parallel_hosts"] = request.max_parallel_hosts
    if request.controls.max_hosts_in_maintenance is not None:
        # A percent is of the session's hosts (fenix_core.budgets).
        caps["controls.max_hosts_in_maintenance"] = resolve_cap(
            request.controls.max_hosts_in_maintenance, len(maintained)
        )
    if workflow in _SERIAL:
        caps["workflow"] = 1
    parallel = min(caps.values())
    members: Counter[str] = Counter()
    rules: dict[str, GroupRule] = {}
    if workflow in _GROUP_LIMITED:
        emptied = {h.name for h in maintained if h.type == "compute"}
        # The scenario's groups plus each project's implicit one, held to the
        # request's default_group_constraints (scenarios name only known groups).
        groups = {
            g.group_id: g
            for g in with_implicit_groups(
                scenario.groups,
                {i.id: i.project for i in scenario.instances},
                {i.id: i.group for i in scenario.instances if i.group is not None},
                workflow,
                request.default_group_constraints,
            )
        }
        for inst in scenario.instances:
            if inst.host not in emptied:
                continue
            group_id = inst.group or implicit_group_id(inst.project)
            members[group_id] += 1
            rules[group_id] = GroupRule.of(groups[group_id])
    move = min(scenario.migration_seconds, scenario.live_migration_seconds)
    if not any(i.live_migratable for i in scenario.instances):
        move = scenario.migration_seconds
    host_work = [_host_work(scenario, h) for h in maintained]
    first = (
        _first_maintained(scenario, maintained, host_work, rules, move)
        if members and not _room_outside(scenario, maintained)
        else None
    )
    bound = makespan_lower_bound(
        host_work=host_work,
        max_parallel_hosts=parallel,
        members_by_group=members,
        rules=rules,
        move_seconds=move,
        first_final_move_at=first[0] if first else 0.0,
    )
    makespan = timeline.makespan
    limited_by = "capacity"
    if bound.critical_group and bound.group_bound > bound.capacity_bound:
        # The chain waits for a first host whose drain at its groups' pace
        # takes longer than one move (the benchmark's "D").
        limited_by = "first drain" if first and first[0] > first[1] else "group chain"
    result: dict[str, Any] = {
        "seconds": bound.seconds,
        "makespan_seconds": makespan,
        "ratio": round(makespan / bound.seconds, 4) if bound.seconds > 0 else None,
        "limited_by": limited_by,
        "capacity_seconds": bound.capacity_bound,
        "hosts_out_at_once": parallel,
        "hosts_out_capped_by": sorted(k for k, v in caps.items() if v == parallel),
        "group_chain_seconds": bound.group_bound,
        "first_maintained_seconds": first[0] if first else None,
        "critical_group": None,
        "not_in_bound": _controls_left_out(scenario),
    }
    if bound.critical_group is not None:
        rule = rules[bound.critical_group]
        result["critical_group"] = {
            "group_id": bound.critical_group,
            "members": members[bound.critical_group],
            "max_impacted_members": rule.max_impacted,
            "recovery_time": rule.recovery_time,
        }
    return result


def _room_outside(scenario: Scenario, maintained: Sequence[HostSpec]) -> bool:
    """Can an instance of a maintained host stay somewhere outside the
    session from the start (an enabled compute host not maintained with
    room for the smallest of them), or are instances deleted (a manager
    scales in)? Then final moves need not wait for the first maintenance."""
    if any(m.scale_in for m in scenario.managers):
        return True
    inside = {h.name for h in maintained}
    smallest = min((i.vcpus for i in scenario.instances if i.host in inside), default=None)
    if smallest is None:
        return False
    used = Counter[str]()
    for inst in scenario.instances:
        used[inst.host] += inst.vcpus
    return any(
        h.vcpus - used[h.name] >= smallest
        for h in scenario.hosts
        if h.name not in inside and h.type == "compute" and h.enabled
    )


def _first_maintained(
    scenario: Scenario,
    maintained: Sequence[HostSpec],
    host_work: Sequence[float],
    rules: Mapping[str, GroupRule],
    move_seconds: float,
) -> tuple[float, float]:
    """When the first host can be maintained: its drain at its groups' pace
    then its work (``planner.first_maintained_at``), and the same counting
    one move for the drain (``second_moves.first_final_move_at``)."""
    # Only compute hosts are emptied: another host's work starts with its
    # instances in place (counting none there keeps the least time a bound).
    members: dict[str, Counter[str]] = {
        h.name: Counter() for h in maintained if h.type == "compute"
    }
    count: Counter[str] = Counter()
    for inst in scenario.instances:
        if inst.host in members:
            count[inst.host] += 1
            group_id = inst.group or implicit_group_id(inst.project)
            if group_id in rules:
                members[inst.host][group_id] += 1
    hosts = [
        (w, members.get(h.name, Counter()), count[h.name])
        for h, w in zip(maintained, host_work, strict=True)
    ]
    paced = first_maintained_at(hosts, rules, move_seconds=move_seconds)
    one_move = first_final_move_at(
        [(w, n > 0) for w, _, n in hosts], stay_room=False, move_seconds=move_seconds
    )
    return paced, one_move


def _controls_left_out(scenario: Scenario) -> list[str]:
    """Controls of the request that can lengthen a session beyond the bound."""
    controls = scenario.session.request.controls
    found = []
    if controls.windows:
        found.append("controls.windows")
    if controls.blackout_dates:
        found.append("controls.blackout_dates")
    if controls.max_hosts_per_hour is not None:
        found.append("controls.max_hosts_per_hour")
    if controls.max_hosts_per_day is not None:
        found.append("controls.max_hosts_per_day")
    if controls.settle_seconds:
        found.append("controls.settle_seconds")
    if scenario.session.maintenance_in:
        found.append("session.maintenance_in")
    return found
