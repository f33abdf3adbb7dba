"""Fixtures for the Kubernetes plug-in tests: a fake apiserver on the test's
SimClock, and engines with a KubernetesCloud pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("kubernetes")

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core_k8s import KubernetesCloud
from fenix_core_k8s.testing import FakeApiServer


@pytest.fixture
def fake(fenix_clock: SimClock) -> Iterator[FakeApiServer]:
    with FakeApiServer(clock=fenix_clock) as server:
        yield server


@pytest.fixture
def k8s_engine(fake: FakeApiServer, fenix_clock: SimClock) -> Iterator[Callable[..., Engine]]:
    """make(*plugins, **KubernetesCloud options) -> an Engine on the fake cluster."""
    engines: list[Engine] = []

    def make(*plugins: object, **options: Any) -> Engine:
        cloud = KubernetesCloud(api_client=fake.api_client(), **options)
        engine = Engine(clock=fenix_clock, plugins=[cloud, *plugins], load_entry_points=False)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
