"""The tests' throwaway PostgreSQL server (tests/pg_server.py) itself."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pg_server
import pytest


@pytest.mark.skipif(pg_server.unavailable() is not None, reason=str(pg_server.unavailable()))
@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as postgres only under root")
def test_the_server_starts_when_the_temporary_folder_is_out_of_the_postgres_users_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nox's temporary folder is inside the clone: a clone under /root
    (mode 700) kept the postgres user out of it, and initdb failed."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    with pg_server.PostgresServer() as server:
        assert not server.dir.is_relative_to(private)
        assert server.new_database().startswith("postgresql+psycopg://")
