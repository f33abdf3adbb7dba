"""The Keystone token validator against a tiny fake Keystone (real HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from werkzeug.wrappers import Request, Response

from fenix_core.rest import Identity
from fenix_core.rest.keystone import KeystoneAuthenticator
from fenix_core.testing.http_server import LoopbackServer

SOON = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
PAST = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
USERS = {
    "admin-tok": {"project": {"id": "admin-p"}, "roles": [{"name": "admin"}], "expires_at": SOON},
    "member-tok": {"project": {"id": "pa"}, "roles": [{"name": "member"}], "expires_at": SOON},
    "unscoped-tok": {"roles": [], "expires_at": SOON},
    "expired-tok": {"project": {"id": "pa"}, "roles": [], "expires_at": PAST},
}


class FakeKeystone:
    """POST /v3/auth/tokens issues the service token; GET validates others."""

    def __init__(self) -> None:
        self.validations: list[str] = []
        self.server = LoopbackServer(self._app)

    def _app(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        if request.path != "/v3/auth/tokens":
            return Response("", status=404)(environ, start_response)
        if request.method == "POST":
            body = {"token": {"expires_at": SOON, "project": {"id": "service"}, "roles": []}}
            response = Response(json.dumps(body), status=201, mimetype="application/json")
            response.headers["X-Subject-Token"] = "service-tok"
            return response(environ, start_response)
        if request.headers.get("X-Auth-Token") != "service-tok":
            return Response("", status=401)(environ, start_response)
        subject = request.headers.get("X-Subject-Token", "")
        self.validations.append(subject)
        token = USERS.get(subject)
        if token is None:
            return Response("", status=404)(environ, start_response)
        body = json.dumps({"token": token})
        return Response(body, status=200, mimetype="application/json")(environ, start_response)


@pytest.fixture
def keystone() -> Iterator[FakeKeystone]:
    fake = FakeKeystone()
    with fake.server:
        yield fake


def authenticator(keystone: FakeKeystone) -> KeystoneAuthenticator:
    auth = v3.Password(
        auth_url=keystone.server.url + "/v3",
        username="fenix",
        password="pw",
        project_name="service",
        user_domain_id="default",
        project_domain_id="default",
    )
    return KeystoneAuthenticator(ks_session.Session(auth=auth))


def test_keystone_roles_and_projects(keystone: FakeKeystone) -> None:
    auth = authenticator(keystone)
    assert auth.authenticate("admin-tok") == Identity(admin=True, project_id="admin-p")
    assert auth.authenticate("member-tok") == Identity(admin=False, project_id="pa")
    assert auth.authenticate("unscoped-tok") is None
    assert auth.authenticate("expired-tok") is None
    assert auth.authenticate("forged") is None


def test_keystone_answers_are_cached(keystone: FakeKeystone) -> None:
    auth = authenticator(keystone)
    for _ in range(3):
        assert auth.authenticate("member-tok") is not None
        assert auth.authenticate("forged") is None
    assert keystone.validations == ["member-tok", "forged"]


def test_keystone_unreachable_refuses() -> None:
    auth = v3.Token(auth_url="http://127.0.0.1:9/v3", token="x")
    assert KeystoneAuthenticator(ks_session.Session(auth=auth)).authenticate("member-tok") is None
