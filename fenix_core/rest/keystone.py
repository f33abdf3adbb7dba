"""Keystone tokens for the REST API, as Fenix used them (``openstack`` extra).

The service validates each caller's ``X-Auth-Token`` with the Keystone v3
token API (``GET /v3/auth/tokens`` with the caller's token as
``X-Subject-Token``), authenticated with its own service credentials through
a keystoneauth1 session. A token with one of ``admin_roles`` acts as the
admin; any other token acts for the project it is scoped to. Answers are
cached until the token expires or ``cache_seconds`` pass, whichever is first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session

from .auth import Identity

__all__ = ["KeystoneAuthenticator"]


class KeystoneAuthenticator:
    """Validates Keystone tokens.

    ``session``: a keystoneauth1 session holding the service's own
    credentials (e.g. ``Session(auth=v3.Password(auth_url=..., ...))``).
    ``auth_url``: Keystone's v3 endpoint; by default the session's auth
    plug-in's ``auth_url``.
    """

    def __init__(
        self,
        session: ks_session.Session,
        *,
        auth_url: str | None = None,
        admin_roles: Iterable[str] = ("admin",),
        cache_seconds: float = 60.0,
    ) -> None:
        url = auth_url or getattr(session.auth, "auth_url", None)
        if not url:
            raise ValueError("auth_url: give it, or a session whose auth plug-in has one")
        self.session = session
        self.tokens_url = url.rstrip("/") + "/auth/tokens"
        self.admin_roles = frozenset(admin_roles)
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Identity | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Identity | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        identity, lifetime = self._validate(token)
        with self._lock:
            self._cache[token] = (now + min(self.cache_seconds, lifetime), identity)
        return identity

    def _validate(self, token: str) -> tuple[Identity | None, float]:
        try:
            response = self.session.get(
                self.tokens_url,
                headers={"X-Subject-Token": token},
                authenticated=True,
                raise_exc=False,
            )
        except ks_exceptions.ClientException:
            return None, 0.0  # Keystone unreachable: refuse, and ask again next time
        if response.status_code != 200:
            return None, self.cache_seconds
        data: dict[str, Any] = response.json().get("token", {})
        roles = {role.get("name") for role in data.get("roles", [])}
        project = (data.get("project") or {}).get("id")
        lifetime = self.cache_seconds
        expires = data.get("expires_at")
        if isinstance(expires, str):
            try:
                at = datetime.fromisoformat(expires.replace("Z", "+00:00"))
                lifetime = (at.astimezone(UTC) - datetime.now(UTC)).total_seconds()
            except ValueError:
                pass
        if lifetime <= 0:
            return None, 0.0
        if roles & self.admin_roles:
            return Identity(admin=True, project_id=project), lifetime
        if not project:
            return None, lifetime  # unscoped tokens act for nobody
        return Identity(admin=False, project_id=project), lifetime
