"""``fenix``: simulate and plan maintenance scenarios, look at real sessions.

Exit codes: 0 the session (or plan) ends in MAINTENANCE_DONE, 1 it ends in
MAINTENANCE_FAILED, 2 bad input (a scenario that does not validate, an
unknown session, a bad option).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..engine import Engine
from ..errors import FenixError, FieldError, InvalidInput
from ..model import SessionView
from ..request_check import check_plugins
from ..scenario import Scenario, load_scenario_file
from ..scenario_schema import scenario_json_schema
from ..simulation import Simulation, SimulationResult, plan
from ..timeline import Timeline, build_timeline, with_implicit_groups
from .display import LiveProgress, duration, report_tables, session_table, sessions_table

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables."
)
_timeline_option = click.option(
    "--timeline",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also draw a Gantt chart of hosts and group impacts to this .svg or .png file.",
)
_database_option = click.option(
    "--database-url",
    envvar="FENIX_DATABASE_URL",
    required=True,
    help="The engine's database, e.g. sqlite:///fenix.db (or $FENIX_DATABASE_URL).",
)
_scenario_argument = click.argument(
    "scenario_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


def _console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def _fails_cleanly(command: F) -> F:
    """Report a FenixError as one line (or JSON) and exit 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FenixError as exc:
            if kwargs.get("as_json"):
                error: dict[str, Any] = {"error": str(exc)}
                if isinstance(exc, InvalidInput):
                    error["field"] = exc.field
                    error["errors"] = [e._asdict() for e in exc.errors]
                click.echo(json.dumps(error))
            else:
                console = _console(stderr=True)
                problems = exc.errors if isinstance(exc, InvalidInput) else ()
                if len(problems) > 1:
                    console.print(f"[bold red]error:[/] {len(problems)} problems", markup=True)
                    for problem in problems:
                        console.print(f"  {problem.field}: {problem.message}", markup=False)
                else:
                    console.print(f"[bold red]error:[/] {exc}", markup=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default))


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _load(path: Path) -> Scenario:
    try:
        return load_scenario_file(path)
    except InvalidInput as exc:
        raise InvalidInput.from_errors(
            [FieldError(e.field, f"{e.message} (in {path})") for e in exc.errors]
        ) from None


def _draw(timeline: Timeline, path: Path | None, *, quiet: bool) -> None:
    if path is None:
        return
    from ..timeline_chart import render_timeline

    render_timeline(timeline, path)
    if not quiet:
        _console().print(f"timeline written to [bold]{path}[/]")


def _exit_code(state: str) -> int:
    return 0 if state == "MAINTENANCE_DONE" else 1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fenix-core")
def main() -> None:
    """fenix-core: preview, simulate and inspect rolling maintenance sessions."""


@main.command()
@_scenario_argument
@_json_option
@_fails_cleanly
def validate(scenario_file: Path, as_json: bool) -> None:
    """Check a scenario file (its shape, and its workflow, action and gate
    names against the plug-ins a simulation loads) and say what it describes."""
    scenario = _load(scenario_file)
    with Simulation(scenario) as sim:
        try:
            check_plugins(scenario.session.request, sim.engine.plugins)
        except InvalidInput as exc:
            raise InvalidInput.from_errors(
                # The request's actions are the scenario's top-level ``actions``.
                [
                    e
                    if e.field.startswith("actions")
                    else FieldError(f"session.{e.field}", e.message)
                    for e in exc.errors
                ]
            ) from None
    summary = {
        "scenario": scenario.name,
        "hosts": len(scenario.hosts),
        "instances": len(scenario.instances),
        "groups": len(scenario.groups),
        "managers": [m.project for m in scenario.managers],
        "workflow": scenario.session.request.workflow,
    }
    if as_json:
        _dump({"valid": True, **summary})
        return
    _console().print(
        f"[green]valid[/]: {scenario.name}: {summary['hosts']} hosts, "
        f"{summary['instances']} instances, {summary['groups']} groups, "
        f"workflow {summary['workflow']}"
    )


@main.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (for editors that complete YAML)."""
    click.echo(json.dumps(scenario_json_schema(), indent=2))


@main.command()
@_scenario_argument
@_json_option
@_timeline_option
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Simulated seconds shown per real second in the live display (0: flat out).",
)
@click.option("--no-live", is_flag=True, help="No live display, only the report.")
@_fails_cleanly
def simulate(
    scenario_file: Path, as_json: bool, timeline: Path | None, speed: float, no_live: bool
) -> None:
    """Run SCENARIO_FILE on simulated time and report what happened.

    Shows the session live on a terminal, then the makespan, per-host times,
    per-group impact peaks and notifications per project.
    """
    scenario = _load(scenario_file)
    console = _console()
    with Simulation(scenario) as sim:
        live = not (as_json or no_live) and console.is_terminal
        if live:
            with LiveProgress(sim.engine, console, speed=speed) as progress:
                result = sim.run(on_start=progress.attach)
        else:
            result = sim.run()
    _draw(result.timeline, timeline, quiet=as_json)
    if as_json:
        _dump({"scenario": scenario.name, **result.to_dict()})
    else:
        _print_report(console, scenario.name, result)
    sys.exit(_exit_code(result.view.state))


def _print_report(console: Console, name: str, result: SimulationResult) -> None:
    console.print(
        f"[bold]{name}[/]: {result.migrations_done} migrations "
        f"({result.migrations_failed} failed), "
        f"simulated from {result.timeline.start:%Y-%m-%d %H:%M} UTC"
    )
    for table in report_tables(result.timeline, result.notifications):
        console.print(table)


@main.command("plan")
@_scenario_argument
@_json_option
@_timeline_option
@_fails_cleanly
def plan_command(scenario_file: Path, as_json: bool, timeline: Path | None) -> None:
    """Preview the waves and the estimated makespan of SCENARIO_FILE.

    Nothing real is touched: the scenario runs on simulated time with every
    manager answering at once and without its faults.
    """
    scenario = _load(scenario_file)
    preview = plan(scenario)
    _draw(preview.result.timeline, timeline, quiet=as_json)
    data = preview.to_dict()
    if as_json:
        _dump(data)
    else:
        console = _console()
        console.print(
            f"[bold]{scenario.name}[/]: estimated makespan "
            f"[bold]{duration(data['estimated_makespan_seconds'])}[/] "
            f"({data['workflow']} workflow, {len(data['waves'])} wave(s); {data['method']})"
        )
        if data["reason"]:
            console.print(f"[bold red]{data['state']}[/]: {data['reason']}")
        for wave in data["waves"]:
            console.print(
                f"  wave {wave['index'] + 1:>3} at {duration(wave['start']):>8} "
                f"→ {duration(wave['end']):>8}: {', '.join(wave['hosts'])}"
            )
    sys.exit(_exit_code(data["state"]))


@main.group()
def sessions() -> None:
    """Look at the sessions recorded in an engine's database (read-only)."""


def _open(database_url: str) -> Engine:
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise InvalidInput("database_url", f"not a database URL: {database_url!r}") from None
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path not in (None, "", ":memory:") and not Path(str(path)).is_file():
        # Opening it would create an empty database: say what is wrong instead.
        raise InvalidInput("database_url", f"no database file {path!r}")
    # No plug-ins and no loop: the engine only reads the database.
    return Engine(database_url=database_url, load_entry_points=False)


@sessions.command("list")
@_database_option
@_json_option
@_fails_cleanly
def sessions_list(database_url: str, as_json: bool) -> None:
    """Every session in the database, oldest first."""
    with _open(database_url) as engine:
        views = engine.list_sessions()
    if as_json:
        _dump([_summary(v) for v in views])
    else:
        _console().print(sessions_table(views))


@sessions.command("show")
@click.argument("session_id")
@_database_option
@_json_option
@_timeline_option
@_fails_cleanly
def sessions_show(session_id: str, database_url: str, as_json: bool, timeline: Path | None) -> None:
    """One session: its hosts with their times, and its timeline report."""
    with _open(database_url) as engine:
        view = engine.get_session(session_id)
        line = session_timeline(engine, view)
    _draw(line, timeline, quiet=as_json)
    if as_json:
        _dump(
            {
                **_summary(view),
                "hosts": [attrs.asdict(h) for h in view.hosts],
                "report": line.to_dict(),
            }
        )
        return
    console = _console()
    console.print(session_table(view))
    for table in report_tables(line)[1:]:
        console.print(table)
    console.print(f"makespan {duration(line.makespan)}, {len(line.waves())} wave(s)")


def session_timeline(engine: Engine, view: SessionView) -> Timeline:
    """The timeline of a recorded session, with its groups from the constraints."""
    projects: dict[str, str] = {}
    for project_id in view.projects:
        for inst in engine.project_view(view.session_id, project_id).instances:
            projects[inst.instance_id] = project_id
    members = {
        c.instance_id: c.group_id
        for c in engine.list_instance_constraints()
        if c.group_id is not None and c.instance_id in projects
    }
    used = set(members.values())
    groups = [g for g in engine.list_group_constraints() if g.group_id in used]
    return build_timeline(
        view,
        engine.list_operations(view.session_id),
        projects=projects,
        groups=with_implicit_groups(groups, projects, members, view.workflow),
        members=members,
    )


def _summary(view: SessionView) -> dict[str, Any]:
    return {
        "session_id": view.session_id,
        "workflow": view.workflow,
        "state": view.state,
        "percent_done": view.percent_done,
        "reason": view.reason,
        "hosts": len(view.hosts),
        "projects": dict(view.projects),
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
        "maintenance_at": view.maintenance_at.isoformat() if view.maintenance_at else None,
    }
