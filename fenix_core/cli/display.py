"""Rich rendering for the command line: the live progress of a simulated
session and the tables of its report."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from .. import signals
from ..engine import Engine
from ..model import ApprovalView, SessionView
from ..sim.timeline import Timeline

__all__ = [
    "LiveProgress",
    "approval_dict",
    "duration",
    "hosts_table",
    "plan_table",
    "report_tables",
    "session_table",
    "sessions_table",
    "watch_view",
]

HOST_COLOURS = {
    "PENDING": "dim",
    "DRAINING": "yellow",
    "DRAINED": "yellow",
    "IN_MAINTENANCE": "bold magenta",
    "MAINTAINED": "green",
    "FAILED": "bold red",
}
_ACTIVE = ("FAILED", "IN_MAINTENANCE", "DRAINED", "DRAINING", "ADDING")
_LOG_LINES = 12
_REFRESH_SECONDS = 0.05


def duration(seconds: float | None) -> str:
    """``1:02:03`` for a number of seconds; empty for None."""
    if seconds is None:
        return ""
    total = round(seconds)
    sign = "-" if total < 0 else ""
    hours, rest = divmod(abs(total), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}"


class LiveProgress:
    """A live view of a running session, refreshed from its notifications.

    ``speed`` simulated seconds are shown per real second (0: as fast as the
    simulation runs); the engine itself never waits.
    """

    def __init__(self, engine: Engine, console: Console, *, speed: float = 0.0) -> None:
        self.engine = engine
        self.console = console
        self.speed = speed
        self.session_id: str | None = None
        self.start = engine.clock.now()
        self.last_sim = self.start
        self.last_refresh = 0.0
        self.events: list[str] = []
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            console=console,
        )
        self.task = self.progress.add_task("starting", total=100)
        self.live = Live(console=console, refresh_per_second=12, transient=True)

    def __enter__(self) -> LiveProgress:
        for signal in signals.SIGNALS.values():
            signal.connect(self._on_signal, sender=self.engine)
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for signal in signals.SIGNALS.values():
            signal.disconnect(self._on_signal, sender=self.engine)
        self.live.__exit__(None, None, None)

    def attach(self, session_id: str) -> None:
        self.session_id = session_id

    def _on_signal(self, sender: Engine, payload: dict[str, Any]) -> None:
        now = sender.clock.now()
        line = describe(payload)
        if line:
            self.events.append(f"[cyan]{duration((now - self.start).total_seconds())}[/] {line}")
        if self.speed > 0:
            time.sleep(min((now - self.last_sim).total_seconds() / self.speed, 0.5))
        self.last_sim = now
        if time.monotonic() - self.last_refresh >= _REFRESH_SECONDS:
            self.refresh()

    def refresh(self) -> None:
        if self.session_id is None:
            return
        self.last_refresh = time.monotonic()
        view = self.engine.get_session(self.session_id)
        self.progress.update(self.task, completed=view.percent_done, description=view.state)
        self.live.update(self.render(view))

    def render(self, view: SessionView) -> Group:
        """Progress bar, the hosts at work, the last notifications: at most
        the terminal's height, whatever the number of hosts."""
        height = self.console.size.height
        log_lines = max(0, min(_LOG_LINES, height // 3 - 2))
        parts: list[Any] = [self.progress]
        table_height = height - 1 - (log_lines + 2 if log_lines else 0)
        parts.append(hosts_table(view, table_height, self.start))
        if log_lines:
            log = Panel("\n".join(self.events[-log_lines:]), title="notifications")
            parts.append(log)
        return Group(*parts)


def hosts_table(view: SessionView, height: int, start: datetime | None = None) -> Table:
    """The hosts at work (draining, in maintenance, failed) one per row, in at
    most ``height`` lines; finished and waiting hosts only counted in the title.

    Times are from ``start`` (default: the session's creation)."""
    origin = start or view.created_at
    counts = Counter(h.state for h in view.hosts)
    active = sorted(
        (h for h in view.hosts if h.state in _ACTIVE), key=lambda h: (h.state != "FAILED", h.name)
    )
    # Title, header and the lines around them take 5 lines; one is kept for "... more".
    room = max(0, height - 5)
    shown = active if len(active) <= room else active[: max(0, room - 1)]
    hidden = len(active) - len(shown)
    table = Table(
        title="hosts: " + ", ".join(f"{state} {n}" for state, n in sorted(counts.items())),
        caption=f"... {hidden} more at work" if hidden else None,
        expand=False,
    )
    for column in ("host", "type", "state", "in maintenance at"):
        table.add_column(column, overflow="fold")
    for host in shown:
        colour = HOST_COLOURS.get(host.state, "")
        started = host.started_at
        table.add_row(
            escape(host.name),
            host.type,
            f"[{colour}]{host.state}[/]",
            duration((started - origin).total_seconds()) if started else "",
        )
    return table


def watch_view(view: SessionView, height: int) -> Group:
    """``fenix sessions watch``: the session's state line and its hosts at work."""
    paused = " [yellow](paused)[/]" if view.paused else ""
    reason = f": {escape(view.reason)}" if view.reason else ""
    line = (
        f"session [bold]{view.session_id}[/] ({view.workflow}) "
        f"[{_state_colour(view.state)}]{view.state}[/] {view.percent_done}%{paused}{reason}"
    )
    return Group(line, hosts_table(view, height - 2))


def describe(payload: Mapping[str, Any]) -> str | None:
    """One line for a notification payload."""
    state = payload["state"]
    if "host" in payload:
        return f"[magenta]{escape(str(payload['host']))}[/] {state}"
    if "instance_ids" not in payload:
        reason = f" ({payload['reason']})" if payload.get("reason") else ""
        return f"[bold]session {state}[/] {payload.get('percent_done', 0)}%{escape(reason)}"
    ids: Sequence[str] = payload["instance_ids"]
    if state == "INSTANCE_ACTION_DONE" and ids:
        return f"  {escape(str(payload['project_id']))}: {escape(ids[0])} moved"
    shown = ", ".join(ids[:4]) + (" ..." if len(ids) > 4 else "")
    return f"  -> {escape(str(payload['project_id']))}: {state}" + (
        escape(f" [{shown}]") if ids else ""
    )


def report_tables(
    timeline: Timeline, notifications: Mapping[str, Mapping[str, int]] | None = None
) -> list[Table]:
    """The report: hosts, groups and (for simulations) notifications per project."""
    colour = "green" if timeline.state == "MAINTENANCE_DONE" else "bold red"
    hosts = Table(
        title=f"[{colour}]{timeline.state}[/]: makespan {duration(timeline.makespan)}, "
        f"{len(timeline.waves())} wave(s)",
        caption=escape(timeline.reason) if timeline.reason else None,
    )
    for column in ("host", "type", "state", "draining at", "maintenance at", "done at", "took"):
        hosts.add_column(column, justify="left" if column in ("host", "type", "state") else "right")

    def at(when: datetime | None) -> str:
        return "" if when is None else duration((when - timeline.start).total_seconds())

    for host in timeline.hosts:
        took = (
            duration((host.end - host.maintenance_start).total_seconds())
            if host.end and host.maintenance_start
            else ""
        )
        hosts.add_row(
            host.name,
            host.type,
            f"[{HOST_COLOURS.get(host.state, '')}]{host.state}[/]",
            at(host.drain_start),
            at(host.maintenance_start),
            at(host.end),
            took,
        )
    tables = [hosts]
    if timeline.groups:
        groups = Table(title="group impact (members impacted at once)")
        for column in ("group", "project", "members", "peak", "limit"):
            groups.add_column(column, justify="right" if column != "group" else "left")
        for group in timeline.groups:
            over = group.limit is not None and group.peak > group.limit
            groups.add_row(
                group.group_id,
                group.project_id,
                str(group.members),
                f"[bold red]{group.peak}[/]" if over else str(group.peak),
                "" if group.limit is None else str(group.limit),
            )
        tables.append(groups)
    if notifications:
        table = Table(title="notifications per project (maintenance_planned)")
        table.add_column("project")
        table.add_column("total", justify="right")
        table.add_column("by state")
        for project, states in sorted(notifications.items()):
            detail = ", ".join(f"{s} {n}" for s, n in sorted(states.items()))
            table.add_row(project, str(sum(states.values())), detail)
        tables.append(table)
    return tables


def sessions_table(views: Sequence[SessionView]) -> Table:
    """One row per session; ids are never cut (they are what commands take),
    the other columns fold to keep the table within 80 columns."""
    table = Table(title=f"{len(views)} session(s)")
    table.add_column("session", no_wrap=True, min_width=36)
    for column in ("workflow", "state", "done", "hosts", "updated"):
        table.add_column(column, overflow="fold")
    for view in views:
        paused = " (paused)" if view.paused else ""
        table.add_row(
            view.session_id,
            view.workflow,
            f"[{_state_colour(view.state)}]{view.state}[/]{paused}",
            f"{view.percent_done}%",
            str(len(view.hosts)),
            f"{view.updated_at:%m-%d %H:%M}",
        )
    return table


def session_table(view: SessionView) -> Table:
    paused = " (paused)" if view.paused else ""
    table = Table(
        title=f"session {view.session_id} ({view.workflow}): "
        f"[{_state_colour(view.state)}]{view.state}[/] {view.percent_done}%{paused}",
        caption=escape(view.reason) if view.reason else None,
    )
    table.add_column("host", overflow="fold")
    for column in ("type", "state", "in maintenance at", "done at", "reason"):
        table.add_column(column, overflow="fold")
    for host in view.hosts:
        table.add_row(
            escape(host.name),
            host.type,
            f"[{HOST_COLOURS.get(host.state, '')}]{host.state}[/]",
            f"{host.started_at:%H:%M:%S}" if host.started_at else "",
            f"{host.finished_at:%H:%M:%S}" if host.finished_at else "",
            escape(host.reason or ""),
        )
    return table


def _state_colour(state: str) -> str:
    if state == "MAINTENANCE_DONE":
        return "green"
    return "bold red" if state == "MAINTENANCE_FAILED" else "yellow"


def plan_table(approval: ApprovalView) -> Table:
    """The plan of a session created with ``approval: required``: its id, what
    changed when it was re-made, the estimated makespan and the waves."""
    plan = approval.plan
    status = (
        f"approved at {approval.approved_at:%Y-%m-%d %H:%M:%S}"
        if approval.approved_at
        else "awaiting approval"
    )
    caption = [f"planned at {approval.planned_at:%Y-%m-%d %H:%M:%S}"]
    if approval.changes:
        caption.append("re-planned: " + "; ".join(approval.changes))
    if "unavailable" in plan:
        caption.append(f"no preview: {plan['unavailable']}")
    else:
        caption.append(
            f"estimated makespan {duration(plan.get('estimated_makespan_seconds'))}, "
            f"{len(plan.get('waves', ()))} wave(s), simulated end state {plan.get('state')}"
        )
    table = Table(
        title=f"plan {approval.plan_id} ({status})",
        caption=escape("\n".join(caption)),
        min_width=60,
    )
    for column in ("wave", "start", "end", "hosts"):
        table.add_column(column, overflow="fold")
    for wave in plan.get("waves", ()):
        table.add_row(
            str(wave["index"]),
            duration(wave["start"]),
            duration(wave["end"]),
            escape(", ".join(wave["hosts"])),
        )
    return table


def approval_dict(approval: ApprovalView) -> dict[str, Any]:
    """The plan as JSON (``--json``), as fenix-api serves it in the view."""
    return {
        "plan_id": approval.plan_id,
        "planned_at": approval.planned_at.isoformat(),
        "plan": dict(approval.plan),
        "changes": list(approval.changes),
        "approved_at": approval.approved_at.isoformat() if approval.approved_at else None,
    }
