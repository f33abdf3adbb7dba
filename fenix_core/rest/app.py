"""The Fenix v1 compatible HTTP API over an :class:`~fenix_core.Engine`.

Thin on purpose: each route authenticates, checks the JSON shape, translates
Fenix's field names where they differ, calls one engine method (with the
caller's project as ``project_id=`` where the engine checks ownership) and
turns the result into JSON. Routes are plain functions, so the server runs
them in its worker threads; the engine serialises its own calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

import attrs
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from ..engine import Engine
from ..metrics import EngineCollector
from ..model import ProjectView, SessionView
from ..states import InstanceState
from .auth import Authenticator, Identity
from .dashboard import install_dashboard
from .http_errors import ApiError, install_error_handlers
from .limits import BodySizeLimit
from .schemas import (
    ApproveBody,
    ErrorBody,
    GroupBody,
    InstanceBody,
    ProjectReplyBody,
    SessionBody,
    SessionCreatedBody,
    SessionListBody,
    SessionUpdateBody,
    SessionViewBody,
    SubscriptionBody,
)
from .webhooks import WebhookOutbox, WebhookTarget

__all__ = ["DEFAULT_MAX_BODY", "create_app"]

DEFAULT_MAX_BODY = 1 << 20
#: Fenix workflow names that have a fenix-core equivalent under another name.
_WORKFLOW_ALIASES = {"default": "rolling", "vnf": "constrained"}
_CHOICE_STATES = ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE")
#: Acknowledgements of notifications that expect no reply, sent by Tacker.
_NOTICE_ACKS = ("ACK_INSTANCE_ACTION_DONE",)


def _identity(
    request: Request,
    x_auth_token: Annotated[str | None, Header(description="admin or project token")] = None,
) -> Identity:
    if not x_auth_token:
        raise ApiError(401, "X-Auth-Token header required")
    authenticator: Authenticator = request.app.state.authenticator
    who = authenticator.authenticate(x_auth_token)
    if who is None:
        raise ApiError(401, "invalid or expired token")
    return who


def _admin(who: Annotated[Identity, Depends(_identity)]) -> Identity:
    if not who.admin:
        raise ApiError(403, "admin only")
    return who


Caller = Annotated[Identity, Depends(_identity)]
Admin = Annotated[Identity, Depends(_admin)]


def create_app(
    engine: Engine,
    authenticator: Authenticator,
    *,
    outbox: WebhookOutbox | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    health: Callable[[], Mapping[str, Any]] | None = None,
    metrics_token: bool = True,
) -> FastAPI:
    """The ASGI app. ``outbox`` enables the subscription routes (without it
    they answer 404); ``health`` adds to ``GET /healthz`` (a ``"status"`` other
    than ``"ok"`` makes it answer 503). ``GET /metrics`` takes an admin token
    (``X-Auth-Token`` or ``Authorization: Bearer``) unless ``metrics_token``
    is False (the network keeps scrapers apart instead)."""
    app = FastAPI(
        title="fenix-core",
        version="1",
        description="Rolling infrastructure maintenance, compatible with the Fenix v1 API.",
    )
    app.state.authenticator = authenticator
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_body)

    def own_project(who: Identity, project_id: str) -> None:
        if not who.admin and who.project_id != project_id:
            raise ApiError(403, f"this token acts for project {who.project_id!r} only")

    # ------------------------------------------------------------------ health

    @app.get(
        "/healthz",
        tags=["service"],
        responses={
            200: {"description": "healthy", "content": _HEALTH},
            503: {"description": "not healthy", "content": _HEALTH},
            **_errors(413),
        },
    )
    def healthz() -> JSONResponse:
        """Liveness: the engine's database answers and its loop runs."""
        engine.next_wake()
        report: dict[str, Any] = {"status": "ok", **(health() if health else {})}
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, webhooks=outbox))

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format (docs/metrics.md lists the metrics)",
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            },
            **_errors(*((401, 403, 413) if metrics_token else (413,))),
        },
    )
    def metrics(
        request: Request,
        x_auth_token: Annotated[str | None, Header(description="an admin token")] = None,
        authorization: Annotated[
            str | None, Header(description="Bearer and an admin token (Prometheus' way)")
        ] = None,
    ) -> Response:
        """The engine's metrics for Prometheus: sessions, hosts, waits, stuck
        work, operations, outbox and webhook queues."""
        if metrics_token:
            token = x_auth_token
            scheme, _, credentials = (authorization or "").partition(" ")
            if not token and scheme.lower() == "bearer":
                token = credentials.strip()
            who = _identity(request, token or None)
            _admin(who)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ admin

    @app.post(
        "/v1/maintenance",
        tags=["admin"],
        responses=_answers(SessionCreatedBody, 400, 401, 403, 409, 413),
    )
    def create_session(body: SessionBody, _: Admin) -> dict[str, Any]:
        """Start a maintenance session: every field of the Python API's
        SessionRequest (Fenix's body plus fenix-core's options). 200."""
        request = body.model_dump(mode="json", exclude_none=True)
        workflow = request.get("workflow", "rolling")
        alias = _WORKFLOW_ALIASES.get(workflow)
        if workflow not in engine.plugins.workflows and alias in engine.plugins.workflows:
            request["workflow"] = alias
        session_id = engine.create_session(request)
        return {"session_id": session_id, "state": engine.get_session(session_id).state}

    @app.get("/v1/maintenance", tags=["admin"], responses=_answers(SessionListBody, 401, 403, 413))
    def list_sessions(_: Admin) -> dict[str, Any]:
        """Every session: ``session_id`` lists the ids (as Fenix), ``sessions`` the views."""
        views = engine.list_sessions()
        return {
            "session_id": [v.session_id for v in views],
            "sessions": [_jsonable(v) for v in views],
        }

    @app.get(
        "/v1/maintenance/{session_id}",
        tags=["admin"],
        responses=_answers(SessionViewBody, 400, 401, 403, 404, 413),
    )
    def get_session(session_id: str, _: Admin) -> dict[str, Any]:
        """The session view: hosts, projects, ``paused``, ``waiting`` (why no
        host starts now), ``stuck`` work, ``progress`` (with the ETA)."""
        return _jsonable(engine.get_session(session_id))

    @app.post(
        "/v1/maintenance/{session_id}/pause",
        tags=["admin"],
        responses=_answers(SessionViewBody, 400, 401, 403, 404, 409, 413),
    )
    def pause_session(session_id: str, _: Admin) -> dict[str, Any]:
        """Pause: no new host or move starts; work under way finishes. 200, the view."""
        return _jsonable(engine.pause(session_id))

    @app.post(
        "/v1/maintenance/{session_id}/resume",
        tags=["admin"],
        responses=_answers(SessionViewBody, 400, 401, 403, 404, 409, 413),
    )
    def resume_session(session_id: str, _: Admin) -> dict[str, Any]:
        """Resume a paused session. 200, the view."""
        return _jsonable(engine.resume(session_id))

    @app.post(
        "/v1/maintenance/{session_id}/cancel",
        tags=["admin"],
        responses=_answers(SessionViewBody, 400, 401, 403, 404, 409, 413),
    )
    def cancel_session(session_id: str, _: Admin) -> dict[str, Any]:
        """Cancel: hosts out of service are brought back, then the session
        ends cancelled. 200, the view."""
        return _jsonable(engine.cancel(session_id))

    @app.post(
        "/v1/maintenance/{session_id}/approve",
        tags=["admin"],
        responses=_answers(SessionViewBody, 400, 401, 403, 404, 409, 413, 502),
    )
    def approve_session(
        session_id: str, _: Admin, body: ApproveBody | None = None
    ) -> dict[str, Any]:
        """Approve the plan of a session awaiting approval: the cloud is read
        again; if the plan still fits the session starts (200, the view),
        otherwise it is re-planned and keeps waiting (409, type ``replanned``,
        with the new ``plan_id`` and the ``changes``). ``plan_id`` in the body
        refuses (409) a plan other than the one reviewed."""
        plan_id = body.plan_id if body is not None else None
        return _jsonable(engine.approve_session(session_id, plan_id))

    @app.put(
        "/v1/maintenance/{session_id}",
        tags=["admin"],
        responses=_answers(SessionViewBody, 400, 401, 403, 404, 409, 413),
    )
    def update_session(session_id: str, body: SessionUpdateBody, _: Admin) -> dict[str, Any]:
        """Move ``maintenance_at`` or retry a failed session."""
        change = body.model_dump(mode="json", exclude_unset=True)
        return _jsonable(engine.update_session(session_id, change))

    @app.delete(
        "/v1/maintenance/{session_id}",
        tags=["admin"],
        responses=_errors(400, 401, 403, 404, 409, 413),
    )
    def delete_session(session_id: str, _: Admin) -> dict[str, Any]:
        """Forget a session that is not running. 200 with a body, as Fenix
        answered (Fenix-era admin tools check for 200)."""
        engine.delete_session(session_id)
        return {"session_id": session_id, "deleted": True}

    # ------------------------------------------------------------------ project

    @app.get(
        "/v1/maintenance/{session_id}/{project_id}",
        tags=["project"],
        responses=_errors(400, 401, 403, 404, 413),
    )
    def project_instances(session_id: str, project_id: str, who: Caller) -> dict[str, Any]:
        """The project's instances that the current notification is about."""
        own_project(who, project_id)
        view = engine.project_view(session_id, project_id)
        return {**_jsonable(view), "instance_ids": _asked_about(view)}

    @app.put(
        "/v1/maintenance/{session_id}/{project_id}",
        tags=["project"],
        responses=_errors(400, 401, 403, 404, 409, 413),
    )
    def project_reply(
        session_id: str, project_id: str, body: ProjectReplyBody, who: Caller
    ) -> dict[str, Any]:
        """The project's reply to the notification it was sent."""
        own_project(who, project_id)
        for field, value, expected in (
            ("session_id", body.session_id, session_id),
            ("project_id", body.project_id, project_id),
        ):
            if value is not None and value != expected:
                raise ApiError(400, f"does not match the URL ({expected})", field=field)
        if body.state in _NOTICE_ACKS:
            # Tacker's Fenix plug-in acknowledges INSTANCE_ACTION_DONE too
            # (Fenix stored any state): accepted, and nothing to act on.
            engine.project_view(session_id, project_id)
            return {"session_id": session_id, "project_id": project_id, "state": body.state}
        actions = _instance_actions(
            body, lambda: _pending_choice(engine.project_view(session_id, project_id))
        )
        engine.reply(session_id, project_id, body.state, actions)
        return {"session_id": session_id, "project_id": project_id, "state": body.state}

    # ------------------------------------------------------------------ constraints

    def acting(who: Identity, data: dict[str, Any]) -> str | None:
        if who.admin:
            if "project_id" not in data:
                raise ApiError(400, "required when an admin sets constraints", field="project_id")
            return None
        data.setdefault("project_id", who.project_id)
        return who.project_id

    def holder(who: Identity, project_id: str | None) -> str | None:
        """Whose row a GET/DELETE means: the caller's project; an admin may
        name one with ``?project_id=`` (needed when two projects hold the id)."""
        if project_id is not None:
            own_project(who, project_id)
            return project_id
        return who.acting_project()

    def path_id(data: dict[str, Any], field: str, value: str) -> None:
        if data.setdefault(field, value) != value:
            raise ApiError(400, f"does not match the URL ({value})", field=field)

    @app.get("/v1/instance", tags=["constraints"], responses=_errors(401, 413))
    def list_instances(who: Caller) -> list[dict[str, Any]]:
        return [c.to_dict() for c in engine.list_instance_constraints(who.acting_project())]

    @app.get(
        "/v1/instance/{instance_id}",
        tags=["constraints"],
        responses=_errors(400, 401, 403, 404, 409, 413),
    )
    def get_instance(
        instance_id: str, who: Caller, project_id: str | None = None
    ) -> dict[str, Any]:
        value = engine.get_instance_constraints(instance_id, project_id=holder(who, project_id))
        return value.to_dict()

    @app.put(
        "/v1/instance/{instance_id}",
        tags=["constraints"],
        responses=_errors(400, 401, 403, 404, 409, 413),
    )
    def put_instance(instance_id: str, body: InstanceBody, who: Caller) -> dict[str, Any]:
        data = body.model_dump(exclude_unset=True)
        path_id(data, "instance_id", instance_id)
        project = acting(who, data)
        return engine.set_instance_constraints(data, project_id=project).to_dict()

    @app.delete(
        "/v1/instance/{instance_id}",
        status_code=204,
        tags=["constraints"],
        responses=_errors(400, 401, 403, 404, 409, 413),
    )
    def delete_instance(instance_id: str, who: Caller, project_id: str | None = None) -> Response:
        engine.delete_instance_constraints(instance_id, project_id=holder(who, project_id))
        return Response(status_code=204)

    @app.get("/v1/instance_group", tags=["constraints"], responses=_errors(401, 413))
    def list_groups(who: Caller) -> list[dict[str, Any]]:
        return [c.to_dict() for c in engine.list_group_constraints(who.acting_project())]

    @app.get(
        "/v1/instance_group/{group_id}",
        tags=["constraints"],
        responses=_errors(400, 401, 403, 404, 409, 413),
    )
    def get_group(group_id: str, who: Caller, project_id: str | None = None) -> dict[str, Any]:
        return engine.get_group_constraints(group_id, project_id=holder(who, project_id)).to_dict()

    @app.put(
        "/v1/instance_group/{group_id}",
        tags=["constraints"],
        responses=_errors(400, 401, 403, 404, 409, 413),
    )
    def put_group(group_id: str, body: GroupBody, who: Caller) -> dict[str, Any]:
        data = body.model_dump(exclude_unset=True)
        path_id(data, "group_id", group_id)
        project = acting(who, data)
        return engine.set_group_constraints(data, project_id=project).to_dict()

    @app.delete(
        "/v1/instance_group/{group_id}",
        status_code=204,
        tags=["constraints"],
        responses=_errors(400, 401, 403, 404, 409, 413),
    )
    def delete_group(group_id: str, who: Caller, project_id: str | None = None) -> Response:
        engine.delete_group_constraints(group_id, project_id=holder(who, project_id))
        return Response(status_code=204)

    # ------------------------------------------------------------------ subscriptions

    def require_outbox() -> WebhookOutbox:
        if outbox is None:
            raise ApiError(404, "webhook delivery is not enabled on this service")
        return outbox

    @app.get("/v1/subscription", tags=["subscription"], responses=_errors(401, 403, 404, 413))
    def list_subscriptions(_: Admin) -> list[dict[str, str]]:
        return [t.to_dict() for t in require_outbox().list_targets()]

    @app.get(
        "/v1/subscription/{project_id}",
        tags=["subscription"],
        responses=_errors(400, 401, 403, 404, 413),
    )
    def get_subscription(project_id: str, who: Caller) -> dict[str, str]:
        own_project(who, project_id)
        return require_outbox().get_target(project_id).to_dict()

    @app.put(
        "/v1/subscription/{project_id}",
        tags=["subscription"],
        responses=_errors(400, 401, 403, 404, 413),
    )
    def put_subscription(project_id: str, body: SubscriptionBody, who: Caller) -> dict[str, str]:
        """Register the URL that gets the project's maintenance notifications."""
        own_project(who, project_id)
        target = WebhookTarget(project_id=project_id, **body.model_dump())
        return require_outbox().set_target(target).to_dict()

    @app.delete(
        "/v1/subscription/{project_id}",
        status_code=204,
        tags=["subscription"],
        responses=_errors(400, 401, 403, 404, 413),
    )
    def delete_subscription(project_id: str, who: Caller) -> Response:
        own_project(who, project_id)
        require_outbox().delete_target(project_id)
        return Response(status_code=204)

    install_dashboard(app, engine, _identity, _errors)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


#: Why each error status is answered (the body is always ErrorBody).
_ERROR_MEANINGS = {
    400: "bad input: malformed JSON, a wrong field or value, an id that cannot be one "
    "(field names it)",
    401: "no X-Auth-Token, or one that is not valid",
    403: "an admin-only route, or another project's resource",
    404: "no such session, project, constraint or subscription",
    409: "valid, but not in the current state (an approval that re-planned: type replanned, "
    "with plan_id and changes)",
    413: "the request body is larger than the service takes",
    502: "the cloud could not be read",
}
_HEALTH = {"application/json": {"schema": {"type": "object", "additionalProperties": True}}}


def _answers(model: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's 200 answer and its error answers."""
    return {200: {"model": model, "description": "OK"}, **_errors(*statuses)}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route gives, for its OpenAPI description."""
    return {
        status: {"model": ErrorBody, "description": _ERROR_MEANINGS[status]} for status in statuses
    }


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's description without the 422 it adds to every route with
    parameters: this service answers bad input with 400 and an ErrorBody."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _instance_actions(body: ProjectReplyBody, pending: Callable[[], list[str]]) -> dict[str, str]:
    """The reply's instance actions. ``instance_action`` without
    ``instance_ids`` (as the OPNFV Doctor VNFM and Tacker's Fenix plug-in
    answer) is for the instances the pending question named: ``pending()``."""
    if body.instance_action is None:
        return dict(body.instance_actions or {})
    if body.instance_actions:
        raise ApiError(
            400,
            "give instance_actions, or instance_ids with instance_action",
            field="instance_action",
        )
    if body.instance_ids:
        return dict.fromkeys(body.instance_ids, body.instance_action)
    if body.state.partition("_")[2] not in _CHOICE_STATES:
        raise ApiError(
            400,
            "only a reply to PREPARE_MAINTENANCE or PLANNED_MAINTENANCE carries an instance_action",
            field="instance_action",
        )
    # No question pending: the engine says why the reply is not awaited.
    return dict.fromkeys(pending(), body.instance_action)


def _pending_choice(view: ProjectView) -> list[str]:
    """The instances a pending PREPARE/PLANNED_MAINTENANCE question is about
    (none when the project is not being asked to choose actions)."""
    if view.state in _CHOICE_STATES and view.reply_at is not None:
        return [i.instance_id for i in view.instances if i.state == InstanceState.ACTION_REQUESTED]
    return []


def _asked_about(view: ProjectView) -> list[str]:
    """While a project chooses instance actions, the instances it is asked
    about; otherwise all of its instances in the session (as Fenix listed)."""
    return _pending_choice(view) or list(view.instance_ids)


def _jsonable(view: SessionView | ProjectView) -> dict[str, Any]:
    def serialise(_inst: object, _field: object, value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    return attrs.asdict(view, value_serializer=serialise)
