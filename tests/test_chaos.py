"""Chaos: three engine worker processes on one PostgreSQL, killed with
SIGKILL and restarted, their connections dropped by a proxy, the server
restarted, one worker's clock minutes ahead (tests/chaos_harness.py says what
is checked). Every session must end as an uninterrupted run ends it, no cloud
effect twice, no notification lost or sent twice by one process, no step
committed twice.

This is the short version (about half a minute); ``nox -s chaos`` runs the
long one. ``FENIX_CHAOS_SEED`` (printed by each run), ``FENIX_CHAOS_SECONDS``,
``FENIX_CHAOS_WORKERS`` and ``FENIX_CHAOS_SESSIONS`` replay or lengthen it."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import attrs
import pg_server
import pytest
from chaos_harness import (
    ChaosConfig,
    ChaosRun,
    Commit,
    Delivery,
    Evidence,
    SessionEvidence,
    leases_on_database_clock,
    problems,
    reference,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")

CONFIG = ChaosConfig(
    seconds=float(os.environ.get("FENIX_CHAOS_SECONDS", "12")),
    workers=int(os.environ.get("FENIX_CHAOS_WORKERS", "3")),
    sessions=int(os.environ.get("FENIX_CHAOS_SESSIONS", "6")),
    seed=int(os.environ.get("FENIX_CHAOS_SEED", "20261205")),
)


@pytest.fixture
def server(postgres: pg_server.PostgresServer | None) -> pg_server.PostgresServer:
    if postgres is None:
        pytest.skip(f"no PostgreSQL server: {pg_server.unavailable()}")
    return postgres


@pytest.mark.slow
def test_sessions_end_as_without_faults_under_chaos(
    server: pg_server.PostgresServer, tmp_path: Path
) -> None:
    expected = reference()
    assert expected.state == "MAINTENANCE_DONE"
    assert expected.migrations == {"a": 1, "b": 1, "c": 1}
    assert expected.action_runs == {"h0": 1, "h1": 1, "h2": 1}
    run = ChaosRun(tmp_path, server.new_database(), server, CONFIG)
    evidence = run.run()
    owners = Counter(c.owner for c in evidence.commits)
    print(f"chaos: faults {evidence.faults}; commits logged per worker {dict(owners)}")
    assert evidence.faults.get("SIGKILL", 0) >= 1
    assert evidence.faults.get("PostgreSQL restarts", 0) >= 1
    assert evidence.faults.get("connections dropped", 0) >= 1
    assert len(evidence.sessions) == CONFIG.sessions
    # Leases are decided on the database's clock, so the worker whose own
    # clock runs ahead takes no lease that is live by it either.
    assert leases_on_database_clock(run.url)
    found = problems(evidence, expected)
    assert found == [], f"seed {CONFIG.seed}: {found}\n{run.worker_output()}"


# --------------------------------------------------------------------------- the checks


def _clean() -> tuple[Evidence, SessionEvidence]:
    session = SessionEvidence(
        state="MAINTENANCE_DONE",
        migrations={"a": 1},
        action_runs={"h0": 1},
        seq=2,
        delivered_seq=2,
        version=3,
    )
    evidence = Evidence(
        sessions={"s1": session},
        move_keys={"s1:1": 1},
        deliveries=[
            Delivery("s1", 1, "maintenance_session", "x1", "worker-0.1"),
            Delivery("s1", 2, "maintenance_session", "x2", "worker-0.1"),
            Delivery("s1", 2, "maintenance_session", "x2", "worker-1.1"),  # after a take-over
        ],
        commits=[
            Commit("s1", 1, "worker-0", 1, "worker-0.1", at=100.0),
            Commit("s1", 2, "worker-0", 1, "worker-0.1", at=100.5),
            Commit("s1", 3, "worker-1", 2, "worker-1.1", at=103.0),  # its lease ran out
        ],
        lease_seconds=2.0,
    )
    return evidence, session


def test_the_checks_pass_a_clean_run_and_name_each_violation() -> None:
    evidence, reference = _clean()
    assert problems(evidence, reference) == []
    session = evidence.sessions["s1"]
    cases = {
        "state": attrs.evolve(session, state="MAINTENANCE_FAILED"),
        "(internal error: boom)": attrs.evolve(
            session, state="MAINTENANCE_FAILED", reason="internal error: boom"
        ),
        "migrations": attrs.evolve(session, migrations={"a": 2}),
        "action_runs": attrs.evolve(session, action_runs={"h0": 2}),
        "delivered up to": attrs.evolve(session, delivered_seq=1),
    }
    for words, changed in cases.items():
        found = problems(attrs.evolve(evidence, sessions={"s1": changed}), reference)
        assert len(found) == 1, (words, found)
        assert words in found[0], (words, found)
    d, c = evidence.deliveries, evidence.commits
    violations = {
        "duplicated": attrs.evolve(evidence, move_keys={"s1:1": 2}),
        "never delivered: seq [1]": attrs.evolve(evidence, deliveries=d[1:]),
        "never recorded": attrs.evolve(
            evidence, deliveries=[*d, Delivery("s1", 3, "maintenance_session", "x3", "w.1")]
        ),
        "different payloads": attrs.evolve(
            evidence, deliveries=[*d, attrs.evolve(d[1], digest="other", incarnation="w.2")]
        ),
        "delivered twice by worker process": attrs.evolve(evidence, deliveries=[*d, d[0]]),
        "committed 2 times": attrs.evolve(
            evidence, commits=[*c, Commit("s1", 3, "worker-2", 3, "worker-2.1")]
        ),
        "went back": attrs.evolve(evidence, commits=[*c[:2], attrs.evolve(c[2], token=0)]),
        "used by": attrs.evolve(evidence, commits=[*c[:2], attrs.evolve(c[2], token=1)]),
        "took a live lease": attrs.evolve(evidence, commits=[*c[:2], attrs.evolve(c[2], at=100.9)]),
        "logged, 3 stored": attrs.evolve(
            evidence, commits=[*c, Commit("s1", 4, "worker-1", 2, "worker-1.1")]
        ),
    }
    for words, bad in violations.items():
        found = problems(bad, reference)
        assert any(words in p for p in found), (words, found)
