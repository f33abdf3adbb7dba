"""``fenix``: simulate and plan maintenance scenarios, look at real sessions.

Exit codes: 0 the session (or plan) ends in MAINTENANCE_DONE, 1 it ends in
MAINTENANCE_FAILED, 2 bad input (a scenario that does not validate, an
unknown session, a bad option).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.markup import escape

from ..errors import FieldError, InvalidInput
from ..request_check import check_plugins
from ..sim.scenario import Scenario, load_scenario_file, parse_scenario
from ..sim.scenario_schema import scenario_json_schema
from ..sim.simulation import Plan, Simulation, SimulationResult, plan
from .cloud import check_cloud_options, cloud_options, cloud_scenario_data
from .common import console, draw, dump, exit_code, fails_cleanly, json_option, timeline_option
from .display import LiveProgress, report_tables
from .plan_display import print_plan
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
@click.argument(
    "scenario_file",
    required=False,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@cloud_options
@json_option
@timeline_option
@click.option("--no-live", is_flag=True, help="No progress display while it runs.")
@fails_cleanly
def plan_command(
    scenario_file: Path | None,
    as_json: bool,
    timeline: Path | None,
    no_live: bool,
    **cloud: Any,
) -> None:
    """Preview the waves and the estimated makespan of SCENARIO_FILE, or of the
    live cloud (--cloud openstack|k8s, read-only).

    Nothing real is touched: the scenario runs on simulated time with every
    manager answering at once and without its faults. The preview says per
    host when it starts and ends, how many hosts are out at once, how often
    each instance moves, which project is asked what and when, and the
    makespan against its lower bound with what limits it.
    """
    scenario = _scenario(scenario_file, cloud)
    out = console()
    if not (as_json or no_live) and out.is_terminal:
        # The same run as plan(), shown as it goes: long for thousands of hosts.
        with (
            Simulation(scenario.without_faults(answer_at_once=True)) as sim,
            LiveProgress(sim.engine, out) as progress,
        ):
            preview = Plan.of(scenario, sim.run(on_start=progress.attach), sim.engine)
    else:
        preview = plan(scenario)
    draw(preview.result.timeline, timeline, quiet=as_json)
    data = preview.to_dict()
    if as_json:
        dump(data)
    else:
        print_plan(out, scenario.name, data)
    sys.exit(exit_code(data["state"]))


def _scenario(scenario_file: Path | None, cloud: dict[str, Any]) -> Scenario:
    """The scenario of a file, or read from the cloud named by --cloud."""
    if scenario_file is not None and cloud["cloud"] is not None:
        raise InvalidInput("cloud", "give a scenario file or --cloud, not both")
    if scenario_file is None and cloud["cloud"] is None:
        raise InvalidInput("scenario_file", "give a scenario file, or --cloud openstack|k8s")
    if scenario_file is not None:
        _only_with_cloud(None, cloud)
        return _load(scenario_file)
    return parse_scenario(_cloud_data(cloud))


def _only_with_cloud(cloud_name: str | None, cloud: dict[str, Any]) -> None:
    defaults = {"workflow": "rolling", "action_seconds": 600.0}
    check_cloud_options(
        cloud_name,
        **{
            k: v
            for k, v in cloud.items()
            if k != "cloud" and not (k in defaults and v == defaults[k])
        },
    )


def _cloud_data(cloud: dict[str, Any]) -> dict[str, Any]:
    _only_with_cloud(cloud["cloud"], cloud)
    return cloud_scenario_data(**cloud)


@main.command("export")
@cloud_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, allow_dash=True, path_type=Path),
    help="The scenario file to write ('-': standard output).",
)
@fails_cleanly
def export_command(output: Path, **cloud: Any) -> None:
    """Write the live cloud (--cloud openstack|k8s, read-only) as a scenario
    file: ``fenix plan FILE`` previews the same session, and the file can be
    edited for a what-if."""
    if cloud["cloud"] is None:
        raise InvalidInput("cloud", "give --cloud openstack|k8s")
    data = _cloud_data(cloud)
    text = (
        f"# fenix export --cloud {cloud['cloud']}: {len(data['hosts'])} hosts, "
        f"{len(data['instances'])} instances, {len(data['groups'])} groups\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    )
    parse_scenario(yaml.safe_load(text))  # what was written loads back
    if str(output) == "-":
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    console().print(
        f"wrote [bold]{escape(str(output))}[/]: {len(data['hosts'])} hosts, "
        f"{len(data['instances'])} instances, {len(data['groups'])} groups"
    )


main.add_command(sessions)
