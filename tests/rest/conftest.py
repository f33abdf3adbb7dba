"""Fixtures for the REST front end's tests: an engine on simulated time with a
small cloud, the app over it, and an HTTP client per role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fenix_core import Engine
from fenix_core.rest import TokenAuthenticator, WebhookOutbox, create_app
from fenix_core.testing import SimulatedCloud

ADMIN = {"X-Auth-Token": "admin-token"}
PA = {"X-Auth-Token": "pa-token"}
PB = {"X-Auth-Token": "pb-token"}
TOKENS = TokenAuthenticator(["admin-token"], {"pa-token": "pa", "pb-token": "pb"})


def small_cloud(cloud: SimulatedCloud) -> SimulatedCloud:
    """Three computes; pa has vm-a1 (cmp-0) and vm-a2 (cmp-1), pb has vm-b1 (cmp-0)."""
    for host in ("cmp-0", "cmp-1", "cmp-2"):
        cloud.add_host(host, vcpus=8)
    cloud.add_instance("vm-a1", project_id="pa", host="cmp-0", vcpus=2)
    cloud.add_instance("vm-a2", project_id="pa", host="cmp-1", vcpus=2)
    cloud.add_instance("vm-b1", project_id="pb", host="cmp-0", vcpus=2)
    return cloud


@pytest.fixture
def engine(fenix_cloud: SimulatedCloud, fenix_engine_factory: Any) -> Engine:
    small_cloud(fenix_cloud)
    engine: Engine = fenix_engine_factory()
    return engine


@pytest.fixture
def outbox(engine: Engine) -> Iterator[WebhookOutbox]:
    box = WebhookOutbox(engine, public_url="http://fenix.test").connect()
    yield box
    box.disconnect()


@pytest.fixture
def client(engine: Engine, outbox: WebhookOutbox) -> Iterator[TestClient]:
    with TestClient(create_app(engine, TOKENS, outbox=outbox, max_body=4096)) as test_client:
        yield test_client


def error_of(response: Any) -> tuple[int, str, str | None]:
    """(status, error type, field) of an error answer."""
    error = response.json()["error"]
    return response.status_code, error["type"], error["field"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the dashboard's screenshot test saved its picture (its
    ``record_property``, which reaches here from xdist workers too)."""
    for report in terminalreporter.getreports("passed"):
        for name, value in report.user_properties:
            if name == "dashboard_screenshot":
                terminalreporter.write_line(f"dashboard screenshot at 100 hosts: {value}")
