"""``fenix-api``: options from the environment, the URL printed with
``--port 0``, and docs/rest.md's curl lines run as they are against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fenix_core.rest.cli import parser
from fenix_core.testing import SimulatedCloud

REST_DOC = Path(__file__).resolve().parents[2] / "docs" / "rest.md"


def test_options_come_from_the_environment_and_the_command_line_wins() -> None:
    environ = {
        "FENIX_API_TOKEN_FILE": "tokens.json",
        "FENIX_API_PORT": "0",
        "FENIX_API_PLUGIN": "a.b:make, c.d:make",
        "FENIX_API_DATABASE_URL": "sqlite:///x.db",
    }
    args = parser(environ).parse_args([])
    assert args.token_file == "tokens.json"
    assert args.port == 0
    assert args.plugin == ["a.b:make", "c.d:make"]
    assert args.database_url == "sqlite:///x.db"
    args = parser(environ).parse_args(["--port", "8080", "--database-url", "sqlite://"])
    assert (args.port, args.database_url) == (8080, "sqlite://")
    with pytest.raises(SystemExit):
        parser({}).parse_args([])  # no authentication at all
    with pytest.raises(SystemExit):
        parser({"FENIX_API_PORT": "many", "FENIX_API_TOKEN_FILE": "t"}).parse_args([])


def curl_block() -> str:
    text = REST_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Curl a session") :]
    match = re.search(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert match is not None
    return match.group(1)


@pytest.fixture
def fenix_api(tmp_path: Path) -> Iterator[str]:
    """fenix-api on a free port, configured from the environment as documented."""
    (tmp_path / "tokens.json").write_text(
        json.dumps({"admin": ["s3cret-admin"], "projects": {"tok-vnf-a": "project-a"}})
    )
    cloud = SimulatedCloud(state_path=tmp_path / "cloud.json")
    cloud.add_host("cmp-0")
    cloud.add_host("cmp-1")
    env = {
        **os.environ,
        "FENIX_API_TOKEN_FILE": "tokens.json",
        "FENIX_API_DATABASE_URL": f"sqlite:///{tmp_path / 'fenix.db'}",
        "FENIX_API_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "fenix_core.rest.cli", "--simulated-cloud", "cloud.json"]
    process = subprocess.Popen(
        [*command, "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.fullmatch(r"fenix-api serving on (http://127\.0\.0\.1:(\d+))\n", first)
        assert match is not None, first
        assert int(match.group(2)) != 0
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_documented_curl_lines_work_as_shown(fenix_api: str, tmp_path: Path) -> None:
    block = curl_block()
    # The one line a reader changes: the URL fenix-api printed.
    script = re.sub(r"^FENIX=\S+", f"FENIX={fenix_api}", block, count=1, flags=re.MULTILINE)
    assert script != block
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    views = [json.loads(part) for part in _split_json(result.stdout)]
    assert [v["paused"] for v in views] == [False, True, False, False]
    assert views[-1]["state"] == "MAINTENANCE_CANCELLED"
    assert views[0]["request"]["controls"]["max_hosts_per_hour"] == 4


def _split_json(text: str) -> list[str]:
    decoder = json.JSONDecoder()
    out, index = [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        _, end = decoder.raw_decode(text, index)
        out.append(text[index:end])
        index = end
    return out
