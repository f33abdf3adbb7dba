"""Errors as HTTP answers, in one place.

Every error body is ``{"error": {"type", "field", "message"}}``; ``field`` is
the offending field as a dotted path (``actions[0].type``), or null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    CloudError,
    Conflict,
    FenixError,
    Forbidden,
    InvalidInput,
    NotFound,
    PluginError,
)

__all__ = ["ApiError", "error_response", "install_error_handlers"]

#: fenix_core.errors -> (HTTP status, error type). The first match wins.
_FENIX_ERRORS: Sequence[tuple[type[FenixError], int, str]] = (
    (InvalidInput, 400, "invalid_input"),
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
    status: int, message: str, *, field: str | None = None, type_: str | None = None
) -> JSONResponse:
    body = {
        "error": {
            "type": type_ or _STATUS_TYPES.get(status, "error"),
            "field": field,
            "message": message,
        }
    }
    headers = {"WWW-Authenticate": 'Token realm="fenix"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def field_path(loc: Sequence[Any]) -> str | None:
    """A pydantic location as a dotted path; the leading "body" is dropped."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "path", "query", "header") else loc)
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or None


def _fenix_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FenixError)
    for cls, status, type_ in _FENIX_ERRORS:
        if isinstance(exc, cls):
            field = exc.field if isinstance(exc, InvalidInput) else None
            message = exc.reason if isinstance(exc, InvalidInput) else exc.message
            return error_response(status, message, field=field, type_=type_)
    raise AssertionError("FenixError is the last entry")  # pragma: no cover


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    kind = first.get("type", "")
    if kind == "json_invalid":
        return error_response(400, f"malformed JSON: {first.get('msg')}", field="body")
    field = field_path(first.get("loc", ()))
    if kind == "extra_forbidden":
        return error_response(400, "unknown field", field=field)
    if kind == "missing" and field is None:
        return error_response(400, "a JSON body is required", field="body")
    return error_response(400, str(first.get("msg", "invalid")), field=field or "body")


def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, field=exc.field)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FenixError, _fenix_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
