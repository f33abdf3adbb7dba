"""A small fenix-api client for ``fenix sessions --api URL --token T``.

It speaks the routes of docs/rest.md and gives back the same
:class:`~fenix_core.model.SessionView` the local path reads from the database,
so the commands print the same tables and JSON either way. Every HTTP error
(``{"error": {...}}`` bodies) and every connection failure becomes a
:class:`~fenix_core.errors.FenixError` that the CLI prints as one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from ..errors import FenixError, FieldError, InvalidInput, Replanned
from ..model import HostView, IgnoredConstraint, Progress, SessionView, StuckWork
from ..views import build_approval_view

__all__ = ["ApiClient", "ApiError", "view_from_json"]

#: Seconds to wait for fenix-api to connect and answer one request.
TIMEOUT = 30.0


class ApiError(FenixError):
    """fenix-api answered with an error that is none of the specific kinds
    (401, 5xx), or could not be reached."""


class ApiClient:
    """The admin routes of one fenix-api, with one token."""

    def __init__(self, url: str, token: str, *, timeout: float = TIMEOUT) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput("api", f"expected an http:// or https:// URL, got {url!r}")
        if not token:
            raise InvalidInput("token", "a token is needed with --api (or $FENIX_TOKEN)")
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers={"X-Auth-Token": token}, timeout=timeout
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.close()

    def list_sessions(self) -> list[SessionView]:
        answer = self._call("GET", "/v1/maintenance")
        return [view_from_json(item) for item in answer.get("sessions", [])]

    def get_session(self, session_id: str) -> SessionView:
        return view_from_json(self._call("GET", f"/v1/maintenance/{session_id}"))

    def create_session(self, request: Mapping[str, Any]) -> str:
        # None fields are left out: fenix-api fills in its own defaults.
        body = {k: v for k, v in request.items() if v is not None}
        return str(self._call("POST", "/v1/maintenance", json=body)["session_id"])

    def control(self, session_id: str, action: str) -> SessionView:
        """``action`` is pause, resume or cancel."""
        return view_from_json(self._call("POST", f"/v1/maintenance/{session_id}/{action}"))

    def approve(self, session_id: str, plan_id: str | None = None) -> SessionView:
        """Approve the session's plan (Replanned when fenix-api re-planned it)."""
        body = {"plan_id": plan_id} if plan_id is not None else {}
        return view_from_json(
            self._call("POST", f"/v1/maintenance/{session_id}/approve", json=body)
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach fenix-api at {self.url}: {exc}") from None
        if response.is_success:
            try:
                data = response.json()
            except ValueError:
                raise ApiError(
                    f"{method} {path}: fenix-api answered {response.status_code} without JSON"
                ) from None
            if not isinstance(data, dict):
                raise ApiError(f"{method} {path}: expected a JSON object from fenix-api")
            return data
        raise _error(response)


def _error(response: httpx.Response) -> FenixError:
    """One line for an error answer: 400 keeps its fields; 401/403 say which
    token is needed; the others carry fenix-api's message and status."""
    status = response.status_code
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    message = str(error.get("message") or response.reason_phrase or "error")
    if status == 409 and error.get("type") == "replanned":
        # .../v1/maintenance/{session_id}/approve
        session_id = response.request.url.path.rstrip("/").split("/")[-2]
        return Replanned(session_id, str(error.get("plan_id")), error.get("changes") or ())
    if status == 400:
        problems = [
            FieldError(str(p.get("field") or "request"), str(p.get("message")))
            for p in error.get("errors") or ()
            if isinstance(p, dict)
        ]
        return InvalidInput.from_errors(
            problems or [FieldError(str(error.get("field") or "request"), message)]
        )
    hint = {
        401: " (check --token / $FENIX_TOKEN)",
        403: " (these commands need an admin token)",
    }.get(status, "")
    return ApiError(f"fenix-api answered {status}: {message}{hint}")


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def view_from_json(data: Mapping[str, Any]) -> SessionView:
    """The SessionView fenix-api serialised (its ``GET /v1/maintenance/{id}``)."""
    try:
        progress = data.get("progress")
        return SessionView(
            session_id=data["session_id"],
            workflow=data["workflow"],
            state=data["state"],
            percent_done=data["percent_done"],
            reason=data.get("reason"),
            hosts=tuple(
                HostView(
                    **{
                        **h,
                        "started_at": _when(h["started_at"]),
                        "finished_at": _when(h["finished_at"]),
                    }
                )
                for h in data["hosts"]
            ),
            projects=dict(data["projects"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
            maintenance_at=_when(data.get("maintenance_at")),
            request=dict(data.get("request") or {}),
            paused=bool(data.get("paused", False)),
            waiting=data.get("waiting"),
            stuck=tuple(
                StuckWork(**{**s, "since": datetime.fromisoformat(s["since"])})
                for s in data.get("stuck", ())
            ),
            progress=Progress(**{**progress, "estimated_end": _when(progress["estimated_end"])})
            if progress
            else None,
            ignored_constraints=tuple(
                IgnoredConstraint(**c) for c in data.get("ignored_constraints", ())
            ),
            approval=build_approval_view(data.get("approval")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(f"fenix-api sent a session view this client cannot read: {exc!r}") from None
