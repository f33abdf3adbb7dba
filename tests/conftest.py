"""Shared helpers for the end-to-end tests: a notification recorder and a small
cluster builder. The fixtures of fenix_core.testing (fenix_clock, fenix_cloud,
fenix_engine_factory) come from its pytest plug-in, loaded here as users do."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pg_server
import pytest
from hypothesis import settings
from sqlalchemy import func, literal, select, union_all

from fenix_core import Engine, signals
from fenix_core.clock import SimClock
from fenix_core.model import SessionView
from fenix_core.store.schema import Base
from fenix_core.testing import ScriptedManager, SimulatedCloud

# The property tests explore new random examples on every run of a
# developer's pytest; the README's test command (nox, hence CI) runs them
# derandomized, the same examples every time, so that a merge is judged on
# its own change and not on a draw (the layouts they found are pinned as
# @example or as plain tests: tests/constrained_layouts.py).
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("FENIX_HYPOTHESIS_PROFILE", "default"))

pytest_plugins = ["fenix_core.testing.pytest_plugin"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow run first, the rest in their usual order: with
    `-n 2`, a test of a minute handed out last keeps one worker busy while
    the other has nothing left to do (docs/testing.md)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """A test marked ``no_cover`` runs untraced under xdist too.

    pytest-cov pauses its own measurement around such a test. In an xdist
    worker it has started two (one as if the worker ran alone, then the
    worker's own), and pausing the second resumes the first, which then
    traces the test all the same. Inside pytest-cov's wrapper (trylast),
    every measurement still running is stopped for the test's call and
    started again after it; outside xdist there is none left to stop."""
    if item.get_closest_marker("no_cover") is None:
        return (yield)
    import coverage

    stopped: list[coverage.Coverage] = []
    while (running := coverage.Coverage.current()) is not None:
        running.stop()
        stopped.append(running)
    try:
        return (yield)
    finally:
        for measurement in reversed(stopped):
            measurement.start()


# One PostgreSQL server for each test process (a pytest-xdist worker), shared
# by every module: each test that wants one takes a new, empty database on it.
@pytest.fixture(scope="session")
def postgres() -> Iterator[pg_server.PostgresServer | None]:
    if pg_server.unavailable() is not None:
        yield None
        return
    yield from pg_server.server()


@pytest.fixture
def postgres_url(postgres: pg_server.PostgresServer | None) -> str:
    """A new, empty PostgreSQL database (the test is skipped, saying why, if
    no server can be started here)."""
    if postgres is None:
        pytest.skip(f"no PostgreSQL server: {pg_server.unavailable()}")
    return postgres.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A file SQLite database, then a PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fenix.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


class Recorder:
    """Every notification an engine sends, with the simulated time it was sent."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.log: list[tuple[datetime, str, dict[str, Any]]] = []
        self._receivers = []
        for name, signal in signals.SIGNALS.items():

            def receive(sender: Engine, payload: dict[str, Any], _name: str = name) -> None:
                self.log.append((sender.clock.now(), _name, payload))

            signal.connect(receive, sender=engine)
            self._receivers.append((signal, receive))

    def close(self) -> None:
        for signal, receive in self._receivers:
            signal.disconnect(receive, sender=self.engine)

    def of(self, signal: str) -> list[dict[str, Any]]:
        return [p for _, s, p in self.log if s == signal]

    def project_states(self, project_id: str) -> list[str]:
        return [p["state"] for p in self.of("maintenance_planned") if p["project_id"] == project_id]

    def session_states(self) -> list[str]:
        return [p["state"] for p in self.of("maintenance_session")]

    def host_log(self) -> list[tuple[datetime, str, str]]:
        return [(t, p["host"], p["state"]) for t, s, p in self.log if s == "maintenance_host"]


@pytest.fixture
def recorder_factory() -> Iterator[Any]:
    made: list[Recorder] = []

    def make(engine: Engine) -> Recorder:
        recorder = Recorder(engine)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.close()


@pytest.fixture
def managers(engine: Engine) -> Iterator[Callable[..., ScriptedManager]]:
    """make(project_id, **options) -> a ScriptedManager on the test's ``engine``
    fixture, disconnected after the test."""
    made: list[ScriptedManager] = []

    def make(project_id: str, **kwargs: Any) -> ScriptedManager:
        manager = ScriptedManager(engine, project_id, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


def fill(
    cloud: SimulatedCloud,
    layout: dict[str, list[tuple[str, str, int]]],
    *,
    vcpus: int = 8,
    controllers: int = 0,
) -> None:
    """Add computes named in ``layout`` (host -> [(instance, project, vcpus)])
    with ``vcpus`` each, and ``controllers`` controller hosts ctl-0.."""
    for index in range(controllers):
        cloud.add_host(f"ctl-{index}", type="controller", vcpus=vcpus)
    for host, instances in layout.items():
        cloud.add_host(host, vcpus=vcpus)
        for instance_id, project_id, size in instances:
            cloud.add_instance(instance_id, project_id, host, vcpus=size)


# Every table's row count in one statement, built once: the hostile-input
# properties count before and after each call.
_ROW_COUNTS = union_all(
    *(
        select(literal(name).label("name"), func.count().label("rows")).select_from(table)
        for name, table in Base.metadata.tables.items()
    )
)


def row_counts(engine: Engine) -> dict[str, int]:
    """Table name -> rows, for checking that a call wrote nothing."""
    with engine.database.connect() as connection:
        return {name: int(rows) for name, rows in connection.execute(_ROW_COUNTS)}


def drive(
    engine: Engine,
    clock: SimClock,
    sid: str,
    stop: Callable[[SessionView], bool] = lambda _v: False,
    *,
    on_step: Callable[[SessionView], None] | None = None,
) -> SessionView:
    """Run the engine on simulated time until ``stop(view)``, the session has
    ended and settled, or nothing is left to wait for (a paused session)."""
    while True:
        engine.run_until_idle()
        view = engine.get_session(sid)
        if on_step is not None:
            on_step(view)
        if stop(view):
            return view
        wake = engine.next_wake()
        if wake is None:
            return view
        clock.wait(wake, threading.Event())
