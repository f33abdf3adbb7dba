"""Keystone tokens for the REST API, as Fenix used them (``openstack`` extra).

The service validates each caller's ``X-Auth-Token`` with the Keystone v3
token API (``GET /v3/auth/tokens`` with the caller's token as
``X-Subject-Token``), authenticated with its own service credentials through
a keystoneauth1 session. A token with one of ``admin_roles`` acts as the
admin; any other token acts for the project it is scoped to.

Valid tokens are cached until they expire or ``cache_seconds`` pass, whichever
is first, in a least-recently-used cache of at most ``cache_size`` tokens;
refusals are cached for ``refusal_seconds`` only, in a separate cache of at
most ``refusal_cache_size``, so a flood of bad tokens can neither grow memory
nor evict the valid ones.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session

from .auth import Identity

__all__ = ["ExpiringCache", "KeystoneAuthenticator", "from_cloud_config"]


class ExpiringCache:
    """At most ``max_size`` entries, each until its own deadline; the least
    recently used goes first when full. Not thread-safe (the caller locks)."""

    def __init__(self, max_size: int) -> None:
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        self.max_size = max_size
        self._entries: OrderedDict[str, tuple[float, Identity | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> tuple[bool, Identity | None]:
        """(found, value) of an entry still valid at ``now``."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if entry[0] <= now:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, entry[1]

    def put(self, key: str, value: Identity | None, until: float) -> None:
        if self.max_size == 0:
            return
        self._entries[key] = (until, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)


class KeystoneAuthenticator:
    """Validates Keystone tokens.

    ``session``: a keystoneauth1 session holding the service's own
    credentials (e.g. ``Session(auth=v3.Password(auth_url=..., ...))``).
    ``auth_url``: Keystone's v3 endpoint; by default the session's auth
    plug-in's ``auth_url``. ``admin_roles``: the role names that make a token
    the admin (``fenix-api --admin-role``).
    """

    def __init__(
        self,
        session: ks_session.Session,
        *,
        auth_url: str | None = None,
        admin_roles: Iterable[str] = ("admin",),
        cache_seconds: float = 60.0,
        cache_size: int = 10_000,
        refusal_seconds: float = 5.0,
        refusal_cache_size: int = 1_000,
    ) -> None:
        url = auth_url or getattr(session.auth, "auth_url", None)
        if not url:
            raise ValueError("auth_url: give it, or a session whose auth plug-in has one")
        self.session = session
        self.tokens_url = url.rstrip("/") + "/auth/tokens"
        self.admin_roles = frozenset(admin_roles)
        if not self.admin_roles or not all(isinstance(r, str) and r for r in self.admin_roles):
            raise ValueError("admin_roles: give at least one non-empty role name")
        self.cache_seconds = cache_seconds
        self.refusal_seconds = refusal_seconds
        self._valid = ExpiringCache(cache_size)
        self._refused = ExpiringCache(refusal_cache_size)
        self._lock = threading.Lock()

    def cached(self) -> int:
        """How many answers are cached now (both caches)."""
        with self._lock:
            return len(self._valid) + len(self._refused)

    def authenticate(self, token: str) -> Identity | None:
        now = time.monotonic()
        with self._lock:
            for cache in (self._valid, self._refused):
                found, identity = cache.get(token, now)
                if found:
                    return identity
        identity, lifetime = self._validate(token)
        with self._lock:
            if identity is not None:
                self._valid.put(token, identity, now + min(self.cache_seconds, lifetime))
            elif lifetime > 0:
                self._refused.put(token, None, now + min(self.refusal_seconds, lifetime))
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
        if response.status_code in (401, 404):
            return None, self.refusal_seconds  # Keystone says no: remember briefly
        if response.status_code != 200:
            return None, 0.0  # Keystone failed: refuse, and ask again next time
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


def from_cloud_config(cloud: str, **options: Any) -> KeystoneAuthenticator:
    """A validator with the service credentials of ``cloud``, an entry of
    clouds.yaml (``OS_CLIENT_CONFIG_FILE``) or ``envvars`` for the ``OS_*``
    environment variables, as the openstack CLI reads them."""
    from openstack import config as os_config

    region = os_config.OpenStackConfig().get_one(cloud=cloud)
    return KeystoneAuthenticator(region.get_session(), **options)
