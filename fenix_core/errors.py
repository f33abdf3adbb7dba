"""Errors raised by fenix-core.

Every error a caller can act on derives from :class:`FenixError` and carries the
object it is about (the field, the session, the project, the instance)::

    FenixError
    ├── InvalidInput          bad request data; ``field`` names the offending field,
    │                         ``errors`` lists every problem found (FieldError)
    ├── NotFound              unknown session, project or instance; ``kind`` + ``ident``
    ├── Conflict              valid request, wrong moment (a state not awaited now,
    │   │                     a session that is still running, hosts already in a session)
    │   ├── IllegalTransition a state change that the transition table forbids
    │   └── Replanned         an approval found the cloud changed: a new plan to approve
    ├── Forbidden             a project acting on what is not its own
    ├── PluginError           a plug-in is missing, misconfigured or misbehaved
    └── CloudError            the cloud driver failed; ``host`` / ``instance_id``
                              name what it was working on

Calls that raise write nothing: validation happens before any row is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "CloudError",
    "Conflict",
    "FenixError",
    "FieldError",
    "Forbidden",
    "IllegalTransition",
    "InvalidInput",
    "NotFound",
    "PluginError",
    "Replanned",
    "TargetRefused",
]


class FenixError(Exception):
    """Base class of every error fenix-core raises on purpose."""

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.session_id = session_id

    def __str__(self) -> str:
        return self.message


class FieldError(NamedTuple):
    """One problem of a request: the field's dotted path and what is wrong."""

    field: str
    message: str


class InvalidInput(FenixError, ValueError):
    """Request data that does not validate. ``field`` is a dotted path such as
    ``"actions[1].type"`` or ``"instance_actions.vm-3"``; ``errors`` lists
    every problem found (the first is ``field`` / ``reason``)."""

    def __init__(
        self,
        field: str,
        message: str,
        *,
        session_id: str | None = None,
        errors: Sequence[FieldError] = (),
    ) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors) or (FieldError(field, message),)
        text = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        super().__init__(text, session_id=session_id)
        self.field = field
        self.reason = message

    @classmethod
    def from_errors(
        cls, errors: Sequence[FieldError], *, session_id: str | None = None
    ) -> InvalidInput:
        """One error for several problems; ``field`` names the first."""
        first = errors[0]
        return cls(first.field, first.message, session_id=session_id, errors=errors)


class NotFound(FenixError, LookupError):
    """Something named in a call does not exist (``kind`` is "session",
    "project", "instance", "action plug-in" ...)."""

    def __init__(self, kind: str, ident: str, *, session_id: str | None = None) -> None:
        super().__init__(f"{kind} {ident!r} not found", session_id=session_id)
        self.kind = kind
        self.ident = ident


class Conflict(FenixError):
    """The call is well formed but not allowed in the current state."""

    def __init__(
        self, message: str, *, session_id: str | None = None, state: str | None = None
    ) -> None:
        super().__init__(message, session_id=session_id)
        self.state = state


class IllegalTransition(Conflict):
    """A state change that the transition table does not allow."""

    def __init__(self, what: str, source: str, dest: str, *, session_id: str | None = None) -> None:
        super().__init__(
            f"illegal {what} transition {source} -> {dest}", session_id=session_id, state=source
        )
        self.what = what
        self.source = source
        self.dest = dest


class Replanned(Conflict):
    """An approval that did not start the session: the cloud or the
    constraints no longer match the plan, so the session was re-planned and
    waits for approval of the new plan ``plan_id``; ``changes`` says what
    differed, one sentence per kind of change."""

    def __init__(self, session_id: str, plan_id: str, changes: Sequence[str]) -> None:
        super().__init__(
            f"re-planned, approve again (plan {plan_id}): " + "; ".join(changes),
            session_id=session_id,
            state="AWAITING_APPROVAL",
        )
        self.plan_id = plan_id
        self.changes = tuple(changes)


class Forbidden(FenixError, PermissionError):
    """A project tried to see or answer for something that is not its own."""

    def __init__(self, project_id: str, message: str, *, session_id: str | None = None) -> None:
        super().__init__(f"project {project_id!r}: {message}", session_id=session_id)
        self.project_id = project_id


class PluginError(FenixError):
    """A plug-in is missing, misconfigured, or broke its contract."""

    def __init__(self, plugin: str, message: str, *, session_id: str | None = None) -> None:
        super().__init__(f"plug-in {plugin!r}: {message}", session_id=session_id)
        self.plugin = plugin


class CloudError(FenixError):
    """The cloud driver reported a failure."""

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        instance_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        super().__init__(message, session_id=session_id)
        self.host = host
        self.instance_id = instance_id


class TargetRefused(CloudError):
    """The cloud refused where a move was to go, at the request: the requested
    host breaks its placement rules or has no room, or its scheduler found no
    host (Nova: HTTP 400 "No valid host was found"). No move was started;
    workflows do not ask for that target again in the same move."""
