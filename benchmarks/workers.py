"""Several engine workers on one PostgreSQL (issue 19): does throughput grow
with the workers?

A throwaway PostgreSQL server (tests/pg_server.py: Debian's postgresql,
initdb + pg_ctl in a temporary directory) holds ``--sessions`` rolling
sessions of ``--hosts`` hosts each, created once and copied for every run
(``CREATE DATABASE ... TEMPLATE``). Each run starts N worker processes
(``--workers``, by default 1 and 2, and the machine's core count where it is
more) at the same instant, each an ``Engine`` with ``max_sessions=--capacity``
in ``run_forever()`` on the real clock, and ends when every session has
ended. The hosts' action and the cloud take no time (a ``TimedAction`` of
0 s; hosts disabled and enabled in a ``SimulatedCloud``), and both are shared
by the workers through state files, one per session's hosts in a temporary
directory (on /dev/shm where there is one), so a worker taking a session
over sees what another did; no instances, so no moves: every session plans
on the whole fleet, and the instances of one would move onto the hosts of
others (which is not what this measures).

Every session records the whole fleet (``--sessions`` x ``--hosts`` hosts),
as the engine's sessions over one cloud do: its hosts are the targets of its
moves, and a session follows every host of the inventory. Listing only the
session's own hosts to it is not possible with one cloud driver: the
inventory would take the hosts left out of a listing for removed.

Printed per run: wall time, sessions completed per second, committed steps,
the workers' CPU per step and the server's (the postmaster and its
backends), and the throughput and the throughput per worker as ratios
against one worker; then, per step, the session loads (a session taken over
is loaded again), the claims (with the sessions each took and those that
took none), the poller's looks (with those that found nothing) and the
database clock's own reads (``SELECT now()``); then the issue's target (2
workers >= 1.7x one) with its pass/miss. Each run is checked: every session
done, every host's action run exactly once, every host enabled again.
``--server-statements`` loads pg_stat_statements into the server and prints
its costliest statements per run (calls, total time, per call, per step);
``--busy-cores`` measures how much more CPU a fixed piece of work takes
with two processes at once than alone (the machine's share of what a step
costs more with two workers: on an idle machine one worker and its backend
take turns, two keep both vCPUs busy).

    python benchmarks/workers.py [--sessions 200] [--hosts 10] [--workers 1,2]
                                 [--capacity 50] [--lease 10] [--timeout 900]
                                 [--json] [--server-statements] [--busy-cores]

Skips, saying why, where no PostgreSQL server can be started.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.clock import Clock, RealClock
from fenix_core.hookspecs import ActionContext, hookimpl
from fenix_core.model import Host, Instance, OperationStatus
from fenix_core.store.database import open_database
from fenix_core.store.schema import SessionClockRow, SessionRow
from fenix_core.testing import SimulatedCloud, TimedAction

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pg_server  # the tests' throwaway server, shared

TARGET = (2, 1.7)  # 2 workers: at least 1.7x the throughput of one
FINAL = ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")
ACTION = "upgrade"


# --------------------------------------------------------------------------- the shared cloud


def host_name(cell: int, index: int) -> str:
    return f"c{cell:04d}-h{index:02d}"


def cell_of(name: str) -> int:
    """The cell (one session's hosts) of a host, instance or handle name."""
    return int(name[1:5])


class CellCloud:
    """A cloud driver over ``cells`` SimulatedClouds, one per session's
    hosts, each in its own state file (two workers change different files;
    one file for the fleet would lose one worker's write to the other's)."""

    name = "cells"

    def __init__(self, workdir: Path, cells: int) -> None:
        self.dir = workdir
        self.cells = cells
        self.clock: Clock = RealClock()
        self._loaded: dict[int, SimulatedCloud] = {}

    def build(self, hosts: int) -> None:
        for cell in range(self.cells):
            cloud = SimulatedCloud(0, 0, state_path=self.dir / f"cell-{cell}.json")
            for index in range(hosts):
                cloud.add_host(host_name(cell, index), vcpus=8)

    def cell(self, n: int) -> SimulatedCloud:
        found = self._loaded.get(n)
        if found is None:
            found = self._loaded[n] = SimulatedCloud(
                state_path=self.dir / f"cell-{n}.json", clock=self.clock
            )
        return found

    @hookimpl
    def fenix_cloud_driver(self, clock: Clock) -> CellCloud:
        self.clock = clock
        return self

    def list_hosts(self) -> list[Host]:
        return [h for n in range(self.cells) for h in self.cell(n).list_hosts()]

    def list_instances(self, hosts: Sequence[str] | None = None) -> list[Instance]:
        if hosts is None:
            return [i for n in range(self.cells) for i in self.cell(n).list_instances()]
        by_cell: dict[int, list[str]] = {}
        for host in hosts:
            by_cell.setdefault(cell_of(host), []).append(host)
        return [i for n, named in by_cell.items() for i in self.cell(n).list_instances(named)]

    def locate(self, instance_id: str) -> str | None:
        return self.cell(cell_of(instance_id)).locate(instance_id)

    def allowed_actions(self) -> list[str]:
        return self.cell(0).allowed_actions()

    def disable_host(self, host: str, reason: str) -> None:
        self.cell(cell_of(host)).disable_host(host, reason)

    def enable_host(self, host: str) -> None:
        self.cell(cell_of(host)).enable_host(host)

    def host_is_up(self, host: str) -> bool:
        return self.cell(cell_of(host)).host_is_up(host)

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        cell = cell_of(instance_id)
        return f"c{cell:04d}/" + self.cell(cell).start_move(instance_id, action, target, key)

    def poll_move(self, handle: str) -> OperationStatus:
        return self.cell(cell_of(handle)).poll_move(handle.split("/", 1)[1])

    def find_move(self, key: str) -> str | None:
        for n in range(self.cells):
            found = self.cell(n).find_move(key)
            if found is not None:
                return f"c{n:04d}/{found}"
        return None


class CellAction:
    """The hosts' action: a TimedAction of 0 s per cell, in its state file."""

    name = ACTION

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self._loaded: dict[int, TimedAction] = {}

    def action(self, n: int) -> TimedAction:
        found = self._loaded.get(n)
        if found is None:
            found = self._loaded[n] = TimedAction(
                ACTION, 0, state_path=self.dir / f"action-{n}.json"
            )
        return found

    @hookimpl
    def fenix_actions(self, clock: Clock) -> list[CellAction]:
        return [self]

    def start(self, context: ActionContext) -> OperationStatus:
        return self.action(cell_of(context.host or "")).start(context)

    def poll(self, context: ActionContext) -> OperationStatus:
        return self.action(cell_of(context.host or "")).poll(context)


# --------------------------------------------------------------------------- a run


#: Statements the engine's core sends that this benchmark counts by name
#: (their SQL's start): the step's fenced write, the claim, the poller's
#: look, a load of a session's working set, the database clock's read.
KINDS = {
    "step": "UPDATE session_clock SET version",
    "claim": "UPDATE session_clock SET lease_owner",
    "load": "SELECT sessions.id, sessions.workflow",
    "clock": "SELECT now()",
}
#: The poller's look (which, on PostgreSQL, starts with the clock's now()).
POLL = "session_clock.next_wake <="
_VERB = re.compile(r"^\s*(INSERT INTO|UPDATE|DELETE FROM|SELECT\s.*?\sFROM)\s+(\w+)", re.S)


def statement_kind(sql: str) -> str:
    """A statement's name: "poll", one of KINDS, or its verb and first table."""
    if sql.startswith("SELECT") and POLL in sql:
        return "poll"
    for kind, start in KINDS.items():
        if sql.startswith(start):
            return kind
    found = _VERB.match(sql)
    if found is None:
        return " ".join(sql.split())[:40]
    verb = found.group(1).split(None, 1)[0]
    return f"{verb} {found.group(2)}"


@dataclass
class WorkerFigures:
    name: str
    cpu_s: float = 0.0
    steps: int = 0
    statements: int = 0
    commits: int = 0
    # Statements by statement_kind(), and the rows the claims and polls returned.
    kinds: dict[str, int] = field(default_factory=dict)
    claimed: int = 0
    empty_claims: int = 0
    found: int = 0
    empty_polls: int = 0
    error: str | None = None


@dataclass
class RunResult:
    workers: int
    sessions: int
    hosts: int
    capacity: int
    round: int = 1  # --rounds: the runs of one round are compared with each other
    finished: bool = False
    wall_s: float = 0.0
    sessions_per_s: float = 0.0
    steps: int = 0
    worker_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    worker_ms_per_step: float = 0.0
    server_ms_per_step: float = 0.0
    statements_per_step: float = 0.0
    commits_per_step: float = 0.0
    load_average: float = 0.0  # the machine's, over the run's last minute
    throughput_ratio: float = 0.0  # against one worker
    per_worker_ratio: float = 0.0
    problems: list[str] = field(default_factory=list)
    per_worker: list[WorkerFigures] = field(default_factory=list)
    # --server-statements: pg_stat_statements' figures, the costliest first.
    server_statements: list[dict[str, Any]] = field(default_factory=list)

    def per_step(self, what: int | float) -> float:
        return what / self.steps if self.steps else 0.0

    def kind(self, name: str) -> int:
        return sum(w.kinds.get(name, 0) for w in self.per_worker)


def _server_cpu(server: pg_server.PostgresServer) -> float:
    """CPU seconds of the postmaster and of its children it reaped (the
    backends of closed connections), from /proc; 0 where there is none."""
    try:
        pid = int((server.dir / "data" / "postmaster.pid").read_text().split()[0])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _worker(
    url: str,
    workdir: str,
    cells: int,
    name: str,
    options: dict[str, Any],
    ready: Any,
    go: Any,
    stop: Any,
    results: Any,
) -> None:
    figures = WorkerFigures(name)
    try:
        engine = Engine(
            url,
            plugins=[CellCloud(Path(workdir), cells), CellAction(Path(workdir))],
            load_entry_points=False,
            worker_id=name,
            lease_seconds=options["lease"],
            max_sessions=options["capacity"],
        )

        kinds: Counter[str] = Counter()

        def statement(_c: Any, _cur: Any, sql: str, *_args: Any) -> None:
            kinds[statement_kind(sql)] += 1

        def answered(_c: Any, cursor: Any, sql: str, *_args: Any) -> None:
            kind = statement_kind(sql)
            if kind == "claim":
                figures.claimed += cursor.rowcount
                figures.empty_claims += cursor.rowcount == 0
            elif kind == "poll":
                figures.found += cursor.rowcount
                figures.empty_polls += cursor.rowcount == 0

        def commit(_conn: Any) -> None:
            figures.commits += 1

        event.listen(engine.database, "before_cursor_execute", statement)
        event.listen(engine.database, "after_cursor_execute", answered)
        event.listen(engine.database, "commit", commit)
        ready.put(name)
        go.wait()
        kinds.clear()
        figures.commits = figures.claimed = figures.empty_claims = 0
        figures.found = figures.empty_polls = 0
        cpu = time.process_time()
        threading.Thread(target=lambda: (stop.wait(), engine.stop()), daemon=True).start()
        engine.run_forever()
        figures.cpu_s = time.process_time() - cpu
        figures.kinds = dict(kinds)
        figures.statements = sum(kinds.values())
        figures.steps = kinds["step"]
        engine.close()
    except BaseException as exc:
        figures.error = f"{type(exc).__name__}: {exc}"
    results.put(asdict(figures))


def _remaining(db: Any) -> int:
    """Sessions not ended yet (ended: final state, nothing due)."""
    with db.connect() as connection:
        ended = connection.execute(
            select(func.count())
            .select_from(SessionRow)
            .join(SessionClockRow, SessionClockRow.session_id == SessionRow.id)
            .where(SessionRow.state.in_(FINAL), SessionClockRow.next_wake.is_(None))
        ).scalar_one()
        total = connection.execute(select(func.count()).select_from(SessionRow)).scalar_one()
    return int(total) - int(ended)


def _check(db: Any, workdir: Path, cells: int, hosts: int) -> list[str]:
    """What went wrong: sessions not done, host actions not run exactly
    once, hosts left disabled."""
    problems: list[str] = []
    with db.connect() as connection:
        states = Counter(connection.execute(select(SessionRow.state)).scalars())
    if set(states) != {"MAINTENANCE_DONE"}:
        problems.append(f"sessions ended {dict(states)}")
    runs: Counter[str | None] = Counter()
    disabled = 0
    for n in range(cells):
        runs.update(TimedAction(ACTION, 0, state_path=workdir / f"action-{n}.json").hosts)
        cell = SimulatedCloud(state_path=workdir / f"cell-{n}.json")
        disabled += sum(not cell.is_enabled(host_name(n, i)) for i in range(hosts))
    expected = Counter(host_name(n, i) for n in range(cells) for i in range(hosts))
    if runs != expected:
        twice = sorted(h for h, count in runs.items() if count > 1)
        missing = sorted(set(expected) - set(runs))
        problems.append(f"host actions: run twice {twice[:5]}, never {missing[:5]}")
    if disabled:
        problems.append(f"{disabled} host(s) left disabled")
    return problems


class Bench:
    """One server, one set of sessions made once, one run per worker count."""

    def __init__(self, server: pg_server.PostgresServer, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="fenix-workers-", dir=_scratch()))
        self.template = self.root / "template"
        self.template.mkdir()
        self._runs = 0

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _url(self, name: str) -> str:
        return f"postgresql+psycopg://fenix@127.0.0.1:{self.server.port}/{name}"

    def _admin(self, sql: str) -> None:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.server.port} user=fenix dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type] - our own literal names

    def _query(self, name: str, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.server.port} user=fenix dbname={name}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type] - our own literals
            return list(cursor) if cursor.description else []

    def prepare(self) -> float:
        """Build the cells and create the sessions in the template database;
        return the seconds it took."""
        started = time.perf_counter()
        args = self.args
        cloud = CellCloud(self.template, args.sessions)
        cloud.build(args.hosts)
        if args.server_statements:
            self._admin("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            self.server.restart()
        self._admin("CREATE DATABASE template_run")
        if args.server_statements:
            self._query("template_run", "CREATE EXTENSION pg_stat_statements")
        engine = Engine(
            self._url("template_run"),
            plugins=[cloud, CellAction(self.template)],
            load_entry_points=False,
            worker_id="setup",
        )
        try:
            for cell in range(args.sessions):
                engine.create_session(
                    SessionRequest(
                        hosts=[host_name(cell, i) for i in range(args.hosts)],
                        actions=[ActionSpec(plugin=ACTION, type="host")],
                    )
                )
        finally:
            engine.close()  # releases nothing: it never stepped
        return time.perf_counter() - started

    def run(self, workers: int, round_: int = 1) -> RunResult:
        args = self.args
        self._runs += 1
        name = f"run_{self._runs}"
        workdir = self.root / name
        shutil.copytree(self.template, workdir)
        self._admin(f"CREATE DATABASE {name} TEMPLATE template_run")
        url = self._url(name)
        result = RunResult(workers, args.sessions, args.hosts, args.capacity, round_)
        context = multiprocessing.get_context("fork")
        ready, results = context.Queue(), context.Queue()
        go, stop = context.Event(), context.Event()
        options = {"lease": args.lease, "capacity": args.capacity}
        children = [
            context.Process(
                target=_worker,
                args=(url, str(workdir), args.sessions, f"w{n}", options, ready, go, stop, results),
            )
            for n in range(workers)
        ]
        for child in children:
            child.start()
        for _ in children:
            ready.get(timeout=120)
        db = open_database(url)
        if args.server_statements:
            self._query(name, "SELECT pg_stat_statements_reset()")
        server_cpu = _server_cpu(self.server)
        started = time.perf_counter()
        go.set()
        try:
            while _remaining(db) and time.perf_counter() - started < args.timeout:
                time.sleep(0.2)
            result.wall_s = time.perf_counter() - started
            result.load_average = os.getloadavg()[0]
            result.finished = _remaining(db) == 0
        finally:
            stop.set()
            figures = [results.get(timeout=120) for _ in children]
            for child in children:
                child.join(60)
        time.sleep(0.2)  # the backends of the closed connections are reaped
        result.server_cpu_s = _server_cpu(self.server) - server_cpu
        if args.server_statements:
            result.server_statements = self._server_statements(name)
        result.per_worker = [WorkerFigures(**f) for f in sorted(figures, key=lambda f: f["name"])]
        result.steps = sum(f.steps for f in result.per_worker)
        result.worker_cpu_s = sum(f.cpu_s for f in result.per_worker)
        if result.steps:
            result.worker_ms_per_step = 1000 * result.worker_cpu_s / result.steps
            result.server_ms_per_step = 1000 * result.server_cpu_s / result.steps
            result.statements_per_step = sum(f.statements for f in result.per_worker) / result.steps
            result.commits_per_step = sum(f.commits for f in result.per_worker) / result.steps
        result.sessions_per_s = args.sessions / result.wall_s if result.wall_s else 0.0
        result.problems = [f"{f.name}: {f.error}" for f in result.per_worker if f.error]
        if not result.finished:
            result.problems.append(f"not finished within {args.timeout:g} s")
        result.problems += _check(db, workdir, args.sessions, args.hosts)
        db.dispose()
        self._admin(f"DROP DATABASE {name}")
        shutil.rmtree(workdir, ignore_errors=True)
        return result

    def _server_statements(self, name: str) -> list[dict[str, Any]]:
        """The run database's statements by the server's execution time
        (pg_stat_statements), the costliest first: calls, total ms, rows,
        shared blocks hit, and the statement's start."""
        rows = self._query(
            name,
            "SELECT calls, total_exec_time, rows, shared_blks_hit, query"
            " FROM pg_stat_statements WHERE dbid ="
            f" (SELECT oid FROM pg_database WHERE datname = '{name}')"
            " ORDER BY total_exec_time DESC LIMIT 12",
        )
        return [
            {"calls": calls, "ms": ms, "rows": count, "hits": hits, "query": " ".join(q.split())}
            for calls, ms, count, hits, q in rows
        ]


def _busy_work(rounds: int, results: Any) -> None:
    """A fixed piece of CPU work (dict reads and writes over a few MB, as a
    worker's step and a backend touch memory); put its CPU seconds."""
    started = time.process_time()
    table = {n: n for n in range(200_000)}
    key = 1
    for _ in range(rounds):
        key = (key * 1_103_515_245 + 12_345) % 200_000
        table[key] = table[key] + 1
    results.put(time.process_time() - started)


def busy_cores_cost(rounds: int = 3_000_000) -> float:
    """How much more CPU the same work takes when two processes run at once
    than when one runs alone: the machine's own part of what a step costs
    more with two workers (two busy vCPUs may share a physical core, caches,
    memory bandwidth or a clock budget). 0.1 means 10% more CPU."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def run(n: int) -> float:
        children = [context.Process(target=_busy_work, args=(rounds, results)) for _ in range(n)]
        for child in children:
            child.start()
        spent = [results.get(timeout=300) for _ in children]
        for child in children:
            child.join(60)
        return sum(spent) / n

    alone = min(run(1) for _ in range(2))
    together = min(run(2) for _ in range(2))
    return together / alone - 1


def _scratch() -> str | None:
    """Where the state files go: memory-backed where there is such a place
    (the cloud's writes are fsynced; on a disk that would be the cost)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def worker_counts(given: str | None) -> list[int]:
    if given:
        counts = sorted({int(n) for n in given.split(",")})
        if not counts or counts[0] < 1:
            raise SystemExit("--workers: whole numbers >= 1, e.g. 1,2")
        return counts
    cores = os.cpu_count() or 1
    return sorted({1, 2, *([cores] if cores > 2 else [])})


def ratios(results: list[RunResult]) -> None:
    """Each run against the one-worker run of its own round (the rounds are
    interleaved, so a ratio compares runs the machine treated alike)."""
    for r in results:
        base = next(
            (b for b in results if b.round == r.round and b.workers == 1 and b.finished), None
        )
        if base is not None and r.finished and base.sessions_per_s:
            r.throughput_ratio = r.sessions_per_s / base.sessions_per_s
            r.per_worker_ratio = r.throughput_ratio / r.workers


def verdict(results: list[RunResult]) -> str:
    """The target on the median of the rounds' ratios (one round: its ratio)."""
    workers, wanted = TARGET
    found = [r.throughput_ratio for r in results if r.workers == workers and r.throughput_ratio]
    if not found:
        return f"target {workers} workers >= {wanted}x one: not measured"
    median = statistics.median(found)
    met = "PASS" if median >= wanted else "MISS"
    each = ", ".join(f"{x:.2f}x" for x in found)
    of = f" (median of {len(found)} rounds: {each})" if len(found) > 1 else ""
    return f"target {workers} workers >= {wanted}x one: {median:.2f}x{of} {met}"


def print_table(
    results: list[RunResult], setup_s: float, args: argparse.Namespace, busy: float | None = None
) -> None:
    print(
        f"{args.sessions} sessions x {args.hosts} hosts, max_sessions={args.capacity}, "
        f"lease {args.lease:g} s, {os.cpu_count()} cores; sessions made in {setup_s:.1f} s"
    )
    if busy is not None:
        print(f"the same CPU work with two processes at once: {100 * busy:+.0f}% CPU each")
    print(
        f"{'round':>5} {'workers':>7} {'wall s':>8} {'sess/s':>8} {'steps':>7} "
        f"{'wCPU ms/step':>12} "
        f"{'srvCPU ms/step':>14} {'stmts/step':>10} {'commits/step':>12} {'load':>5} "
        f"{'x 1 worker':>10} {'per worker':>10}  steps per worker"
    )
    for r in results:
        print(
            f"{r.round:>5} {r.workers:>7} {r.wall_s:>8.2f} {r.sessions_per_s:>8.2f} {r.steps:>7} "
            f"{r.worker_ms_per_step:>12.2f} {r.server_ms_per_step:>14.2f} "
            f"{r.statements_per_step:>10.2f} {r.commits_per_step:>12.2f} {r.load_average:>5.1f} "
            f"{r.throughput_ratio:>9.2f}x {r.per_worker_ratio:>9.2f}x  "
            + "/".join(str(w.steps) for w in r.per_worker)
        )
        for problem in r.problems:
            print(f"        PROBLEM: {problem}")
    print(
        f"{'round':>5} {'workers':>7} {'loads/step':>10} {'claims/step':>11} {'claimed/claim':>13} "
        f"{'empty claims':>12} {'polls/step':>10} {'empty polls':>11} {'clock/step':>10}"
    )
    for r in results:
        claims, polls = r.kind("claim"), r.kind("poll")
        claimed = sum(w.claimed for w in r.per_worker)
        print(
            f"{r.round:>5} {r.workers:>7} {r.per_step(r.kind('load')):>10.4f} "
            f"{r.per_step(claims):>11.4f} "
            f"{claimed / claims if claims else 0:>13.2f} "
            f"{sum(w.empty_claims for w in r.per_worker):>12} {r.per_step(polls):>10.4f} "
            f"{sum(w.empty_polls for w in r.per_worker):>11} "
            f"{r.per_step(r.kind('clock')):>10.4f}"
        )
    for r in results:
        if r.server_statements:
            print(f"server statements, {r.workers} worker(s): calls, ms, us/call, us/step")
            for s in r.server_statements:
                calls, ms = s["calls"], s["ms"]
                print(
                    f"  {calls:>8} {ms:>9.1f} {1000 * ms / calls:>8.1f} "
                    f"{1000 * r.per_step(ms):>8.1f}  {s['query'][:70]}"
                )
    print(verdict(results))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=10, help="hosts per session")
    parser.add_argument("--workers", help="worker counts, e.g. 1,2,4 (default 1, 2, cores)")
    parser.add_argument("--capacity", type=int, default=50, help="max_sessions per worker")
    parser.add_argument("--lease", type=float, default=10.0, help="lease_seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the worker counts, interleaved; the target is judged on the median "
        "of the rounds' ratios (one run is at the mercy of a noisy machine)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--busy-cores",
        action="store_true",
        help="also measure how much more CPU the same work takes on two busy cores",
    )
    parser.add_argument(
        "--server-statements",
        action="store_true",
        help="load pg_stat_statements and print the server's costliest statements per run",
    )
    args = parser.parse_args(argv)
    if min(args.sessions, args.hosts, args.capacity, args.rounds) < 1 or args.sessions > 9999:
        parser.error("--sessions (at most 9999), --hosts, --capacity and --rounds must be >= 1")
    why = pg_server.unavailable()
    if why is not None:
        print(f"workers benchmark skipped: no PostgreSQL server here ({why})")
        return 0
    counts = worker_counts(args.workers)
    # Stopped (kill, a CI timeout): leave no server or state files behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{Path(__file__).name}: terminated"))
    with pg_server.PostgresServer() as server:
        bench = Bench(server, args)
        try:
            setup_s = bench.prepare()
            results = [bench.run(n, round_) for round_ in range(1, args.rounds + 1) for n in counts]
        finally:
            bench.close()
    busy = busy_cores_cost() if args.busy_cores else None
    ratios(results)
    if args.json:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        runs = [asdict(r) for r in results]
        print(json.dumps({"at": stamp, "setup_s": setup_s, "busy_cores": busy, "runs": runs}))
    else:
        print_table(results, setup_s, args, busy)
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
