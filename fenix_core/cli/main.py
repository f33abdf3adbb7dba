"""``fenix``: simulate and plan maintenance scenarios, look at real sessions.

Exit codes: 0 the session (or plan) ends in MAINTENANCE_DONE, 1 it ends in
MAINTENANCE_FAILED, 2 bad input (a scenario that does not validate, an
unknown session, a bad option).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from ..errors import FieldError, InvalidInput
from ..request_check import check_plugins
from ..scenario import Scenario, load_scenario_file
from ..scenario_schema import scenario_json_schema
from ..simulation import Plan, Simulation, SimulationResult, plan
from .common import console, draw, dump, exit_code, fails_cleanly, json_option, timeline_option
from .display import LiveProgress, duration, report_tables
from .sessions import sessions

__all__ = ["main"]

_scenario_argument = click.argument(
    "scenario_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


def _load(path: Path) -> Scenario:
    try:
        return load_scenario_file(path)
    except InvalidInput as exc:
        raise InvalidInput.from_errors(
            [FieldError(e.field, f"{e.message} (in {path})") for e in exc.errors]
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fenix-core")
def main() -> None:
    """fenix-core: preview, simulate and inspect rolling maintenance sessions."""


@main.command()
@_scenario_argument
@json_option
@fails_cleanly
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
        dump({"valid": True, **summary})
        return
    console().print(
        f"[green]valid[/]: {escape(scenario.name)}: {summary['hosts']} hosts, "
        f"{summary['instances']} instances, {summary['groups']} groups, "
        f"workflow {summary['workflow']}"
    )


@main.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (for editors that complete YAML)."""
    click.echo(json.dumps(scenario_json_schema(), indent=2))


@main.command()
@_scenario_argument
@json_option
@timeline_option
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Simulated seconds shown per real second in the live display (0: flat out).",
)
@click.option("--no-live", is_flag=True, help="No live display, only the report.")
@fails_cleanly
def simulate(
    scenario_file: Path, as_json: bool, timeline: Path | None, speed: float, no_live: bool
) -> None:
    """Run SCENARIO_FILE on simulated time and report what happened.

    Shows the session live on a terminal, then the makespan, per-host times,
    per-group impact peaks and notifications per project.
    """
    scenario = _load(scenario_file)
    out = console()
    with Simulation(scenario) as sim:
        if not (as_json or no_live) and out.is_terminal:
            with LiveProgress(sim.engine, out, speed=speed) as progress:
                result = sim.run(on_start=progress.attach)
        else:
            result = sim.run()
    draw(result.timeline, timeline, quiet=as_json)
    if as_json:
        dump({"scenario": scenario.name, **result.to_dict()})
    else:
        _print_report(out, scenario.name, result)
    sys.exit(exit_code(result.view.state))


def _print_report(out: Console, name: str, result: SimulationResult) -> None:
    out.print(
        f"[bold]{escape(name)}[/]: {result.migrations_done} migrations "
        f"({result.migrations_failed} failed), "
        f"simulated from {result.timeline.start:%Y-%m-%d %H:%M} UTC"
    )
    for table in report_tables(result.timeline, result.notifications):
        out.print(table)


@main.command("plan")
@_scenario_argument
@json_option
@timeline_option
@click.option("--no-live", is_flag=True, help="No progress display while it runs.")
@fails_cleanly
def plan_command(scenario_file: Path, as_json: bool, timeline: Path | None, no_live: bool) -> None:
    """Preview the waves and the estimated makespan of SCENARIO_FILE.

    Nothing real is touched: the scenario runs on simulated time with every
    manager answering at once and without its faults.
    """
    scenario = _load(scenario_file)
    out = console()
    if not (as_json or no_live) and out.is_terminal:
        # The same run as plan(), shown as it goes: long for thousands of hosts.
        with (
            Simulation(scenario.without_faults(answer_at_once=True)) as sim,
            LiveProgress(sim.engine, out) as progress,
        ):
            preview = Plan(scenario.name, sim.run(on_start=progress.attach))
    else:
        preview = plan(scenario)
    draw(preview.result.timeline, timeline, quiet=as_json)
    data = preview.to_dict()
    if as_json:
        dump(data)
    else:
        out.print(
            f"[bold]{escape(scenario.name)}[/]: estimated makespan "
            f"[bold]{duration(data['estimated_makespan_seconds'])}[/] "
            f"({data['workflow']} workflow, {len(data['waves'])} wave(s); {data['method']})"
        )
        if data["reason"]:
            out.print(f"[bold red]{data['state']}[/]: {escape(data['reason'])}")
        for wave in data["waves"]:
            out.print(
                f"  wave {wave['index'] + 1:>3} at {duration(wave['start']):>8} "
                f"→ {duration(wave['end']):>8}: {', '.join(wave['hosts'])}"
            )
    sys.exit(exit_code(data["state"]))


main.add_command(sessions)
