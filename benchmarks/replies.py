"""Reply throughput: how fast the engine takes application managers' replies.

One rolling session asks MAINTENANCE of many projects at once (default 2,000
projects, one instance each; the start is an hour away so nothing else
happens). Every project then replies ACK_MAINTENANCE: "accepted" times the
``Engine.reply`` calls (validation and the inbox write, one transaction each,
or shared by replies that arrive together: group commit), "processed" the one
``Engine.step`` that consumes the inbox. On a SQLite file from one thread and
from ``--threads`` threads at once (default 8), and in memory; the target (>=
5,000 replies/s on a SQLite file) applies to the whole path, accepted then
processed. Also counted: SQL statements and commits per reply, and raw-sqlite3
floors measured in the same run (a reply as its own transaction, and as one row
of a batched transaction) with the engine/floor ratios.

    python benchmarks/replies.py [--projects 2000] [--threads 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import floors
from sqlcount import StatementCounter

from fenix_core import ActionSpec, Engine, SessionRequest, signals
from fenix_core.testing import SimClock, SimulatedCloud, TimedAction

TARGET = 5_000.0  # replies/s, accepted and processed, on a SQLite file
INSTANCES_PER_HOST = 20


@dataclass
class Throughput:
    backend: str
    replies: int
    accept_s: float
    process_s: float
    accept_cpu_s: float
    process_cpu_s: float
    accept_statements: int
    accept_commits: int
    process_statements: int
    process_commits: int

    @property
    def accepted_per_s(self) -> float:
        return self.replies / self.accept_s

    @property
    def processed_per_s(self) -> float:
        return self.replies / self.process_s

    @property
    def overall_per_s(self) -> float:
        return self.replies / (self.accept_s + self.process_s)

    @property
    def overall_per_cpu_s(self) -> float:
        """Per second of CPU: what an unloaded core would reach."""
        return self.replies / (self.accept_cpu_s + self.process_cpu_s)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("accepted_per_s", "processed_per_s", "overall_per_s", "overall_per_cpu_s"):
            data[name] = round(getattr(self, name), 1)
        return data


def accept(engine: Engine, asked: Sequence[tuple[str, str]], threads: int) -> None:
    """Send every reply, from ``threads`` threads at once (group commit)."""
    if threads == 1:
        for sid, project in asked:
            engine.reply(sid, project, "ACK_MAINTENANCE")
        return
    start = threading.Barrier(threads + 1)
    failures: list[BaseException] = []

    def sender(share: Sequence[tuple[str, str]]) -> None:
        start.wait()
        try:
            for sid, project in share:
                engine.reply(sid, project, "ACK_MAINTENANCE")
        except BaseException as error:
            failures.append(error)

    workers = [threading.Thread(target=sender, args=(asked[t::threads],)) for t in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]


def measure(backend: str, database_url: str, projects: int, threads: int = 1) -> Throughput:
    clock = SimClock()
    cloud = SimulatedCloud(clock=clock)
    hosts = max(2, -(-projects // INSTANCES_PER_HOST))
    for h in range(hosts):
        cloud.add_host(f"compute-{h:05d}", vcpus=2 * INSTANCES_PER_HOST)
    names = [f"project-{p:05d}" for p in range(projects)]
    for p, project in enumerate(names):
        cloud.add_instance(f"vm-{p:06d}", project, f"compute-{p // INSTANCES_PER_HOST:05d}")
    engine = Engine(database_url, clock=clock, plugins=[cloud, TimedAction("upgrade", 600)])
    try:
        for project in names:
            engine.subscribe(project)
        asked: list[tuple[str, str]] = []

        def on_planned(sender: Engine, payload: dict[str, Any]) -> None:
            if payload["state"] == "MAINTENANCE":
                asked.append((payload["session_id"], payload["project_id"]))

        signals.maintenance_planned.connect(on_planned, sender=engine, weak=False)
        request = SessionRequest(
            actions=[ActionSpec(plugin="upgrade", type="host")],
            maintenance_at=clock.now() + timedelta(hours=1),
        )
        session_id = engine.create_session(request)
        engine.run_until_idle()
        if len(asked) != projects:
            raise RuntimeError(f"{len(asked)} of {projects} projects were asked MAINTENANCE")
        sql = StatementCounter(engine)
        start, start_cpu = time.perf_counter(), time.process_time()
        accept(engine, asked, threads)
        accepted, accepted_cpu = time.perf_counter(), time.process_time()
        accept_sql = sql.figures()
        sql.reset()
        engine.step()
        processed, processed_cpu = time.perf_counter(), time.process_time()
        process_sql = sql.figures()
        sql.close()
        answered = engine.get_session(session_id).projects
        left = [p for p in names if answered.get(p) != "ACK_MAINTENANCE"]
        if left:
            raise RuntimeError(f"{len(left)} replies not processed by the step, e.g. {left[0]}")
        return Throughput(
            backend,
            projects,
            accept_s=accepted - start,
            process_s=processed - accepted,
            accept_cpu_s=accepted_cpu - start_cpu,
            process_cpu_s=processed_cpu - accepted_cpu,
            accept_statements=accept_sql["statements"],
            accept_commits=accept_sql["commits"],
            process_statements=process_sql["statements"],
            process_commits=process_sql["commits"],
        )
    finally:
        engine.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--projects", type=int, default=2_000, help="default: %(default)s")
    parser.add_argument(
        "--threads", type=int, default=8, help="senders at once for the group-commit figure"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.projects < 1:
        parser.error("--projects must be at least 1")
    if args.threads < 2:
        parser.error("--threads must be at least 2")
    with tempfile.TemporaryDirectory(prefix="fenix-replies-") as tmp:
        floor = floors.measure(Path(tmp), args.projects)
        results = [
            measure("sqlite file", f"sqlite:///{Path(tmp) / 'fenix.db'}", args.projects),
            measure(
                f"file, {args.threads} thr",
                f"sqlite:///{Path(tmp) / 'threads.db'}",
                args.projects,
                args.threads,
            ),
            measure("in memory", "sqlite://", args.projects),
        ]
    on_file = results[0].overall_per_s
    verdict = "PASS" if on_file >= TARGET else "FAIL"
    if args.json:
        document = {
            "results": [r.as_json() for r in results],
            "target": {"replies_per_s": TARGET, "value": round(on_file, 1), "verdict": verdict},
            "floors": floor.as_json(),
        }
        print(json.dumps(document, indent=2))
        return 0
    print(
        f"reply throughput: {args.projects:,} projects asked MAINTENANCE at once,"
        " one ACK each (replies per second of wall time; overall = accepted then processed)"
    )
    print(
        f"{'backend':<12} {'accepted/s':>11} {'processed/s':>12} {'overall/s':>10}"
        f" {'accept s':>9} {'process s':>10} {'overall/CPU s':>14}"
    )
    for r in results:
        print(
            f"{r.backend:<12} {r.accepted_per_s:>11,.0f} {r.processed_per_s:>12,.0f}"
            f" {r.overall_per_s:>10,.0f} {r.accept_s:>9.3f} {r.process_s:>10.3f}"
            f" {r.overall_per_cpu_s:>14,.0f}"
        )
    print()
    print(
        f"{'backend':<12} {'stmts/reply':>12} {'commits/reply':>14}"
        f" {'accept stmts':>13} {'process stmts':>14}"
    )
    for r in results:
        total = r.accept_statements + r.process_statements
        print(
            f"{r.backend:<12} {total / r.replies:>12.2f}"
            f" {(r.accept_commits + r.process_commits) / r.replies:>14.3f}"
            f" {r.accept_statements:>13,} {r.process_statements:>14,}"
        )
    print()
    one, batched = floor.reply_transaction_s, floor.reply_batched_s
    print(
        "raw sqlite3 floors, same run (SQLite file, CPU per reply): a reply as its own"
        f" transaction (SELECT, INSERT, commit) {one * 1e6:.0f} us ({1 / one:,.0f}/CPU s);"
        f" as one row of a batch {batched * 1e6:.1f} us ({1 / batched:,.0f}/CPU s)"
    )
    for r in results:
        accept = r.accept_cpu_s / r.replies
        overall = (r.accept_cpu_s + r.process_cpu_s) / r.replies
        print(
            f"  {r.backend:<12} accept {accept * 1e6:,.0f} us: {floors.ratio(accept, one)} the"
            f" own-transaction floor; accepted and processed {overall * 1e6:,.0f} us:"
            f" {floors.ratio(overall, batched)} the batched floor"
        )
    print()
    print(
        f"target of issue 18: >= {TARGET:,.0f} replies/s accepted and processed on a SQLite"
        f" file: {on_file:,.0f} ({results[0].overall_per_cpu_s:,.0f} per CPU s)  {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
