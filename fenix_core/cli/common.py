"""What every ``fenix`` command shares: options, error reporting, output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from ..errors import FenixError, InvalidInput, Replanned
from ..sim.timeline import Timeline

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables."
)
timeline_option = click.option(
    "--timeline",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also draw a Gantt chart of hosts and group impacts to this .svg or .png file.",
)


def console(*, stderr: bool = False, width: int | None = None) -> Console:
    return Console(stderr=stderr, highlight=False, width=width)


def fails_cleanly(command: F) -> F:
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
                if isinstance(exc, Replanned):
                    error["plan_id"] = exc.plan_id
                    error["changes"] = list(exc.changes)
                click.echo(json.dumps(error))
            else:
                err = console(stderr=True)
                problems = exc.errors if isinstance(exc, InvalidInput) else ()
                if len(problems) > 1:
                    err.print(f"[bold red]error:[/] {len(problems)} problems")
                    for problem in problems:
                        err.print(f"  {problem.field}: {problem.message}", markup=False)
                else:
                    # escape(): messages hold text like "fenix-core[plot]" that is not markup.
                    err.print(f"[bold red]error:[/] {escape(str(exc))}")
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default))


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def draw(timeline: Timeline, path: Path | None, *, quiet: bool) -> None:
    if path is None:
        return
    from ..sim.timeline_chart import render_timeline

    render_timeline(timeline, path)
    if not quiet:
        console().print(f"timeline written to [bold]{escape(str(path))}[/]")


def exit_code(state: str) -> int:
    """0 for MAINTENANCE_DONE, 1 for any other end (failed, cancelled)."""
    return 0 if state == "MAINTENANCE_DONE" else 1
