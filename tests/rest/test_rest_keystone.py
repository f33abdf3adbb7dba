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


def test_the_token_cache_stays_bounded_under_a_flood_of_bad_tokens(
    keystone: FakeKeystone,
) -> None:
    auth = authenticator(keystone)
    auth = KeystoneAuthenticator(auth.session, cache_size=50, refusal_cache_size=200)
    assert auth.authenticate("member-tok") is not None
    # Keystone's answer is replaced by a local refusal: the flood must not
    # depend on 100,000 HTTP round trips to show the bound.
    auth._validate = lambda token: (None, 5.0)  # type: ignore[method-assign]
    for n in range(100_000):
        assert auth.authenticate(f"bad-{n}") is None
        if n % 10_000 == 0:
            assert auth.cached() <= 50 + 200
    assert len(auth._refused) == 200
    assert len(auth._valid) == 1
    # The flood evicted no valid token: it is still answered from the cache.
    assert auth.authenticate("member-tok") == Identity(admin=False, project_id="pa")
    assert keystone.validations.count("member-tok") == 1


def test_refusals_are_cached_briefly_and_keystone_failures_not_at_all(
    keystone: FakeKeystone, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("fenix_core.rest.keystone.time.monotonic", lambda: clock[0])
    auth = KeystoneAuthenticator(authenticator(keystone).session, refusal_seconds=5)
    assert auth.authenticate("forged") is None
    assert auth.authenticate("forged") is None
    assert keystone.validations == ["forged"]
    clock[0] += 6
    assert auth.authenticate("forged") is None
    assert keystone.validations == ["forged", "forged"]


def test_admin_roles_are_configurable(keystone: FakeKeystone) -> None:
    session = authenticator(keystone).session
    USERS["operator-tok"] = {
        "project": {"id": "ops"},
        "roles": [{"name": "maintenance-admin"}],
        "expires_at": SOON,
    }
    try:
        default = KeystoneAuthenticator(session)
        assert default.authenticate("operator-tok") == Identity(admin=False, project_id="ops")
        custom = KeystoneAuthenticator(session, admin_roles=["maintenance-admin"])
        assert custom.authenticate("operator-tok") == Identity(admin=True, project_id="ops")
        assert custom.authenticate("admin-tok") == Identity(admin=False, project_id="admin-p")
    finally:
        del USERS["operator-tok"]
    with pytest.raises(ValueError, match="admin_roles"):
        KeystoneAuthenticator(session, admin_roles=[])


def test_fenix_api_takes_admin_roles_for_keystone(
    keystone: FakeKeystone, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fenix_core.rest.cli import _authenticator, parser

    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  fenix:\n    auth:\n"
        f"      auth_url: {keystone.server.url}/v3\n"
        "      username: fenix\n      password: pw\n      project_name: service\n"
        "      user_domain_id: default\n      project_domain_id: default\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    args = parser().parse_args(
        ["--keystone-cloud", "fenix", "--admin-role", "member", "--admin-role", "ops"]
    )
    auth = _authenticator(args)
    assert isinstance(auth, KeystoneAuthenticator)
    assert auth.admin_roles == {"member", "ops"}
    assert auth.authenticate("member-tok") == Identity(admin=True, project_id="pa")
    with pytest.raises(SystemExit):
        parser().parse_args(["--keystone-cloud", "x", "--token-file", "t.json"])
    with pytest.raises(SystemExit):
        _authenticator(parser().parse_args(["--token-file", "t.json", "--admin-role", "x"]))
