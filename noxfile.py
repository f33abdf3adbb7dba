"""Developer tasks. `nox` runs lint, then the types, tests and docs sessions'
commands in one venv (the `checks` session); `nox -s demo` runs the main example."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from xml.etree import ElementTree

import nox
import nox.command

nox.options.sessions = ["lint", "checks"]
nox.options.error_on_missing_interpreters = True
# uv makes the sessions' venvs and installs their packages: the README's
# commands install it with nox (`nox[uv]`), and it installs the checks
# session's extras in about 10 s where pip takes a minute or more. Where uv
# is missing (nox installed alone), nox falls back to virtualenv and pip.
nox.options.default_venv_backend = "uv|virtualenv"

SOURCES = [
    "fenix_core",
    "fenix_core_openstack",
    "fenix_core_k8s",
    "tests",
    "examples",
    "benchmarks",
    "docs/gen_states.py",
    "docs/conf.py",
    "docs/dashboard_screenshot.py",
    "noxfile.py",
]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite; on a full run, fails under 90% coverage of fenix_core.

    Options after -- go to pytest (`nox -s tests -- -k scale_in`). A selection
    that matches no test is not a failure (pytest's exit code 5), and the
    coverage gate only applies when the whole suite ran.
    """
    session.install("-e", ".[dev,openstack,rest,k8s]")
    _run_tests(session)


def _run_tests(session: nox.Session) -> None:
    _install_postgresql(session)
    _install_chromium(session)
    junit = Path(session.create_tmp()) / "junit.xml"
    session.run(
        "pytest",
        "-n",
        "2",
        "--cov=fenix_core",
        "--cov-report=",
        f"--junitxml={junit}",
        *session.posargs,
        success_codes=[0, 5],
        env={"FENIX_HYPOTHESIS_PROFILE": "ci"},  # tests/conftest.py: the same examples each run
    )
    ran = sum(int(suite.get("tests", 0)) for suite in ElementTree.parse(junit).iter("testsuite"))
    if ran == 0:
        session.log("no test matched the selection; nothing to check")
        return
    full_run = not session.posargs and not os.environ.get("PYTEST_ADDOPTS")
    gate = ["--fail-under=90"] if full_run else []
    session.run("coverage", "report", "--show-missing", "--skip-covered", *gate)


def _install_postgresql(session: nox.Session) -> None:
    """The PostgreSQL tests start a throwaway server from Debian's postgresql
    package."""
    present = glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb")
    _apt_install(session, "PostgreSQL server binaries", bool(present), "postgresql")


def _install_chromium(session: nox.Session) -> None:
    """The dashboard's browser tests drive Debian's headless chromium through
    its chromedriver (selenium never downloads a browser)."""
    present = shutil.which("chromium") and shutil.which("chromedriver")
    _apt_install(session, "chromium or chromedriver", bool(present), "chromium", "chromium-driver")


def _apt_install(session: nox.Session, what: str, present: bool, *packages: str) -> None:
    """Install Debian ``packages`` when ``what`` is missing and we are root
    (CI is); otherwise the tests that need them skip, saying why."""
    if present:
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        session.log(f"{what} missing and cannot install them: tests will skip")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-q", external=True, env=env)
    session.run("apt-get", "install", "-y", "-q", *packages, external=True, env=env)


@nox.session
def soak(session: nox.Session) -> None:
    """Crash-resume soak: 200 SIGKILL points (the default test run has 20).

    Not in the default sessions. `nox -s soak -- 500` sets another count."""
    session.install("-e", ".[dev]")
    points = session.posargs[0] if session.posargs else "200"
    session.run(
        "pytest",
        "tests/test_crash.py",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        env={"FENIX_CRASH_POINTS": points},
    )


@nox.session
def chaos(session: nox.Session) -> None:
    """The long chaos run: worker processes on a throwaway PostgreSQL killed,
    cut off and skewed while sessions run (tests/test_chaos.py; the default
    test run has a short one). Not in the default sessions.

    `nox -s chaos -- --seconds 300 --workers 3 --sessions 60 --seed 7`
    (these are the defaults, with a seed drawn at random and printed: pass
    it back to replay a run's faults)."""
    import argparse
    import random

    parser = argparse.ArgumentParser(prog="nox -s chaos --")
    parser.add_argument("--seconds", type=float, default=300.0, help="of faults")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=60)
    parser.add_argument("--seed", type=int, default=random.randrange(1, 2**31))
    options = parser.parse_args(session.posargs)
    session.install("-e", ".[dev,postgres]")
    _install_postgresql(session)
    session.log(f"chaos seed {options.seed}")
    session.run(
        "pytest",
        "tests/test_chaos.py",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "-k",
        "under_chaos",
        env={
            "FENIX_CHAOS_SECONDS": str(options.seconds),
            "FENIX_CHAOS_WORKERS": str(options.workers),
            "FENIX_CHAOS_SESSIONS": str(options.sessions),
            "FENIX_CHAOS_SEED": str(options.seed),
        },
    )


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks: makespan, scale (end-to-end runs), reply throughput,
    several workers on PostgreSQL.

    Not in the default sessions; prints figures, raw-sqlite3 floors from the
    same run and each target's pass/fail. Options after -- go to scale.py:
    `nox -s bench -- --huge` (adds 10,000 hosts), `-- --sizes 30,300
    --workflow rolling --timeout 600`. workers.py starts a throwaway
    PostgreSQL server (Debian's postgresql, installed as for the tests, or
    it says it skips) and runs 1 and 2 worker processes (and one per core
    where there are more); run it alone for its options. See
    docs/performance.md."""
    # The project and its own dependencies; psycopg for workers.py.
    session.install(".[postgres]")
    _install_postgresql(session)
    session.run("python", "benchmarks/makespan.py")
    session.run("python", "benchmarks/scale.py", *session.posargs)
    session.run("python", "benchmarks/replies.py")
    session.run("python", "benchmarks/workers.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict on the library and the cloud plug-ins."""
    session.install("-e", ".[dev,openstack,rest,k8s]")
    session.run(*TYPES)


TYPES = ["mypy", "fenix_core", "fenix_core_openstack", "fenix_core_k8s"]


MERMAID_VERSION = "11.12.1"


def _vendor_mermaid(session: nox.Session) -> None:
    """Mermaid's ES module build from the npm registry into docs/_static/mermaid.

    The diagrams are drawn in the reader's browser: the built site must carry
    the script, not point to a CDN (offline reading, no third-party requests).
    The files are not kept in git (13 MB); `npm pack` fetches the pinned
    version once, like pip fetches Sphinx.
    """
    target = Path("docs/_static/mermaid")
    stamp = target / f"VERSION-{MERMAID_VERSION}"
    if stamp.exists():
        return
    _install_npm(session)
    tmp = Path(session.create_tmp())
    session.run("npm", "pack", f"mermaid@{MERMAID_VERSION}", "--pack-destination", str(tmp),
                external=True)  # fmt: skip
    with tarfile.open(tmp / f"mermaid-{MERMAID_VERSION}.tgz") as archive:
        members = [
            m
            for m in archive.getmembers()
            if m.isfile()
            and not m.name.endswith(".map")
            and (
                m.name == "package/dist/mermaid.esm.min.mjs"
                or m.name.startswith("package/dist/chunks/mermaid.esm.min/")
            )
        ]
        shutil.rmtree(target, ignore_errors=True)
        for member in members:
            member.name = member.name.removeprefix("package/dist/")
            archive.extract(member, target, filter="data")
    stamp.write_text(MERMAID_VERSION + "\n")


def _install_npm(session: nox.Session) -> None:
    """npm fetches Mermaid: install Debian's npm when it is missing and we are
    root (CI is), as the tests session does for PostgreSQL; otherwise say why
    the docs cannot be built."""
    if shutil.which("npm"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        # A failed command, not an abort: `checks` still runs the other steps.
        session.log("the docs build needs npm (to fetch Mermaid for offline diagrams)")
        raise nox.command.CommandFailed("npm missing")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-q", external=True, env=env)
    session.run("apt-get", "install", "-y", "-q", "npm", external=True, env=env)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (Sphinx + MyST); warnings are errors, and so are
    references to fenix-core objects that do not exist (nitpicky).

    The HTML lands in docs/_build/html (open docs/_build/html/index.html).
    The plug-in and REST extras are installed so that the API reference
    covers them; Mermaid's JavaScript is copied next to the pages
    (docs/_static/mermaid), so the state diagrams render without a CDN.
    """
    session.install("-e", ".[docs,openstack,k8s,rest]")
    _vendor_mermaid(session)
    session.run(*_sphinx(session.posargs))


def _sphinx(options: list[str]) -> list[str]:
    return ["sphinx-build", "-W", "-n", "--keep-going", "-b", "html", "docs", "docs/_build/html",
            *options]  # fmt: skip


class _Beside:
    """A command of the session's venv run in the background, its output
    kept in a file and shown when it has ended."""

    def __init__(self, session: nox.Session, name: str, args: list[str]) -> None:
        self.name = name
        self._log = Path(session.create_tmp()) / f"{name}.log"
        env = {**os.environ, "PATH": f"{session.bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        session.log(f"{name}: {' '.join(args)} (beside the tests; its output when it ends)")
        with self._log.open("wb") as out:
            self._process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def finish(self, session: nox.Session) -> bool:
        """Wait for it, show its output; True if it succeeded."""
        code = self._process.wait()
        session.log(f"{self.name}: exit code {code}")
        print(self._log.read_text(errors="replace"), end="", flush=True)
        return code == 0

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


@nox.session
def checks(session: nox.Session) -> None:
    """What `nox` runs after lint: the commands of the types, tests and docs
    sessions, in one venv.

    Those sessions install the same extras (docs adds Sphinx); here the
    project is installed once. mypy and Sphinx run in the background while
    the tests run: the tests' two workers leave part of two cores idle
    (tests waiting on a browser, a server or real time), and the two take
    about a minute of CPU together. Their output is shown once
    the tests have ended. A step that fails does not stop the others; the
    session then fails naming it. Options after -- go to pytest, as with
    `nox -s tests`.
    """
    session.install("-e", ".[dev,docs,openstack,rest,k8s]")
    failed = []
    beside = [_Beside(session, "types", TYPES)]
    try:
        try:
            _vendor_mermaid(session)
            beside.append(_Beside(session, "docs", _sphinx([])))
        except nox.command.CommandFailed:
            failed.append("docs")
        try:
            _run_tests(session)
        except nox.command.CommandFailed:
            failed.append("tests")
        failed += [step.name for step in beside if not step.finish(session)]
    finally:
        for step in beside:
            step.stop()
    if failed:  # reported as a failure, as a failed command is, not as an abort
        session.log(f"failed: {', '.join(failed)}")
        raise nox.command.CommandFailed(f"failed: {', '.join(failed)}")


@nox.session
def demo(session: nox.Session) -> None:
    """The main example: a simulated rolling upgrade with a live display.

    Pass options after --, e.g. `nox -s demo -- --plain --speed 0`.
    """
    session.install(".[cli]")
    session.run("python", "examples/rolling_upgrade.py", *session.posargs)
