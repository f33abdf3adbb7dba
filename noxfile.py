"""Developer tasks. `nox` runs lint, types and tests; `nox -s demo` runs the main example."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "types", "tests"]
nox.options.error_on_missing_interpreters = True

SOURCES = [
    "fenix_core",
    "fenix_core_openstack",
    "fenix_core_k8s",
    "tests",
    "examples",
    "docs/gen_states.py",
    "noxfile.py",
]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite with coverage of fenix_core (fails under 90%)."""
    session.install("-e", ".[dev]")
    session.run(
        "pytest",
        "-n",
        "2",
        "--cov=fenix_core",
        "--cov-report=term-missing:skip-covered",
        "--cov-fail-under=90",
        *session.posargs,
        # 5: the marker/keyword selection matched no test, which is not a failure.
        success_codes=[0, 5],
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict on the library."""
    session.install("-e", ".[dev]")
    session.run("mypy", "fenix_core")


@nox.session
def demo(session: nox.Session) -> None:
    """The main example: a simulated rolling upgrade with a live display.

    Pass options after --, e.g. `nox -s demo -- --plain --speed 0`.
    """
    session.install(".[cli]")
    session.run("python", "examples/rolling_upgrade.py", *session.posargs)
