"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temporary
directory, on a free loopback port, stopped and removed afterwards.

It needs Debian's ``postgresql`` package (``nox -s tests`` installs it when it
is missing and the user is root) and psycopg 3 (the ``postgres`` extra).
initdb refuses to run as root, so as root the server runs as the ``postgres``
system user that the package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresServer", "unavailable"]


def _bin_dir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable() -> str | None:
    """Why a server cannot be started here, or None if it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'fenix-core[postgres]'"
    if _bin_dir() is None:
        return (
            "PostgreSQL server binaries not found: install Debian's postgresql package "
            "(nox -s tests does so when run as root)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


def _reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may enter ``path`` and every folder above it."""
    for folder in (path, *path.parents):
        mode = os.stat(folder)
        if mode.st_uid == user.pw_uid:
            allowed = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid == user.pw_gid:
            allowed = mode.st_mode & stat.S_IXGRP
        else:
            allowed = mode.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _server_parent(user: pwd.struct_passwd | None) -> str | None:
    """Where the server's folder goes: the usual temporary folder, unless
    the server runs as ``user`` and cannot reach it (nox's temporary folder
    is inside the clone, and a clone under /root, mode 700, is out of the
    postgres user's reach: initdb then failed), then /tmp."""
    usual = Path(tempfile.gettempdir())
    if user is None or _reachable_by(usual, user):
        return None
    return "/tmp"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """``with PostgresServer() as server: server.new_database()`` -> a URL."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        assert bin_dir is not None, unavailable()
        self.bin = bin_dir
        user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="fenix-pg-", dir=_server_parent(user)))
        self.port = _free_port()
        self._databases = 0
        self._as: list[str] = []
        if user is not None:
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, text=True, cwd=self.dir)

    def start(self) -> None:
        data = self.dir / "data"
        self._run(
            str(self.bin / "initdb"), "-D", str(data), "-U", "fenix", "--auth=trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-o", options,
            "-l", str(self.dir / "server.log"), "-w", "start",
        )  # fmt: skip

    def restart(self) -> None:
        """``pg_ctl restart`` (fast shutdown): every open connection is cut,
        and new ones are refused until the server is back (the chaos test's
        fault)."""
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast",
            "-l", str(self.dir / "server.log"), "-w", "restart",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate",
                      "-w", "stop")  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)

    def new_database(self) -> str:
        """Create an empty database; return its SQLAlchemy URL (psycopg 3)."""
        import psycopg

        self._databases += 1
        name = f"fenix_{self._databases}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=fenix dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://fenix@127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def server() -> Iterator[PostgresServer]:
    """For a pytest fixture: one server, stopped at the end."""
    with PostgresServer() as started:
        yield started
