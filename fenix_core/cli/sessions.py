"""``fenix sessions``: look at and control the sessions of an engine's database."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import click
import yaml
from rich.live import Live
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..engine import Engine
from ..errors import Conflict, InvalidInput, NotFound, Replanned
from ..model import SessionRequest, SessionView
from ..sim.scenario import load_scenario
from ..sim.timeline import Timeline, recorded_timeline
from ..states import SessionState
from .api_client import ApiClient
from .common import F, console, draw, dump, exit_code, fails_cleanly, json_option, timeline_option
from .display import (
    approval_dict,
    duration,
    plan_table,
    report_tables,
    session_table,
    sessions_table,
    watch_view,
)

__all__ = ["match_session", "session_timeline", "sessions"]

FINAL_STATES = frozenset(
    {
        SessionState.MAINTENANCE_DONE,
        SessionState.MAINTENANCE_FAILED,
        SessionState.MAINTENANCE_CANCELLED,
    }
)

_database_option = click.option(
    "--database-url",
    envvar="FENIX_DATABASE_URL",
    help="The engine's database, e.g. sqlite:///fenix.db (or $FENIX_DATABASE_URL).",
)
_api_option = click.option(
    "--api",
    "api_url",
    envvar="FENIX_API_URL",
    help="A fenix-api to ask instead of a database, e.g. http://fenix:12347 (or $FENIX_API_URL).",
)
_token_option = click.option(
    "--token",
    envvar="FENIX_TOKEN",
    default="",
    help="fenix-api admin token, sent as X-Auth-Token (or $FENIX_TOKEN).",
)


def database_option(command: F) -> F:
    """--database-url, or --api with --token: where the sessions are."""
    return _database_option(_api_option(_token_option(command)))


def api_client(database_url: str | None, api_url: str | None, token: str) -> ApiClient | None:
    """The fenix-api client when --api is given; None for --database-url."""
    if api_url and database_url:
        raise InvalidInput("api", "give --api or --database-url, not both")
    if api_url:
        return ApiClient(api_url, token)
    if not database_url:
        raise InvalidInput(
            "database_url",
            "give --database-url (or $FENIX_DATABASE_URL), or --api and --token "
            "(or $FENIX_API_URL and $FENIX_TOKEN)",
        )
    return None


_session_argument = click.argument("session_id", metavar="SESSION")


@click.group()
def sessions() -> None:
    """Look at and control the sessions recorded in an engine's database.

    SESSION may be any unique prefix of a session id.
    """


def open_engine(database_url: str, plugins: tuple[str, ...] = (), *, cloud: bool = False) -> Engine:
    """An engine on an existing database that is never stepped here.
    ``cloud``: it reads the cloud, so the ``fenix`` entry points are loaded
    (its cloud driver) even without ``plugins``."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise InvalidInput("database_url", f"not a database URL: {database_url!r}") from None
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path not in (None, "", ":memory:") and not Path(str(path)).is_file():
        # Opening it would create an empty database: say what is wrong instead.
        raise InvalidInput("database_url", f"no database file {path!r}")
    if not plugins and not cloud:
        # Reading and pausing need no plug-ins and no loop.
        return Engine(database_url=database_url, load_entry_points=False)
    return Engine(database_url=database_url, plugins=[_plugin(spec) for spec in plugins])


def _plugin(spec: str) -> object:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInput("plugin", f"expected MODULE:CALLABLE, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput("plugin", f"cannot load {spec!r}: {exc}") from None
    return factory()


def match_session(engine: Engine | ApiClient, prefix: str) -> str:
    """The id of the one session whose id is ``prefix`` or starts with it."""
    ids = [view.session_id for view in engine.list_sessions()]
    if prefix in ids:
        return prefix
    found = [sid for sid in ids if sid.startswith(prefix)]
    if not found:
        raise NotFound("session", prefix)
    if len(found) > 1:
        raise InvalidInput(
            "session_id",
            f"{prefix!r} matches {len(found)} sessions: {', '.join(sorted(found))}",
        )
    return found[0]


@sessions.command("list")
@database_option
@json_option
@fails_cleanly
def sessions_list(database_url: str | None, api_url: str | None, token: str, as_json: bool) -> None:
    """Every session in the database (or fenix-api), oldest first."""
    client = api_client(database_url, api_url, token)
    with client or open_engine(str(database_url)) as source:
        views = source.list_sessions()
    if as_json:
        dump([summary(v) for v in views])
    else:
        console().print(sessions_table(views))


@sessions.command("show")
@_session_argument
@database_option
@json_option
@timeline_option
@fails_cleanly
def sessions_show(
    session_id: str,
    database_url: str | None,
    api_url: str | None,
    token: str,
    as_json: bool,
    timeline: Path | None,
) -> None:
    """One session: its hosts with their times, and its timeline report.

    With --api there is no timeline report (fenix-api does not serve a
    session's operations): the hosts, and what the session waits for.
    """
    client = api_client(database_url, api_url, token)
    if client is not None:
        with client:
            _show_from_api(client, session_id, as_json, timeline)
        return
    with open_engine(str(database_url)) as engine:
        view = engine.get_session(match_session(engine, session_id))
        line = session_timeline(engine, view)
    draw(line, timeline, quiet=as_json)
    if as_json:
        dump(
            {
                **summary(view),
                "hosts": [attrs.asdict(h) for h in view.hosts],
                "report": line.to_dict(),
            }
        )
        return
    out = console()
    out.print(session_table(view))
    if view.approval is not None and view.approval.approved_at is None:
        out.print(plan_table(view.approval))
        return
    for table in report_tables(line)[1:]:
        out.print(table)
    out.print(f"makespan {duration(line.makespan)}, {len(line.waves())} wave(s)")


def _show_from_api(
    client: ApiClient, session_id: str, as_json: bool, timeline: Path | None
) -> None:
    if timeline is not None:
        raise InvalidInput(
            "timeline", "needs --database-url: fenix-api does not serve a session's operations"
        )
    view = client.get_session(match_session(client, session_id))
    if as_json:
        dump({**summary(view), "hosts": [attrs.asdict(h) for h in view.hosts]})
        return
    out = console()
    out.print(session_table(view))
    if view.approval is not None and view.approval.approved_at is None:
        out.print(plan_table(view.approval))
    if view.waiting:
        out.print(f"waiting: {escape(view.waiting)}")
    if view.progress is not None and view.progress.estimated_end is not None:
        out.print(f"estimated end {view.progress.estimated_end:%Y-%m-%d %H:%M} UTC")


@sessions.command("create")
@click.argument("request_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@database_option
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE:CALLABLE",
    help="A plug-in object made by calling MODULE:CALLABLE (repeatable), "
    "next to the 'fenix' entry points.",
)
@json_option
@fails_cleanly
def sessions_create(
    request_file: Path,
    database_url: str | None,
    api_url: str | None,
    token: str,
    plugins: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a session from REQUEST_FILE and print its id.

    REQUEST_FILE is a session request (YAML or JSON with the fields of
    SessionRequest) or a scenario file, whose `session` part is used. The
    session is written to the database; the engine serving that database
    (fenix-api, or your application) runs it.
    """
    request, maintenance_in = read_request(request_file)
    client = api_client(database_url, api_url, token)
    if client is not None:
        if plugins:
            raise InvalidInput(
                "plugin", "fenix-api uses its own plug-ins: drop --plugin with --api"
            )
        if maintenance_in is not None:
            start = datetime.now(UTC) + timedelta(seconds=maintenance_in)
            request = attrs.evolve(request, maintenance_at=start)
        with client:
            session_id = client.create_session(request.to_dict())
            view = client.get_session(session_id)
        _print_created(view, as_json)
        return
    with open_engine(str(database_url), plugins) as engine:
        if maintenance_in is not None:
            start = engine.clock.now() + timedelta(seconds=maintenance_in)
            request = attrs.evolve(request, maintenance_at=start)
        view = engine.get_session(engine.create_session(request))
    _print_created(view, as_json)


def _print_created(view: SessionView, as_json: bool) -> None:
    if as_json:
        dump(summary(view))
    else:
        out = console()
        out.print(f"created session [bold]{view.session_id}[/] ({view.workflow}, {view.state})")
        if view.approval is not None:
            out.print(plan_table(view.approval))
            out.print(
                f"approve with: fenix sessions approve {view.session_id} "
                f"--plan-id {view.approval.plan_id}"
            )


def read_request(path: Path) -> tuple[SessionRequest, float | None]:
    """A SessionRequest from a request file, or from a scenario file's `session`
    (with its ``maintenance_in`` seconds, counted from the session's creation)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise InvalidInput("request_file", f"not YAML or JSON ({path}): {exc}") from None
    if not isinstance(data, Mapping):
        raise InvalidInput("request_file", f"expected a mapping at the top of {path}")
    if "hosts" in data and "session" in data:
        try:
            scenario = load_scenario(text)
        except InvalidInput as exc:
            raise InvalidInput(exc.field, f"{exc.reason} (in {path})") from None
        return scenario.session.request, scenario.session.maintenance_in
    try:
        return SessionRequest.coerce(data), None
    except InvalidInput as exc:
        raise InvalidInput(exc.field, f"{exc.reason} (in {path})") from None


@sessions.command("plan")
@_session_argument
@database_option
@json_option
@fails_cleanly
def sessions_plan(
    session_id: str, database_url: str | None, api_url: str | None, token: str, as_json: bool
) -> None:
    """The plan of a session created with `approval: required`: its id, the
    waves and estimated makespan, what changed when it was re-planned."""
    client = api_client(database_url, api_url, token)
    with client or open_engine(str(database_url)) as source:
        view = source.get_session(match_session(source, session_id))
    if view.approval is None:
        raise NotFound("plan", view.session_id, session_id=view.session_id)
    if as_json:
        dump({"session_id": view.session_id, "state": view.state, **approval_dict(view.approval)})
    else:
        console().print(plan_table(view.approval))


@sessions.command("approve")
@_session_argument
@database_option
@click.option(
    "--plan-id",
    help="The plan reviewed (fenix sessions plan): refused if the session was re-planned since.",
)
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE:CALLABLE",
    help="With --database-url: a plug-in object made by calling MODULE:CALLABLE "
    "(repeatable), next to the 'fenix' entry points; the cloud driver is needed.",
)
@json_option
@fails_cleanly
def sessions_approve(
    session_id: str,
    database_url: str | None,
    api_url: str | None,
    token: str,
    plan_id: str | None,
    plugins: tuple[str, ...],
    as_json: bool,
) -> None:
    """Start a session awaiting approval, if its plan still fits the cloud.

    The cloud is read again; if it or the constraints changed, the session is
    re-planned and keeps waiting: the new plan and what changed are printed,
    and the command exits 2 (review it, approve again).
    """
    client = api_client(database_url, api_url, token)
    if client is not None:
        if plugins:
            raise InvalidInput(
                "plugin", "fenix-api uses its own plug-ins: drop --plugin with --api"
            )
        with client:
            sid = match_session(client, session_id)
            view = _approve(client, sid, plan_id, as_json)
    else:
        with open_engine(str(database_url), plugins, cloud=True) as engine:
            sid = match_session(engine, session_id)
            refuse_if_leased(engine, sid)
            view = _approve(engine, sid, plan_id, as_json)
    if as_json:
        dump(summary(view))
    else:
        console().print(f"session [bold]{sid}[/]: plan approved, {view.state}")


def _approve(
    source: Engine | ApiClient, session_id: str, plan_id: str | None, as_json: bool
) -> SessionView:
    """Approve; on a re-plan show the new plan before the error is reported."""
    try:
        if isinstance(source, ApiClient):
            return source.approve(session_id, plan_id)
        return source.approve_session(session_id, plan_id)
    except Replanned:
        view = source.get_session(session_id)
        if view.approval is not None and not as_json:
            console().print(plan_table(view.approval))
        raise


def _reason_option(default: str) -> Callable[[F], F]:
    return click.option("--reason", default=default, show_default=True, help="Why (recorded).")


@sessions.command("pause")
@_session_argument
@database_option
@_reason_option("by the admin")
@json_option
@fails_cleanly
def sessions_pause(
    session_id: str,
    database_url: str | None,
    api_url: str | None,
    token: str,
    reason: str,
    as_json: bool,
) -> None:
    """Start no new hosts or moves; work in flight ends normally."""
    client = api_client(database_url, api_url, token)
    _control(
        session_id, client, database_url, as_json, "pause", lambda e, sid: e.pause(sid, reason)
    )


@sessions.command("resume")
@_session_argument
@database_option
@json_option
@fails_cleanly
def sessions_resume(
    session_id: str, database_url: str | None, api_url: str | None, token: str, as_json: bool
) -> None:
    """Let a paused session go on."""
    client = api_client(database_url, api_url, token)
    _control(session_id, client, database_url, as_json, "resume", lambda e, sid: e.resume(sid))


@sessions.command("cancel")
@_session_argument
@database_option
@_reason_option("cancelled by the admin")
@json_option
@fails_cleanly
def sessions_cancel(
    session_id: str,
    database_url: str | None,
    api_url: str | None,
    token: str,
    reason: str,
    as_json: bool,
) -> None:
    """End the session (MAINTENANCE_CANCELLED); the hosts it disabled go back into service."""
    client = api_client(database_url, api_url, token)
    _control(
        session_id, client, database_url, as_json, "cancel", lambda e, sid: e.cancel(sid, reason)
    )


def _control(
    session_id: str,
    client: ApiClient | None,
    database_url: str | None,
    as_json: bool,
    action: str,
    change: Callable[[Engine, str], SessionView],
) -> None:
    """Pause, resume or cancel: over fenix-api (whose engine runs the session,
    so no lease is in the way; its routes record no --reason), or in the
    database when no engine is running the session."""
    if client is not None:
        with client:
            sid = match_session(client, session_id)
            view = client.control(sid, action)
    else:
        with open_engine(str(database_url)) as engine:
            sid = match_session(engine, session_id)
            refuse_if_leased(engine, sid)
            view = change(engine, sid)
    if as_json:
        dump(summary(view))
    else:
        paused = " (paused)" if view.paused else ""
        console().print(f"session [bold]{sid}[/]: {view.state}{paused}")


def refuse_if_leased(engine: Engine, session_id: str) -> None:
    """Conflict when another engine process is running the session now.

    That engine keeps the session loaded and would not see a change written
    beside it; the engine serving the session must make it (fenix-api's
    pause/resume/cancel routes, or the application's own Engine).
    """
    held = engine.lease_holder(session_id)
    if held is not None:
        owner, expires = held
        raise Conflict(
            f"engine {owner} is running this session (lease until {expires:%H:%M:%S} UTC): "
            "ask that engine (for fenix-api, its pause/resume/cancel routes) or stop it first",
            session_id=session_id,
        )


@sessions.command("watch")
@_session_argument
@database_option
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between two looks at the database (or fenix-api).",
)
@json_option
@fails_cleanly
def sessions_watch(
    session_id: str,
    database_url: str | None,
    api_url: str | None,
    token: str,
    interval: float,
    as_json: bool,
) -> None:
    """Follow a session until it ends; exit 0 if it ends in MAINTENANCE_DONE, else 1.

    On a terminal the view fits the screen: running and failed hosts first,
    finished and waiting hosts counted on one line.
    """
    out = console()
    client = api_client(database_url, api_url, token)
    with client or open_engine(str(database_url)) as engine:
        sid = match_session(engine, session_id)
        view = engine.get_session(sid)
        if view.state not in FINAL_STATES and out.is_terminal and not as_json:
            with Live(console=out, transient=False, auto_refresh=False) as live:
                while view.state not in FINAL_STATES:
                    live.update(watch_view(view, out.size.height), refresh=True)
                    time.sleep(interval)
                    view = engine.get_session(sid)
                live.update(watch_view(view, out.size.height), refresh=True)
        else:
            while view.state not in FINAL_STATES:
                time.sleep(interval)
                view = engine.get_session(sid)
    if as_json:
        dump(summary(view))
    else:
        reason = f": {escape(view.reason)}" if view.reason else ""
        out.print(f"session [bold]{sid}[/] ended in [bold]{view.state}[/]{reason}")
    sys.exit(exit_code(view.state))


def session_timeline(engine: Engine, view: SessionView) -> Timeline:
    """The timeline of a recorded session, with its groups from the constraints."""
    return recorded_timeline(
        view,
        engine.list_operations(view.session_id),
        [engine.project_view(view.session_id, p) for p in view.projects],
        engine.list_instance_constraints(),
        engine.list_group_constraints(),
    )


def summary(view: SessionView) -> dict[str, Any]:
    return {
        "session_id": view.session_id,
        "workflow": view.workflow,
        "state": view.state,
        "paused": view.paused,
        "percent_done": view.percent_done,
        "reason": view.reason,
        "hosts": len(view.hosts),
        "projects": dict(view.projects),
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
        "maintenance_at": view.maintenance_at.isoformat() if view.maintenance_at else None,
        "approval": approval_dict(view.approval) if view.approval else None,
    }
