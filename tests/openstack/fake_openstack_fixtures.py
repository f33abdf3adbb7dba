"""Fixtures of the OpenStack plug-in tests: a fake cloud on a SimClock, and
engines whose cloud plug-in talks to it through the real openstacksdk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fenix_core import Engine
from fenix_core.testing import SimClock
from fenix_core_openstack import OpenStackCloud
from fenix_core_openstack.testing import FakeOpenStack


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def fake(clock: SimClock) -> Iterator[FakeOpenStack]:
    with FakeOpenStack(clock=clock, live_migration_seconds=20, migration_seconds=30) as cloud:
        yield cloud


@pytest.fixture
def make_engine(fake: FakeOpenStack, clock: SimClock) -> Iterator[Callable[..., Engine]]:
    """make_engine(*plugins, **OpenStackCloud options) -> an Engine on the fake."""
    engines: list[Engine] = []

    def make(*plugins: Any, **options: Any) -> Engine:
        options.setdefault("poll_interval", 10.0)
        cloud = OpenStackCloud(connection=fake.connect(), **options)
        engine = Engine(clock=clock, plugins=[cloud, *plugins], load_entry_points=False)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def build(
    fake: FakeOpenStack, layout: dict[str, list[tuple[str, str, int]]], vcpus: int = 8
) -> None:
    """Computes named in ``layout`` (host -> [(server, project, vcpus)])."""
    for host, servers in layout.items():
        fake.add_host(host, vcpus=vcpus)
        for server_id, project_id, size in servers:
            fake.add_server(server_id, project_id, host, vcpus=size)
