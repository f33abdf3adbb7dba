"""The live web dashboard of fenix-api: ``/dashboard``.

Two HTML pages (the sessions list, one session) that carry no data: they are
the same shell for every caller, so a plain browser navigation, which cannot
send a token header, learns nothing. The page's script (``static/
dashboard.js``) asks for a token once, keeps it in the tab's
``sessionStorage`` and sends it as ``X-Auth-Token`` on every call: the JSON
endpoints below and the admin's ``/v1`` control routes, with the same
authentication dependency as the rest of the API. The script and the style
sheet are package data served from here (no CDN, no build step).

The JSON endpoints are compact views for polling (see
:mod:`fenix_core.rest.dashboard_view` for what a project token may see).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib import resources
from string import Template
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from starlette.staticfiles import StaticFiles

from ..engine import Engine
from ..errors import NotFound
from ..model import SessionView
from ..sim.timeline import recorded_timeline
from ..store.schema import (
    OperationRow,
    OutboxRow,
    SessionRow,
    WebhookRow,
    operations_in_recorded_order,
    session_operations,
    session_outbox,
)
from .auth import Identity
from .dashboard_view import Notice, session_payload, session_row
from .shapes import PROJECT_EVENT_TYPES

__all__ = ["install_dashboard"]

#: Headers of the HTML shells: scripts and styles only from this service, no
#: framing, no referrer (the session id is in the URL), never cached.
_SHELL_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_PAGE_TITLES = {"sessions": "Maintenance sessions", "session": "Maintenance session"}


def _caller(
    request: Request,
    x_auth_token: Annotated[str | None, Header(description="admin or project token")] = None,
) -> Identity:
    """The app's own authentication dependency (``install_dashboard``'s
    ``identity``), so that the dashboard authenticates exactly as ``/v1``."""
    identity: Callable[[Request, str | None], Identity] = request.app.state.dashboard_identity
    return identity(request, x_auth_token)


Caller = Annotated[Identity, Depends(_caller)]


def install_dashboard(
    app: FastAPI,
    engine: Engine,
    identity: Callable[..., Identity],
    errors: Callable[..., dict[int | str, dict[str, Any]]],
) -> None:
    """Add the dashboard's pages, static files and JSON endpoints to ``app``;
    ``identity`` is the app's authentication dependency, ``errors(*statuses)``
    the OpenAPI description of a route's error answers."""
    app.state.dashboard_identity = identity
    shell = Template(
        resources.files(__package__).joinpath("templates/dashboard.html").read_text("utf-8")
    )

    def page(request: Request, name: str) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        body = shell.substitute(
            title=html.escape(_PAGE_TITLES[name]),
            page=name,
            root=html.escape(root, quote=True),
        )
        return HTMLResponse(body, headers=_SHELL_HEADERS)

    @app.get("/dashboard", include_in_schema=False)
    def dashboard_sessions_page(request: Request) -> HTMLResponse:
        return page(request, "sessions")

    @app.get("/dashboard/sessions/{session_id}", include_in_schema=False)
    def dashboard_session_page(request: Request, session_id: str) -> HTMLResponse:
        return page(request, "session")

    app.mount(
        "/dashboard/static",
        StaticFiles(packages=[(__package__ or "fenix_core.rest", "static")]),
        name="dashboard-static",
    )

    @app.get("/dashboard/api/whoami", tags=["dashboard"], responses=errors(401, 413))
    def dashboard_whoami(who: Caller) -> dict[str, Any]:
        """Who the token is: ``{"admin", "project_id"}`` (the page's log-in check)."""
        return {"admin": who.admin, "project_id": who.project_id}

    @app.get("/dashboard/api/sessions", tags=["dashboard"], responses=errors(401, 413))
    def dashboard_sessions(who: Caller) -> dict[str, Any]:
        """The sessions the caller may see, newest first, with state, progress
        and ETA: every session for the admin, the sessions its project is
        part of for a project token."""
        rows = []
        for view in reversed(engine.list_sessions()):
            if who.admin:
                rows.append(session_row(view))
            elif who.project_id in view.projects:
                awaiting = _awaiting(engine, view, who.project_id)
                rows.append(session_row(view, project_id=who.project_id, awaiting=awaiting))
        return {"now": engine.clock.now().isoformat(), "sessions": rows}

    @app.get(
        "/dashboard/api/sessions/{session_id}",
        tags=["dashboard"],
        responses=errors(400, 401, 404, 413),
    )
    def dashboard_session(session_id: str, who: Caller) -> dict[str, Any]:
        """One session's page data: host lanes, waves, groups against their
        limits, questions and deadlines, stuck work, notifications per
        project, and (for the admin) which controls apply now. A project
        token gets 404 for a session its project is not part of."""
        view = engine.get_session(session_id)
        mine = who.acting_project()
        if mine is not None and mine not in view.projects:
            raise NotFound("session", session_id, session_id=session_id)
        shown = list(view.projects) if mine is None else [mine]
        projects = {p: engine.project_view(session_id, p) for p in shown}
        timeline = recorded_timeline(
            view,
            engine.list_operations(session_id),
            projects.values(),
            engine.list_instance_constraints(mine),
            engine.list_group_constraints(mine),
        )
        notices, refused = _recorded(engine, session_id, shown)
        return session_payload(
            view,
            timeline,
            projects,
            notices,
            now=engine.clock.now(),
            project_id=mine,
            refused=refused,
        )


def _awaiting(engine: Engine, view: SessionView, project_id: str | None) -> bool:
    if project_id is None:  # pragma: no cover - only called for project tokens
        return False
    return engine.project_view(view.session_id, project_id).reply_at is not None


def _recorded(
    engine: Engine, session_id: str, projects: Sequence[str]
) -> tuple[list[Notice], dict[str, dict[str, str]]]:
    """What the views do not carry: the ``maintenance.planned`` notifications
    the session sent to ``projects`` (with their webhook POST's state where
    one was queued), and the targets the cloud refused per instance (the
    move records since the instance last moved)."""
    wanted = set(projects)
    with engine.transaction() as orm:
        refused: dict[str, dict[str, str]] = {}
        number = select(SessionRow.number).where(SessionRow.id == session_id).scalar_subquery()
        moves = orm.execute(
            select(OperationRow.instance_id, OperationRow.status, OperationRow.params,
                   OperationRow.result, OperationRow.detail)
            .where(session_operations(number), OperationRow.kind == "move")
            .order_by(*operations_in_recorded_order())
        )  # fmt: skip
        for instance, status, params, result, detail in moves:
            if status == "done":
                refused.pop(str(instance), None)  # moved: what it waited for is over
            elif status == "failed" and (result or {}).get("refused"):
                target = (params or {}).get("target") or ""
                refused.setdefault(str(instance), {})[str(target)] = str(detail)
        rows = orm.scalars(
            select(OutboxRow).where(
                session_outbox(number), OutboxRow.signal == "maintenance_planned"
            )
        ).all()
        posts: dict[int, str] = {
            row.seq: row.state
            for row in orm.execute(
                select(WebhookRow.seq, WebhookRow.state).where(
                    WebhookRow.session_id == session_id,
                    WebhookRow.event_type.in_(PROJECT_EVENT_TYPES),
                )
            )
        }
        notices = [
            Notice(
                seq=row.seq,
                project_id=str(row.payload.get("project_id")),
                state=str(row.payload.get("state")),
                instances=len(row.payload.get("instance_ids") or []),
                sent_at=row.created_at,
                reply_at=_parse(row.payload.get("reply_at")),
                delivery=posts.get(row.seq),
            )
            for row in rows
            if row.payload.get("project_id") in wanted
        ]
    return notices, refused


def _parse(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
