"""pytest fixtures for testing workflows and managers.

Opt in from your ``conftest.py`` (they are not loaded into every pytest run of
every project that has fenix-core installed)::

    pytest_plugins = ["fenix_core.testing.pytest_plugin"]

* ``fenix_clock``: a :class:`~fenix_core.clock.SimClock`.
* ``fenix_cloud``: an empty :class:`~fenix_core.testing.SimulatedCloud`.
* ``fenix_engine_factory``: ``factory(*plugins, **engine_kwargs)`` returns an
  Engine on the clock and the cloud plus those plug-ins; closed after the test.
* ``fenix_engine``: ``fenix_engine_factory()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..clock import SimClock
from ..engine import Engine
from .cloud import SimulatedCloud

EngineFactory = Callable[..., Engine]


@pytest.fixture
def fenix_clock() -> SimClock:
    return SimClock()


@pytest.fixture
def fenix_cloud() -> SimulatedCloud:
    return SimulatedCloud()


@pytest.fixture
def fenix_engine_factory(
    fenix_clock: SimClock, fenix_cloud: SimulatedCloud
) -> Iterator[EngineFactory]:
    engines: list[Engine] = []

    def factory(*plugins: object, **kwargs: Any) -> Engine:
        kwargs.setdefault("load_entry_points", False)
        engine = Engine(clock=fenix_clock, plugins=[fenix_cloud, *plugins], **kwargs)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.close()


@pytest.fixture
def fenix_engine(fenix_engine_factory: EngineFactory) -> Engine:
    return fenix_engine_factory()
