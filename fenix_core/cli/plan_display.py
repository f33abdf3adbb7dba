"""The text form of ``fenix plan``: the preview an operator decides on.

Renders the data of :meth:`fenix_core.sim.simulation.Plan.to_dict` (see
:mod:`fenix_core.sim.preview`); long lists are cut, ``--json`` has everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .display import duration

__all__ = ["print_plan", "sparkline"]

#: Hosts listed one per row up to this many; above, the waves say it.
MAX_HOST_ROWS = 40
_NAMES_PER_WAVE = 8
_MOVED_SHOWN = 10
_BARS = " ▁▂▃▄▅▆▇█"


def print_plan(out: Console, name: str, data: dict[str, Any]) -> None:
    out.print(
        f"[bold]{escape(name)}[/]: estimated makespan "
        f"[bold]{duration(data['estimated_makespan_seconds'])}[/] "
        f"({data['workflow']} workflow, {len(data['waves'])} wave(s); {data['method']})"
    )
    if data["reason"]:
        out.print(f"[bold red]{data['state']}[/]: {escape(data['reason'])}")
    preview = data.get("preview")
    if preview is not None:
        _bound(out, preview["lower_bound"])
        _concurrency(out, preview["concurrency"], data["estimated_makespan_seconds"])
        _moves(out, preview["moves"])
    for wave in data["waves"]:
        hosts = wave["hosts"]
        shown = ", ".join(hosts[:_NAMES_PER_WAVE])
        if len(hosts) > _NAMES_PER_WAVE:
            shown += f" … (+{len(hosts) - _NAMES_PER_WAVE} more)"
        out.print(
            f"  wave {wave['index'] + 1:>3} at {duration(wave['start']):>8} "
            f"→ {duration(wave['end']):>8}: {len(hosts)} host(s): {shown}"
        )
    if preview is None:
        return
    if len(preview["hosts"]) <= MAX_HOST_ROWS:
        out.print(_hosts_table(preview["hosts"]))
    else:
        out.print(f"  ({len(preview['hosts'])} hosts: --json lists each host's times)")
    if preview["projects"]:
        out.print(_projects_table(preview["projects"]))


def _bound(out: Console, bound: dict[str, Any]) -> None:
    ratio = f", makespan x{bound['ratio']:.2f} of it" if bound["ratio"] is not None else ""
    caps = ", ".join(bound["hosts_out_capped_by"])
    if bound["limited_by"] in ("group chain", "first drain") and bound["critical_group"]:
        group = bound["critical_group"]
        why = (
            f"the group chain of {escape(group['group_id'])} ({group['members']} members, "
            f"{group['max_impacted_members']} at a time, {group['recovery_time']:.0f} s recovery)"
        )
        first = bound.get("first_maintained_seconds")
        if first:
            # No host outside the session can keep an instance: each member's
            # last move waits for a host that is already maintained.
            why += (
                ", whose final moves start only once a first host is maintained"
                f" ({duration(first)} at the earliest)"
            )
        if bound["limited_by"] == "first drain":
            why += (
                ": no host empties sooner, each holds more of a group's members than"
                " the group lets move at once"
            )
    else:
        why = f"capacity: {bound['hosts_out_at_once']} host(s) out at once ({caps})"
    out.print(f"lower bound [bold]{duration(bound['seconds'])}[/]{ratio}; limited by {why}")
    if bound["not_in_bound"]:
        out.print(f"  not in the bound: {', '.join(bound['not_in_bound'])}")


def sparkline(steps: Sequence[Sequence[float]], end: float, width: int = 60) -> str:
    """The step series as one line of bars: each character the most hosts out
    during its slice of ``[0, end]``."""
    if end <= 0 or not steps:
        return ""
    top = max(int(c) for _, c in steps) or 1
    cells = []
    for cell in range(width):
        lo, hi = end * cell / width, end * (cell + 1) / width
        count = 0
        for index, (when, value) in enumerate(steps):
            nxt = steps[index + 1][0] if index + 1 < len(steps) else end
            if when < hi and nxt > lo:
                count = max(count, int(value))
        cells.append(_BARS[round(count / top * (len(_BARS) - 1))])
    return "".join(cells)


def _concurrency(out: Console, concurrency: dict[str, Any], makespan: float) -> None:
    peak = concurrency["max_hosts_out"]
    at = concurrency["max_at"]
    when = f" (first at {duration(at)})" if at is not None else ""
    line = sparkline(concurrency["hosts_out"], makespan)
    out.print(f"hosts out at once: at most {peak}{when}  [magenta]{line}[/]")


def _moves(out: Console, moves: dict[str, Any]) -> None:
    ratio = f", x{moves['ratio']:.2f}" if moves["ratio"] is not None else ""
    out.print(
        f"moves: {moves['total']} for {moves['instances_moved']} instance(s) "
        f"(at least {moves['bound']} needed{ratio}); "
        f"{moves['moved_twice_or_more']} moved twice or more"
    )
    again = sorted(
        ((i, n) for i, n in moves["per_instance"].items() if n >= 2), key=lambda x: (-x[1], x[0])
    )
    if again:
        shown = ", ".join(f"{escape(i)} x{n}" for i, n in again[:_MOVED_SHOWN])
        more = f" … (+{len(again) - _MOVED_SHOWN} more)" if len(again) > _MOVED_SHOWN else ""
        out.print(f"  moved more than once: {shown}{more}")


def _hosts_table(hosts: list[dict[str, Any]]) -> Table:
    table = Table(title="hosts", title_justify="left")
    for column in ("host", "wave", "start", "maintenance", "end"):
        table.add_column(column, justify="left" if column == "host" else "right")
    for h in hosts:
        table.add_row(
            h["name"],
            "" if h["wave"] is None else str(h["wave"] + 1),
            duration(h["start"]),
            duration(h["maintenance_start"]),
            duration(h["end"]),
        )
    return table


def _projects_table(projects: list[dict[str, Any]]) -> Table:
    table = Table(title="projects asked", title_justify="left")
    for column in ("project", "state", "first", "last", "notifications", "instances"):
        table.add_column(column, justify="left" if column in ("project", "state") else "right")
    for project in projects:
        for index, asked in enumerate(project["asked"]):
            table.add_row(
                project["project"] if index == 0 else "",
                asked["state"],
                duration(asked["first"]),
                duration(asked["last"]),
                str(asked["notifications"]),
                str(asked["instances"]),
            )
    return table
