"""Who is calling: authenticators turn the ``X-Auth-Token`` header into an
:class:`Identity`.

The REST app takes any object with an ``authenticate(token) -> Identity | None``
method (the :class:`Authenticator` protocol): a plain Protocol rather than a
pluggy hook, because exactly one authenticator answers per app and the app
factory is where an embedding service chooses it. Built in:

* :class:`TokenAuthenticator`: a fixed map of admin tokens and per-project
  tokens (``fenix-api --token-file``);
* :class:`fenix_core.rest.keystone.KeystoneAuthenticator`: OpenStack Keystone
  tokens, as Fenix used (needs the ``openstack`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs

from ..errors import InvalidInput

__all__ = ["Authenticator", "Identity", "TokenAuthenticator"]


@attrs.frozen
class Identity:
    """An authenticated caller: the admin, or one project's manager.

    ``project_id`` is the project the caller acts for (None for an admin that
    is not scoped to a project).
    """

    admin: bool
    project_id: str | None = None

    def acting_project(self) -> str | None:
        """What to pass as ``project_id=`` to engine calls: None for the admin."""
        return None if self.admin else self.project_id


@runtime_checkable
class Authenticator(Protocol):
    """Turns a token into an identity, or None when the token is not valid.

    Called from a worker thread, once per request; it may block (a Keystone
    look-up) and should cache what it can.
    """

    def authenticate(self, token: str) -> Identity | None: ...


class TokenAuthenticator:
    """A fixed set of tokens: ``admin_tokens`` act as the admin,
    ``project_tokens`` maps a token to the project it acts for."""

    def __init__(
        self,
        admin_tokens: Iterable[str] = (),
        project_tokens: Mapping[str, str] | None = None,
    ) -> None:
        self._identities: dict[str, Identity] = {}
        for token, project_id in (project_tokens or {}).items():
            self._identities[_token(token, "projects")] = Identity(
                admin=False, project_id=_token(project_id, f"projects.{token[:4]}...")
            )
        for token in admin_tokens:
            self._identities[_token(token, "admin")] = Identity(admin=True)

    def authenticate(self, token: str) -> Identity | None:
        return self._identities.get(token)

    @classmethod
    def from_file(cls, path: str | Path) -> TokenAuthenticator:
        """Read a JSON token file::

            {"admin": ["<admin token>", ...],
             "projects": {"<token>": "<project id>", ...}}

        A file that cannot be read or has other keys raises InvalidInput("token_file").
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput("token_file", f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or set(data) - {"admin", "projects"}:
            raise InvalidInput("token_file", 'expected {"admin": [...], "projects": {...}}')
        admin = data.get("admin", [])
        projects = data.get("projects", {})
        if not isinstance(admin, list) or not isinstance(projects, dict):
            raise InvalidInput("token_file", '"admin" must be a list, "projects" an object')
        return cls(admin, projects)


def _token(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "tokens and project ids must be non-empty strings")
    return value
