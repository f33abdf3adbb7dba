"""`fenix sessions create | pause | resume | cancel | watch` on a database a
worker engine runs on simulated time, id prefixes, the 80-column tables and
the live view, and the messages about missing extras."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

import fenix_core.cli.sessions as cli_sessions
from fenix_core import Engine
from fenix_core.cli import main
from fenix_core.cli.display import hosts_table, session_table, sessions_table, watch_view
from fenix_core.clock import SimClock
from fenix_core.sim.scenario import load_scenario_file
from fenix_core.testing import SimulatedCloud, TimedAction

HOSTS = ["cmp-0", "cmp-1", "cmp-2", "cmp-3"]
SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"


class World:
    """A simulated cloud and clock, and a database a worker engine runs sessions from."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'fenix.db'}"
        self.clock = SimClock(start=datetime(2026, 3, 1, 1, 0, tzinfo=UTC))
        self.cloud = SimulatedCloud()
        for name in HOSTS:
            self.cloud.add_host(name, vcpus=8)
        for i, host in enumerate(HOSTS):
            self.cloud.add_instance(f"vm-{i}", "web", host)
        self.action = TimedAction("upgrade", seconds=600)
        with self.worker():
            pass  # the engine's database exists before any command

    @contextmanager
    def worker(self) -> Iterator[Engine]:
        """The engine serving the database, for a while (closing it ends its leases)."""
        with Engine(
            database_url=self.url,
            clock=self.clock,
            plugins=[self.cloud, self.action],
            load_entry_points=False,
        ) as engine:
            yield engine

    def run(self, minutes: int) -> None:
        with self.worker() as engine:
            for _ in range(minutes):
                self.clock.advance(60)
                engine.run_until_idle()

    def view(self, session_id: str) -> Any:
        with self.worker() as engine:
            return engine.get_session(session_id)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    world = World(tmp_path)
    # The command's engine reads the same simulated clock as the worker (in
    # production both read the real one): its changes are due at the same now.
    monkeypatch.setattr(cli_sessions, "Engine", functools.partial(Engine, clock=world.clock))
    plugins = ModuleType("cli_test_plugins")
    plugins.cloud = lambda: world.cloud  # type: ignore[attr-defined]
    plugins.upgrade = lambda: world.action  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cli_test_plugins", plugins)
    return world


def fenix(*args: object, code: int = 0) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def fenix_json(*args: object, code: int = 0) -> Any:
    return json.loads(fenix(*args, "--json", code=code).output)


def create(world: World, tmp_path: Path, hosts: list[str] | None = None) -> str:
    request = tmp_path / "request.yaml"
    request.write_text(
        "workflow: rolling\nactions:\n  - {plugin: upgrade, type: host}\n"
        + (f"hosts: {json.dumps(hosts)}\n" if hosts else "")
    )
    created = fenix_json(
        "sessions", "create", request, "--database-url", world.url,
        "--plugin", "cli_test_plugins:cloud", "--plugin", "cli_test_plugins:upgrade",
    )  # fmt: skip
    return str(created["session_id"])


def test_pause_resume_cancel_round_trip(world: World, tmp_path: Path) -> None:
    sid = create(world, tmp_path)
    db = ("--database-url", world.url)
    world.run(minutes=20)
    running = world.view(sid)
    assert running.state not in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")
    done_before = sum(h.state == "MAINTAINED" for h in running.hosts)

    paused = fenix_json("sessions", "pause", sid[:6], *db, "--reason", "change freeze")
    assert (paused["session_id"], paused["paused"]) == (sid, True)
    world.run(minutes=120)
    view = world.view(sid)
    assert view.paused
    # Work in flight ends, nothing new starts: at most one more host done.
    assert sum(h.state == "MAINTAINED" for h in view.hosts) <= done_before + 1
    assert not any(h.state in ("DRAINING", "IN_MAINTENANCE") for h in view.hosts)
    fenix("sessions", "pause", sid, *db, code=2)  # paused already: a Conflict

    assert fenix_json("sessions", "resume", sid, *db)["paused"] is False
    world.run(minutes=20)
    assert sum(h.state == "MAINTAINED" for h in world.view(sid).hosts) > done_before + 1

    cancelled = fenix_json("sessions", "cancel", sid, *db)
    assert cancelled["state"] == "MAINTENANCE_CANCELLED"
    world.run(minutes=60)
    assert all(world.cloud.is_enabled(h) for h in HOSTS)  # the cancelled session's host too
    watched = fenix_json("sessions", "watch", sid, *db, code=1)
    assert watched["state"] == "MAINTENANCE_CANCELLED"
    result = fenix("sessions", "watch", sid[:8], *db, code=1)
    assert "ended in MAINTENANCE_CANCELLED" in result.output
    fenix("sessions", "resume", sid, *db, code=2)  # ended: a Conflict


def test_control_refused_while_another_engine_runs_the_session(
    world: World, tmp_path: Path
) -> None:
    sid = create(world, tmp_path)
    with world.worker() as engine:
        world.clock.advance(60)
        engine.run_until_idle()  # it holds the session's lease now
        error = fenix_json("sessions", "pause", sid, "--database-url", world.url, code=2)
        assert engine.worker_id in error["error"]
        assert "pause/resume/cancel routes" in error["error"]
        assert not engine.get_session(sid).paused


def test_watch_a_finished_session_exits_with_its_state(world: World, tmp_path: Path) -> None:
    sid = create(world, tmp_path)
    world.run(minutes=24 * 60)
    assert world.view(sid).state == "MAINTENANCE_DONE"
    out = fenix("sessions", "watch", sid, "--database-url", world.url).output
    assert "ended in MAINTENANCE_DONE" in out


def test_create_from_a_scenario_file(world: World) -> None:
    scenario_file = SCENARIOS / "rolling.yaml"
    scenario = load_scenario_file(scenario_file)
    assert scenario.session.maintenance_in
    created = fenix_json(
        "sessions", "create", scenario_file, "--database-url", world.url,
        "--plugin", "cli_test_plugins:cloud", "--plugin", "cli_test_plugins:upgrade",
    )  # fmt: skip
    start = world.clock.now() + timedelta(seconds=scenario.session.maintenance_in)
    assert created["maintenance_at"] == start.isoformat()
    assert created["workflow"] == scenario.session.request.workflow
    listed = fenix_json("sessions", "list", "--database-url", world.url)
    assert [s["session_id"] for s in listed] == [created["session_id"]]


def test_create_refuses_a_bad_request_naming_the_field(world: World, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow: rolling\nmax_migration_retries: many\n")
    error = fenix_json("sessions", "create", bad, "--database-url", world.url, code=2)
    assert error["field"] == "max_migration_retries"
    assert "bad.yaml" in error["error"]


def test_session_prefixes(world: World, tmp_path: Path) -> None:
    first = create(world, tmp_path, hosts=HOSTS[:2])
    second = create(world, tmp_path, hosts=HOSTS[2:])
    db = ("--database-url", world.url)
    common = next(first[:i] for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    shown = fenix_json("sessions", "show", first[: len(common) + 1], *db)
    assert shown["session_id"] == first
    error = fenix_json("sessions", "show", common, *db, code=2)
    assert error["field"] == "session_id"
    assert first in error["error"]
    assert second in error["error"]
    assert "not found" in fenix_json("sessions", "show", "zz-none", *db, code=2)["error"]


def render(renderable: Any, width: int = 80, height: int = 24) -> str:
    screen = StringIO()
    console = Console(file=screen, width=width, height=height, force_terminal=False)
    console.print(renderable)
    return screen.getvalue()


def test_tables_fit_80_columns(world: World, tmp_path: Path) -> None:
    sid = create(world, tmp_path)
    world.run(minutes=20)
    with world.worker() as engine:
        views = engine.list_sessions()
    for text in (render(sessions_table(views)), render(session_table(views[0]))):
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= 80
        assert any(sid in line for line in lines), "the session id is never cut"


def test_live_view_fits_the_terminal_and_collapses_finished_hosts(
    world: World, tmp_path: Path
) -> None:
    sid = create(world, tmp_path)
    world.run(minutes=20)
    view = world.view(sid)
    text = render(watch_view(view, height=12), height=12)
    assert len(text.splitlines()) <= 12
    assert "MAINTAINED" in text  # counted in the title...
    finished = [h.name for h in view.hosts if h.state == "MAINTAINED"]
    assert finished
    for name in finished:  # ...but not listed
        assert name not in text
    at_work = [h.name for h in view.hosts if h.state in ("DRAINING", "IN_MAINTENANCE")]
    for name in at_work:
        assert name in text
    tiny = render(hosts_table(view, height=5), height=5)
    assert "more at work" in tiny or not at_work


def test_error_hints_keep_their_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were missing
    result = fenix("plan", SCENARIOS / "rolling.yaml", "--timeline", tmp_path / "t.svg", code=2)
    assert "pip install 'fenix-core[plot]'" in result.output


def test_without_the_cli_extra_fenix_says_how_to_install_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['click'] = None\n"  # import click raises ImportError, as if not installed
        "from fenix_core.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "pip install 'fenix-core[cli]'" in done.stderr
    assert "Traceback" not in done.stderr
