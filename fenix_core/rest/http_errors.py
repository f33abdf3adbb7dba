"""Errors as HTTP answers, in one place.

Every error body is ``{"error": {"type", "field", "message"}}``; ``field`` is
the offending field as a dotted path (``actions[0].type``), or null. A request
with several problems also gets ``errors``: every ``{"field", "message"}``,
the first being ``field`` / ``message``. An approval that re-planned (409,
type ``replanned``) also gets ``plan_id`` and ``changes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    CloudError,
    Conflict,
    FenixError,
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    PluginError,
    Replanned,
)
from ..schema import errors_of_one

__all__ = ["ApiError", "error_response", "install_error_handlers"]

#: fenix_core.errors -> (HTTP status, error type). The first match wins.
_FENIX_ERRORS: Sequence[tuple[type[FenixError], int, str]] = (
    (InvalidInput, 400, "invalid_input"),
    (Replanned, 409, "replanned"),
    (NotFound, 404, "not_found"),
    (Forbidden, 403, "forbidden"),
    (Conflict, 409, "conflict"),
    (CloudError, 502, "cloud_error"),
    (PluginError, 500, "plugin_error"),
    (FenixError, 500, "error"),
)

_STATUS_TYPES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An error raised by the HTTP layer itself (auth, path/body mismatch)."""

    def __init__(self, status: int, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_response(
    status: int,
    message: str,
    *,
    field: str | None = None,
    type_: str | None = None,
    errors: Sequence[FieldError] = (),
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {
        "type": type_ or _STATUS_TYPES.get(status, "error"),
        "field": field,
        "message": message,
        **(extra or {}),
    }
    if len(errors) > 1:
        error["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    headers = {"WWW-Authenticate": 'Token realm="fenix"'} if status == 401 else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _fenix_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FenixError)
    for cls, status, type_ in _FENIX_ERRORS:
        if isinstance(exc, cls):
            if isinstance(exc, InvalidInput):
                return error_response(
                    status, exc.reason, field=exc.field, type_=type_, errors=exc.errors
                )
            if isinstance(exc, Replanned):
                extra = {"plan_id": exc.plan_id, "changes": list(exc.changes)}
                return error_response(status, exc.message, type_=type_, extra=extra)
            return error_response(status, exc.message, type_=type_)
    raise AssertionError("FenixError is the last entry")  # pragma: no cover


_MALFORMED = ("json_invalid", "string_unicode", "unicode_decode_error")


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors()) or [{"loc": (), "msg": "invalid request", "type": ""}]
    first = raw[0]
    if first.get("type", "") in _MALFORMED:
        return error_response(400, f"malformed JSON: {first.get('msg')}", field="body")
    if first.get("type") == "missing" and len(first.get("loc", ())) <= 1:
        return error_response(400, "a JSON body is required", field="body")
    problems: list[FieldError] = []
    for error in raw:
        loc = tuple(error.get("loc", ()))
        if loc and loc[0] in ("body", "path", "query", "header"):
            loc = loc[1:]
        problems.extend(errors_of_one({**error, "loc": loc}))
    return error_response(400, problems[0].message, field=problems[0].field, errors=problems)


def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, field=exc.field)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it could not read as JSON at all (not UTF-8).
        return error_response(400, f"malformed body: {exc.detail}", field="body")
    return error_response(exc.status_code, str(exc.detail))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FenixError, _fenix_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
