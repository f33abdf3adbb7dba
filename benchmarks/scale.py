"""End-to-end scale runs: how the engine's cost grows with the fleet.

Each scenario is named by its hosts (30, 300, 1000, 3000, 10000): 24-vCPU computes
with 20 one-vCPU instances each, one project per 5 hosts (1,000 hosts: 20,000
instances, 200 projects), half the projects answering every notification at
once and the other half 60 s later; the constrained workflow's scenarios add
three instance groups per project (the cloud's, as OpenStack server groups
are: scenarios.GroupedCloud). Every run is on ``fenix_core.Engine`` (the
core of issue 18) with the workflows it ships; the managers' replies of one
simulated instant reach it together through ``engine.reply_many``, as a REST
front end serving them receives them (scenarios.ReplyFrontEnd). Each runs in
a fresh child process on SimClock + SimulatedCloud with a scripted manager
per project, on a SQLite file in a temporary directory.
Prints wall time, CPU time, peak RSS, database size, notifications, engine
steps, commits and SQL statements per step and the simulated makespan;
raw-sqlite3 floors measured in the same run with the engine/floor ratios;
the 300/30, 3000/1000 and 10000/1000 CPU ratios; and the targets of issue 18
with their pass/fail.

    python benchmarks/scale.py [--sizes 30,300,1000,3000] [--huge]
                               [--workflow rolling|constrained|both]
                               [--timeout 120] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import floors
from scenarios import Scenario
from sqlcount import StatementCounter

from fenix_core import Engine, signals


def fleet(hosts: int) -> Scenario:
    """``hosts`` computes of 24 vCPUs, 20 one-vCPU instances each, a project
    per 5 hosts with 3 groups each, half the projects answering 60 s late."""
    projects = max(1, hosts // 5)
    return Scenario(
        hosts=hosts,
        instances=20 * hosts,
        projects=projects,
        groups=3 * projects,
        host_vcpus=24,
        instance_vcpus=(1,),
        late_answer_seconds=60.0,
    )


SIZES: dict[str, Scenario] = {
    # Only for the smoke test (tests/test_benchmarks.py): seconds, not minutes.
    "tiny": Scenario(hosts=3, instances=9, projects=2, groups=2, late_answer_seconds=60.0),
    "30": fleet(30),
    "300": fleet(300),
    "1000": fleet(1_000),
    # Between 1,000 and --huge: how the cost grows past 1,000 hosts in
    # minutes of CPU rather than most of an hour; not in the default run.
    "3000": fleet(3_000),
    "10000": fleet(10_000),
}
DEFAULT_SIZES = ("30", "300", "1000")
HUGE = "10000"  # --huge adds it
#: The workflows run, each on fenix_core.Engine.
WORKFLOWS = ("rolling", "constrained")

# The targets of issue 18.
CPU_TARGET = ("1000", 10.0)  # rolling: at most 10 s of CPU at 1,000 hosts
RSS_TARGET = ("1000", 300 * 2**20)  # and 300 MB of peak RSS
# CPU ratio (big, small, at most): 11x for 10x the fleet, 1.1x per host.
LINEARITY = (("300", "30", 11.0), ("3000", "1000", 3.3), ("10000", "1000", 11.0))
CONSTRAINED_VS_ROLLING = 2.0  # constrained CPU / rolling CPU at the same size
COMMITS_PER_STEP = 1.0
STATEMENTS_PER_STEP = 6.0

_PROGRESS_EVERY = 0.5  # seconds of wall time between progress messages


@dataclass
class Result:
    """One scenario run; a run stopped by the timeout has ``finished`` false
    and the figures it had reached (CPU, RSS, hosts) when it was stopped."""

    size: str
    workflow: str
    hosts: int
    instances: int
    projects: int
    groups: int
    timeout_s: float
    finished: bool = False
    phase: str = "starting"  # starting, setup, run, done, error
    error: str | None = None
    setup_wall_s: float = 0.0
    setup_cpu_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    db_bytes: int = 0
    notifications: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    step_calls: int = 0
    hosts_maintained: int = 0
    makespan_s: float = 0.0
    statements: int = 0  # SQL statements sent during the run, engine.reply() included
    commits: int = 0
    reply_statements: int = 0  # of which inside engine.reply() / reply_many() calls
    reply_commits: int = 0
    replies: int = 0  # replies sent (one per engine.reply(), one per item of reply_many())
    reply_errors: int = 0  # replies the engine refused (the front end's; 0 without one)
    view_ms: float = 0.0  # CPU of one get_session of the finished session (a dashboard's poll)

    @property
    def statements_per_step(self) -> float:
        return self.statements / self.steps if self.steps else 0.0

    @property
    def commits_per_step(self) -> float:
        return self.commits / self.steps if self.steps else 0.0

    @property
    def cpu_per_step_ms(self) -> float:
        return 1000 * self.cpu_s / self.steps if self.steps else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_per_host_ms(self) -> float:
        return 1000 * self.cpu_s / self.hosts_maintained if self.hosts_maintained else 0.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps_per_s"] = round(self.steps_per_s, 1)
        data["statements_per_step"] = round(self.statements_per_step, 2)
        data["commits_per_step"] = round(self.commits_per_step, 2)
        data["cpu_per_step_ms"] = round(self.cpu_per_step_ms, 3)
        data["notifications_total"] = sum(self.notifications.values())
        return data


def peak_rss_bytes() -> int:
    """This process's peak resident set size (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _Meter:
    """Counts what the engine does in the child: notifications by signal,
    hosts maintained, ``Engine.step`` calls and replies (``reply`` and ``reply_many``), SQL
    statements and commits; sends progress to the parent."""

    def __init__(self, engine: Engine, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send
        self.sql = StatementCounter(engine)
        self.replies = 0
        self.notifications: Counter[str] = Counter()
        self.maintained: set[str] = set()
        self.step_calls = 0
        self.wall0 = time.monotonic()
        self.cpu0 = time.process_time()
        self._next = self.wall0 + _PROGRESS_EVERY
        for name, signal in signals.SIGNALS.items():
            signal.connect(self._receiver(name), sender=engine, weak=False)
        original = engine.step

        # run_until_idle / run_until_done call self.step(): an instance
        # attribute sees every call. The steps are the engine's count
        # (Engine.steps_run): those of step() and those reply_many() ran to
        # record a burst in the step of the session it answers.
        self._steps0 = engine.steps_run
        self._engine = engine

        def counted_step() -> int:
            moved = original()
            self.step_calls += 1
            if time.monotonic() >= self._next:
                self._next = time.monotonic() + _PROGRESS_EVERY
                self.send(self.figures("run"))
            return moved

        engine.step = counted_step  # type: ignore[method-assign]
        reply = engine.reply

        # The scripted managers call engine.reply from inside the step's
        # delivery: its statements are counted apart too.
        def counted_reply(*args: Any, **kwargs: Any) -> Any:
            self.replies += 1
            outer, self.sql.in_reply = self.sql.in_reply, True
            try:
                return reply(*args, **kwargs)
            finally:
                self.sql.in_reply = outer

        engine.reply = counted_reply  # type: ignore[method-assign]
        reply_many = engine.reply_many

        def counted_reply_many(replies: Any) -> Any:
            items = list(replies)
            self.replies += len(items)
            outer, self.sql.in_reply = self.sql.in_reply, True
            try:
                return reply_many(items)
            finally:
                self.sql.in_reply = outer

        engine.reply_many = counted_reply_many  # type: ignore[method-assign]

    def _receiver(self, name: str) -> Callable[..., None]:
        def receive(sender: Engine, payload: dict[str, Any]) -> None:
            self.notifications[name] += 1
            if name == "maintenance_host" and payload["state"] == "MAINTENANCE_COMPLETE":
                self.maintained.add(payload["host"])

        return receive

    def start(self) -> None:
        self._steps0 = self._engine.steps_run
        self.wall0 = time.monotonic()
        self.cpu0 = time.process_time()
        self.sql.reset()
        self.replies = 0

    def figures(self, phase: str) -> dict[str, Any]:
        return {
            "phase": phase,
            "wall_s": time.monotonic() - self.wall0,
            "cpu_s": time.process_time() - self.cpu0,
            "peak_rss_bytes": peak_rss_bytes(),
            "notifications": dict(self.notifications),
            "steps": self._engine.steps_run - self._steps0,
            "step_calls": self.step_calls,
            "hosts_maintained": len(self.maintained),
            "replies": self.replies,
            **self.sql.figures(),
        }


def _child(scenario: Scenario, workflow: str, database_url: str, conn: Connection) -> None:
    """Runs in a fresh process: build the scenario, run it, send the figures."""
    try:
        wall0, cpu0 = time.monotonic(), time.process_time()
        conn.send({"phase": "setup"})
        # Only the constrained workflow reads instance-group constraints.
        built = scenario.build(
            workflow, database_url=database_url, constrained=workflow == "constrained"
        )
        setup = {
            "setup_wall_s": time.monotonic() - wall0,
            "setup_cpu_s": time.process_time() - cpu0,
        }
        meter = _Meter(built.engine, conn.send)
        conn.send({**setup, **meter.figures("run")})
        meter.start()
        begin = built.clock.now()
        session_id = built.engine.create_session(built.request)
        view = built.engine.run_until_done(session_id)
        figures = meter.figures("done")
        figures["makespan_s"] = (built.clock.now() - begin).total_seconds()
        figures["reply_errors"] = len(built.front.errors) if built.front is not None else 0
        figures["view_ms"] = _view_ms(built.engine, session_id)
        built.engine.close()
        if view.state != "MAINTENANCE_DONE":
            figures["phase"] = "error"
            figures["error"] = f"session ended {view.state}: {view.reason}"
        conn.send({**setup, **figures})
    except BaseException as exc:  # reported to the parent, which prints it
        lines = traceback.format_exception(exc)
        conn.send({"phase": "error", "error": "".join(lines[-3:]).strip()})
    finally:
        conn.close()


def _view_ms(engine: Engine, session_id: str, calls: int = 10) -> float:
    """CPU ms of one ``get_session`` (what each GET of the session and each
    refresh of its dashboard page costs), the mean of ``calls``."""
    engine.get_session(session_id)  # its statements compiled
    cpu0 = time.process_time()
    for _ in range(calls):
        engine.get_session(session_id)
    return 1000 * (time.process_time() - cpu0) / calls


def _directory_bytes(path: Path) -> int:
    """The SQLite database with its -wal / -shm files, as they are now."""
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def measure(size: str, scenario: Scenario, workflow: str, timeout: float) -> Result:
    """Run one scenario in a fresh 'spawn' child (so peak RSS is its own);
    stop it after ``timeout`` seconds of wall time for the setup and again for
    the run, keeping the figures it had reached."""
    result = Result(
        size=size,
        workflow=workflow,
        hosts=scenario.hosts,
        instances=scenario.instances,
        projects=scenario.projects,
        groups=scenario.groups,
        timeout_s=timeout,
    )
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="fenix-scale-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'fenix.db'}"
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(scenario, workflow, url, send), daemon=True)
        child.start()
        send.close()
        deadline = time.monotonic() + timeout
        while result.phase not in ("done", "error"):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not receive.poll(min(left, 1.0)):
                if not child.is_alive() and not receive.poll():
                    result.phase, result.error = "error", f"child exited {child.exitcode}"
                continue
            try:
                message = receive.recv()
            except EOFError:
                result.phase, result.error = "error", f"child exited {child.exitcode}"
                break
            if message["phase"] == "run" and result.phase != "run":
                deadline = time.monotonic() + timeout  # the run gets its own budget
            for key, value in message.items():
                setattr(result, key, value)
        result.finished = result.phase == "done"
        if child.is_alive() and result.phase != "done":
            child.terminate()
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
        receive.close()
        result.db_bytes = _directory_bytes(Path(tmp))
    return result


# ---------------------------------------------------------------------- report


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def _label(r: Result) -> str:
    return f"{r.workflow:<11} {r.size:>6}"


def _row(r: Result) -> str:
    notes = sum(r.notifications.values())
    figures = (
        f"{r.wall_s:>8.1f} {r.cpu_s:>8.1f} {_mb(r.peak_rss_bytes):>8} {r.db_bytes:>12,}"
        f" {notes:>8,} {r.steps:>7,} {r.steps_per_s:>8.1f} {r.cpu_per_step_ms:>8.2f}"
        f" {r.commits_per_step:>7.2f} {r.statements_per_step:>7.1f}"
    )
    if r.finished:
        return f"{_label(r)} {figures} {r.makespan_s:>11,.0f}"
    if r.phase == "error":
        return f"{_label(r)} failed: {r.error}"
    if r.phase in ("starting", "setup"):
        return f"{_label(r)} setup did not finish in {r.timeout_s:g} s"
    return (
        f"{_label(r)} {figures}   did not finish in {r.timeout_s:g} s:"
        f" {r.hosts_maintained:,} / {r.hosts:,} hosts maintained"
    )


def print_table(results: Sequence[Result]) -> None:
    print(
        f"{'workflow':<11} {'hosts':>6} {'wall s':>8} {'CPU s':>8} {'peak RSS':>8}"
        f" {'DB bytes':>12} {'notifs':>8} {'steps':>7} {'steps/s':>8} {'ms/step':>8}"
        f" {'commit/':>7} {'stmts/':>7} {'makespan s':>11}"
    )
    print(" " * 97 + f"{'step':>7} {'step':>7}")
    for r in results:
        print(_row(r))
    print()
    for r in results:
        if r.phase in ("run", "done"):
            by_signal = ", ".join(f"{k} {v:,}" for k, v in sorted(r.notifications.items()))
            print(
                f"{r.workflow} {r.size}: {r.hosts:,} hosts, {r.instances:,} instances,"
                f" {r.projects:,} projects, {r.groups:,} groups; setup (scenario build,"
                f" not counted above) {r.setup_wall_s:.1f} s wall / {r.setup_cpu_s:.1f} s CPU;"
                f" {r.cpu_per_host_ms:.0f} ms CPU per host maintained;"
                f"{f' get_session {r.view_ms:.1f} ms CPU;' if r.view_ms else ''}"
                f" {r.step_calls:,} step calls; {r.statements:,} statements and"
                f" {r.commits:,} commits, of which in recording {r.replies:,} replies"
                f" {r.reply_statements:,} and {r.reply_commits:,}"
                f"{f' ({r.reply_errors:,} refused)' if r.reply_errors else ''}; notifications:"
                f" {by_signal or 'none'}"
            )


def run_floor_s(r: Result, floor: floors.Floors) -> float:
    """What the run would cost at the machine's floor: one 5-statement
    transaction per step and one row update per instance."""
    return r.steps * floor.transaction_s + r.instances * floor.update_row_s


def print_floors(results: Sequence[Result], floor: floors.Floors) -> None:
    print()
    print(
        "raw sqlite3 floors, same run (SQLite file, WAL, synchronous=NORMAL; CPU):"
        f" a 5-statement transaction {floor.transaction_s * 1e6:.0f} us;"
        f" 20,000 row updates in one executemany {floor.updates_20k_s * 1e3:.0f} ms"
    )
    print(
        f"  {'workflow':<11} {'hosts':>6} {'ms/step':>9} {'floor':>7} {'ratio':>7}"
        f" {'run CPU s':>10} {'floor s':>8} {'ratio':>7}"
    )
    for r in results:
        if r.phase not in ("run", "done") or not r.steps:
            continue
        run_floor = run_floor_s(r, floor)
        print(
            f"  {_label(r)} {r.cpu_per_step_ms:>9.2f} {floor.transaction_s * 1e3:>7.3f}"
            f" {floors.ratio(r.cpu_per_step_ms / 1e3, floor.transaction_s):>7}"
            f" {r.cpu_s:>10.1f} {run_floor:>8.3f} {floors.ratio(r.cpu_s, run_floor):>7}"
            + ("" if r.finished else "  (stopped)")
        )


def _ratio(big: Result | None, small: Result | None) -> tuple[str, float | None]:
    """CPU ratio big/small; a bound when big was stopped (its CPU only grows)."""
    if big is None or small is None or not small.finished or small.cpu_s <= 0:
        return "n/a", None
    if big.phase not in ("run", "done") or big.cpu_s <= 0:
        return "n/a", None
    value = big.cpu_s / small.cpu_s
    if big.finished:
        return f"{value:.1f}x", value
    return f"> {value:.1f}x (stopped)", value


def _at_most(value: float | None, target: float, finished: bool) -> str:
    """A stopped run's figure only grows: over the target it fails; under it,
    unknown."""
    if value is None:
        return "n/a"
    if value > target:
        return "FAIL"
    return "PASS" if finished else "n/a"


def _ran(r: Result | None) -> bool:
    return r is not None and r.phase in ("run", "done")


def targets(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The targets of issue 18: value, target and PASS / FAIL / n/a."""
    out: list[dict[str, Any]] = []

    def add(workflow: str, name: str, value: str, target: str, verdict: str) -> None:
        out.append(
            {
                "workflow": workflow,
                "name": name,
                "value": value,
                "target": target,
                "verdict": verdict,
            }
        )

    runs = {(r.workflow, r.size): r for r in results}
    for workflow in WORKFLOWS:
        mine = [r for r in results if r.workflow == workflow]
        if not mine:
            continue
        for big, small, limit in LINEARITY:
            b, sm = runs.get((workflow, big)), runs.get((workflow, small))
            if b is None or sm is None:
                continue
            text, value = _ratio(b, sm)
            add(
                workflow,
                f"{big}/{small} CPU",
                text,
                f"<= {limit:g}x",
                _at_most(value, limit, b.finished),
            )
            # Per host maintained: readable for a stopped run too (an engine
            # whose cost per host grows as a run goes on shows a stopped run's
            # figure as an underestimate); 1.1x per host is the 11x for 10x
            # the fleet (and the 3.3x for 3x).
            if _ran(b) and b.hosts_maintained and sm.finished and sm.cpu_per_host_ms:
                per_host = b.cpu_per_host_ms / sm.cpu_per_host_ms
                host_limit = limit * sm.hosts / b.hosts
                done = "" if b.finished else f" ({b.hosts_maintained:,}/{b.hosts:,} hosts)"
                add(
                    workflow,
                    f"{big}/{small} CPU per host",
                    f"{per_host:.2f}x{done}",
                    f"<= {host_limit:.2g}x",
                    _at_most(per_host, host_limit, b.finished) if b.finished else "info",
                )
        size, limit = CPU_TARGET
        r = runs.get((workflow, size))
        if workflow == "rolling" and r is not None and _ran(r):
            stopped = "" if r.finished else " (stopped)"
            add(
                workflow,
                f"{size} hosts CPU",
                f"{r.cpu_s:.1f} s{stopped}",
                f"<= {limit:g} s",
                _at_most(r.cpu_s, limit, r.finished),
            )
            rss_size, rss_limit = RSS_TARGET
            add(
                workflow,
                f"{rss_size} hosts peak RSS",
                _mb(r.peak_rss_bytes) + stopped,
                f"<= {_mb(rss_limit)}",
                _at_most(r.peak_rss_bytes, rss_limit, r.finished),
            )
        if workflow == "constrained":
            for c in mine:
                rolling = runs.get(("rolling", c.size))
                if rolling is None or not rolling.finished or not _ran(c):
                    continue
                text, value = _ratio(c, rolling)
                add(
                    workflow,
                    f"{c.size} hosts CPU / rolling",
                    text,
                    f"<= {CONSTRAINED_VS_ROLLING:g}x",
                    _at_most(value, CONSTRAINED_VS_ROLLING, c.finished),
                )
        for r in mine:
            if not _ran(r) or not r.steps:
                continue
            add(
                workflow,
                f"{r.size} hosts commits/step",
                # Four decimals and the commits beyond one per step: at 1.00
                # the verdict would read as a contradiction of the figure.
                f"{r.commits_per_step:.4f} ({r.commits - r.steps:+,} beyond one a step)",
                f"<= {COMMITS_PER_STEP:g}",
                "PASS" if r.commits_per_step <= COMMITS_PER_STEP else "FAIL",
            )
            add(
                workflow,
                f"{r.size} hosts stmts/step",
                f"{r.statements_per_step:.1f}",
                f"<= {STATEMENTS_PER_STEP:g}",
                "PASS" if r.statements_per_step <= STATEMENTS_PER_STEP else "FAIL",
            )
    return out


def makespan_ratios(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Constrained against rolling (serial) makespan, per size both finished."""
    out = []
    for size in SIZES:
        pair = {r.workflow: r for r in results if r.size == size and r.finished}
        if "rolling" in pair and "constrained" in pair and pair["rolling"].makespan_s > 0:
            ratio = pair["constrained"].makespan_s / pair["rolling"].makespan_s
            out.append({"size": size, "constrained/rolling makespan": round(ratio, 3)})
    return out


def print_summary(results: Sequence[Result]) -> None:
    print()
    print(
        "targets of issue 18 (same run; a stopped run's CPU only grows, so its ratio is a bound):"
    )
    for t in targets(results):
        print(
            f"  {t['workflow']:<11} {t['name']:<28} {t['value']:<22} target {t['target']:<9}"
            f" {t['verdict']}"
        )
    for m in makespan_ratios(results):
        ratio = m["constrained/rolling makespan"]
        print(f"  {m['size']:<11} constrained / rolling makespan {ratio}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=",".join(DEFAULT_SIZES),
        help=f"comma-separated hosts, of {', '.join(SIZES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--huge", action="store_true", help=f"add the {HUGE}-host scenario (a long run)"
    )
    parser.add_argument(
        "--workflow",
        choices=[*WORKFLOWS, "both"],
        default="both",
        help="rolling (the Fenix default), constrained, or both (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds of wall time per scenario for the setup, and again for the run;"
        " a scenario still running is stopped and reported as far as it got"
        " (default: %(default)s)",
    )
    parser.add_argument(
        "--floor-repeats",
        type=int,
        default=2_000,
        help="transactions timed for each raw-sqlite3 floor (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.huge and HUGE not in sizes:
        sizes.append(HUGE)
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        parser.error(f"unknown size(s) {', '.join(unknown) or '(none given)'}; know {list(SIZES)}")
    if not args.timeout > 0:
        parser.error("--timeout must be a positive number of seconds")
    if args.floor_repeats < 1:
        parser.error("--floor-repeats must be at least 1")
    workflows = WORKFLOWS if args.workflow == "both" else (args.workflow,)
    with tempfile.TemporaryDirectory(prefix="fenix-floor-") as tmp:
        floor = floors.measure(Path(tmp), args.floor_repeats)
    results = []
    for workflow in workflows:
        for size in sizes:
            print(f"running {workflow} {size} ...", file=sys.stderr, flush=True)
            results.append(measure(size, SIZES[size], workflow, args.timeout))
    if args.json:
        document = {
            "results": [r.as_json() for r in results],
            "floors": floor.as_json(),
            "run_floors_s": {
                f"{r.workflow} {r.size}": round(run_floor_s(r, floor), 3) for r in results
            },
            "targets": targets(results),
            "makespan_ratios": makespan_ratios(results),
        }
        print(json.dumps(document, indent=2))
    else:
        print_table(results)
        print_floors(results, floor)
        print_summary(results)
    return 1 if any(r.phase == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
