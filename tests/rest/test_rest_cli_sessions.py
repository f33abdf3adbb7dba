"""`fenix sessions ... --api URL --token T`: the CLI over a real fenix-api on
127.0.0.1 (port 0, served in a thread), with the same output as on a database,
and one-line errors for refused tokens, unknown ids and unreachable URLs."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml
from click.testing import CliRunner

from fenix_core import Engine
from fenix_core.cli import main
from fenix_core.cli.api_client import ApiClient
from fenix_core.cli.display import session_table, sessions_table
from fenix_core.rest import create_app

from .conftest import TOKENS


@pytest.fixture
def api(engine: Engine) -> Iterator[str]:
    """fenix-api's routes over ``engine`` on a free port; the test steps the engine."""
    config = uvicorn.Config(
        create_app(engine, TOKENS),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "fenix-api did not start"
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["sessions", *args], env=env)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.stdout, result.stderr


def request_file(tmp_path: Path, hosts: tuple[str, ...] = ("cmp-0", "cmp-1")) -> Path:
    path = tmp_path / f"request-{'-'.join(hosts)}.yaml"
    path.write_text(yaml.safe_dump({"hosts": list(hosts), "workflow": "rolling"}))
    return path


def test_create_pause_resume_cancel_watch_over_http(
    api: str, engine: Engine, tmp_path: Path
) -> None:
    admin = ["--api", api, "--token", "admin-token"]
    code, out, err = run("create", str(request_file(tmp_path)), *admin, "--json")
    assert code == 0, err
    created = json.loads(out)
    sid = created["session_id"]
    assert engine.get_session(sid).workflow == "rolling"
    assert created["hosts"] == 2
    prefix = sid[:8]

    code, out, err = run("pause", prefix, *admin, "--json")
    assert code == 0, err
    assert json.loads(out)["paused"] is True
    assert engine.get_session(sid).paused
    code, out, err = run("resume", prefix, *admin)
    assert code == 0, err
    assert out.strip() == f"session {sid}: {engine.get_session(sid).state}"
    assert not engine.get_session(sid).paused

    # list and show print what the database path prints for the same views.
    code, out, _ = run("list", *admin)
    assert code == 0
    assert out == render(sessions_table(engine.list_sessions()))
    code, out, _ = run("list", *admin, "--json")
    assert [s["session_id"] for s in json.loads(out)] == [sid]
    code, out, _ = run("show", prefix, *admin)
    assert code == 0
    assert out.startswith(render(session_table(engine.get_session(sid))))
    code, out, _ = run("show", prefix, *admin, "--json")
    shown = json.loads(out)
    assert [h["name"] for h in shown["hosts"]] == ["cmp-0", "cmp-1"]
    assert shown["state"] == engine.get_session(sid).state

    # The client reads back every field of the view (progress, waiting, stuck too).
    engine.run_until_idle()
    with ApiClient(api, "admin-token") as client:
        assert client.get_session(sid) == engine.get_session(sid)
        assert client.get_session(sid).progress is not None

    code, out, err = run("cancel", prefix, *admin)
    assert code == 0, err
    engine.run_until_idle()
    assert engine.get_session(sid).state == "MAINTENANCE_CANCELLED"
    # watch from the environment variables, as docs/cli.md says.
    env = {"FENIX_API_URL": api, "FENIX_TOKEN": "admin-token"}
    code, out, err = run("watch", prefix, "--interval", "0.1", env=env)
    assert code == 1, err
    reason = engine.get_session(sid).reason
    assert " ".join(out.split()) == f"session {sid} ended in MAINTENANCE_CANCELLED: {reason}"
    # A refused change says what fenix-api said, on one line.
    code, out, err = run("pause", prefix, *admin)
    assert code == 2
    assert out == ""
    assert one_line(err) == (
        "error: fenix-api answered 409: session has ended (MAINTENANCE_CANCELLED) "
        "and cannot be paused"
    )


def test_project_token_is_refused_cleanly(api: str, engine: Engine, tmp_path: Path) -> None:
    for command in (["list"], ["create", str(request_file(tmp_path))]):
        code, out, err = run(*command, "--api", api, "--token", "pa-token")
        assert code == 2
        assert out == ""
        assert "Traceback" not in err
        assert (
            err
            == "error: fenix-api answered 403: admin only (these commands need an admin token)\n"
        )
    assert engine.list_sessions() == []
    code, _, err = run("list", "--api", api, "--token", "wrong")
    assert code == 2
    assert "401" in err
    assert "--token" in err


def test_unknown_and_ambiguous_prefixes_over_http(api: str, engine: Engine, tmp_path: Path) -> None:
    admin = ["--api", api, "--token", "admin-token"]
    ids = [
        json.loads(run("create", str(request_file(tmp_path, hosts)), *admin, "--json")[1])[
            "session_id"
        ]
        for hosts in (("cmp-0",), ("cmp-2",))
    ]
    code, _, err = run("show", "zzz-no-such", *admin)
    assert (code, err) == (2, "error: session 'zzz-no-such' not found\n")
    code, out, _ = run("pause", "", *admin, "--json")
    assert code == 2
    error = json.loads(out)
    assert error["field"] == "session_id"
    assert all(sid in error["error"] for sid in ids)
    assert not any(engine.get_session(sid).paused for sid in ids)


def test_unreachable_or_wrong_urls_fail_cleanly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    code, _, err = run("list", "--api", f"http://127.0.0.1:{port}", "--token", "t")
    assert code == 2
    assert one_line(err).startswith(f"error: cannot reach fenix-api at http://127.0.0.1:{port}")
    assert "Traceback" not in err
    code, _, err = run("list", "--api", "127.0.0.1:1", "--token", "t")
    assert (code, err.strip()) == (
        2,
        "error: api: expected an http:// or https:// URL, got '127.0.0.1:1'",
    )
    code, _, err = run("list", "--api", "http://x", "--database-url", "sqlite://")
    assert (code, err.strip()) == (2, "error: api: give --api or --database-url, not both")
    code, _, err = run("list")
    assert code == 2
    assert "--database-url" in err
    assert "--api" in err


def one_line(text: str) -> str:
    """Rich wraps at 80 columns under CliRunner: the message without the wrapping."""
    return " ".join(text.split())


def render(table: object) -> str:
    from rich.console import Console

    out = Console(width=80, highlight=False, record=True, force_terminal=False)
    with out.capture() as captured:
        out.print(table)
    return captured.get()
