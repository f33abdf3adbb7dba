"""Chaos runs: several engine worker processes on one PostgreSQL, under faults.

The parent process (the test) starts ``workers`` worker processes (this file
run as a script), each an :class:`~fenix_core.Engine` in ``run_forever()``
reaching the database through a loopback TCP proxy the parent controls. It
creates ``sessions`` rolling sessions spread over the first part of the run
and, on a schedule drawn from ``seed``, kills workers with SIGKILL (restarted
after a while with the same worker id, as a service manager does), drops
every connection through the proxy, and restarts the PostgreSQL server
(``pg_ctl restart``). One worker's machine clock runs ``skew_seconds`` ahead.
Every other reply a manager sends reaches an engine beside its worker that
holds no session, as through a load balancer in front of the workers.
Then it lets every session finish and checks the evidence:

* every session ends as in an uninterrupted run (``reference``): same state,
  each instance migrated as often, each host's action run as often;
* no cloud effect is duplicated: the simulated cloud records each move with
  its idempotency key, no key twice;
* no notification is lost (every ``seq`` up to the stored one was received by
  a manager, and the stored watermark covers them), none carries two
  payloads, and no worker process delivered the same ``seq`` twice
  (redelivery, at least once, only comes from another process after a kill
  or a take-over);
* no two workers ever committed the same step: each worker logs its fenced
  commits (``fenix_core.commits``: session, version, owner, token) and no
  ``(session, version)`` is in two records, tokens never go back as versions
  go up, and one token is one owner.

Everything shared lives in ``workdir``: the simulated cloud and the host
action (state files, each call under a file lock, read fresh: the doubles are
shared by concurrent processes), the session ids, and per worker process
(one *incarnation* per start) its delivery and commit logs and its stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import inspect
import itertools
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import attrs
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.clock import RealClock
from fenix_core.core.retry import is_database_fault
from fenix_core.hookspecs import ActionContext, hookimpl
from fenix_core.model import OperationStatus
from fenix_core.signals import SIGNALS
from fenix_core.store.schema import SessionClockRow, SessionRow
from fenix_core.testing import (
    ScriptedManager,
    SimClock,
    SimulatedCloud,
    TimedAction,
    migrations_per_instance,
    seams,
)
from fenix_core.testing.seams import stored_clock

__all__ = [
    "ChaosConfig",
    "ChaosRun",
    "Evidence",
    "TcpProxy",
    "leases_on_database_clock",
    "problems",
    "reference",
]

FINAL = ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")

#: Per session: host suffix -> [(instance suffix, project, vcpus)]; p1 has a
#: manager, p2 none.
LAYOUT: dict[str, list[tuple[str, str, int]]] = {
    "h0": [("a", "p1", 2), ("b", "p2", 2)],
    "h1": [("c", "p1", 2)],
    "h2": [],
}
#: A host in no session, with room for every instance: the sessions see each
#: other's hosts as empty (a session does not follow the instances of hosts
#: out of its scope) and move instances there first; with this host the most
#: free, every session moves each of its instances once, to it, whatever the
#: others do, as a session run alone does.
SPARE = ("spare", 100_000)


@attrs.frozen
class ChaosConfig:
    seconds: float = 12.0  # of faults; then the sessions are let finish
    workers: int = 3
    sessions: int = 6
    seed: int = 20261205
    lease_seconds: float = 2.0
    skew_seconds: float = 120.0  # the last worker's clock runs this far ahead
    action_seconds: float | None = None  # each host's action; None: seconds / 5
    settle_seconds: float | None = None  # at most, after the faults; None: 90 s or seconds
    faults: bool = True


# --------------------------------------------------------------------------- shared doubles


class TrueClock(RealClock):
    """The real time, whatever a skewed worker's machine clock says: the
    cloud's own clock (a real cloud does not run on its client's time)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class _FileLock:
    """An exclusive flock on ``path``, re-entrant within the process (the
    kernel drops it when the process dies, even by SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._thread = threading.RLock()
        self._depth = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        """Yields True for the outermost hold (read the state fresh then)."""
        with self._thread:
            if self._depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield self._depth == 1
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)


def _under_lock(cls: type[Any], base: type[Any], names: list[str]) -> None:
    for name in names:
        original = getattr(base, name)

        def method(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with self._lock.held() as outermost:
                if outermost:
                    self._read_fresh()
                return __original(self, *args, **kwargs)

        method.__name__ = name
        setattr(cls, name, method)


class SharedCloud(SimulatedCloud):
    """A :class:`SimulatedCloud` in a state file shared by concurrent worker
    processes: each call holds a file lock and reads the file first, so no
    process writes over another's change. Its clock is the true time."""

    def __init__(self, state_path: Path) -> None:
        self._lock = _FileLock(state_path.with_suffix(".lock"))
        with self._lock.held():
            super().__init__(0.0, 0.0, state_path=state_path, clock=TrueClock())

    def _read_fresh(self) -> None:
        if self._path is not None and self._path.exists():
            self._load()

    @hookimpl
    def fenix_cloud_driver(self, clock: Any) -> SimulatedCloud:
        return self  # keeps its own clock


_under_lock(
    SharedCloud,
    SimulatedCloud,
    [
        name
        for name, value in vars(SimulatedCloud).items()
        if inspect.isfunction(value) and not name.startswith("_") and name != "fenix_cloud_driver"
    ],
)


class SharedAction(TimedAction):
    """A :class:`TimedAction` whose runs file is shared the same way, timed on
    the true time."""

    def __init__(self, state_path: Path, seconds: float) -> None:
        self._lock = _FileLock(state_path.with_suffix(".lock"))
        super().__init__("upgrade", seconds, state_path=state_path)

    def _read_fresh(self) -> None:
        self._version = None
        self._refresh()

    def start(self, context: ActionContext) -> OperationStatus:
        return super().start(attrs.evolve(context, now=datetime.now(UTC)))

    def poll(self, context: ActionContext) -> OperationStatus:
        return super().poll(attrs.evolve(context, now=datetime.now(UTC)))


_under_lock(SharedAction, SharedAction, ["start", "poll"])


# --------------------------------------------------------------------------- the proxy


class TcpProxy:
    """Forwards loopback connections to ``target_port``; :meth:`drop_all`
    closes every connection at once (both ends), as a network fault does."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="chaos-proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the server is down: the client sees a closed connection
                continue
            with self._guard:
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _close(self, *ends: socket.socket) -> None:
        with self._guard:
            for end in ends:
                self._open.discard(end)
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def connections(self) -> int:
        with self._guard:
            return len(self._open) // 2

    def drop_all(self) -> int:
        """Close every forwarded connection; return how many there were."""
        with self._guard:
            ends = list(self._open)
        self._close(*ends)
        return len(ends) // 2

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop_all()


# --------------------------------------------------------------------------- the worker


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _CommitLine(logging.Formatter):
    """A ``fenix_core.commits`` record as a JSON line, with its true time."""

    def format(self, record: logging.LogRecord) -> str:
        fields = ("session_id", "version", "owner", "token")
        return json.dumps({"time": record.created, **{f: getattr(record, f) for f in fields}})


def worker_main(config_file: str, worker_id: str, incarnation: str, slot: str) -> None:
    """One worker process: an engine stepping sessions until SIGTERM."""
    setup = json.loads(Path(config_file).read_text())
    workdir = Path(setup["workdir"])
    skew = timedelta(seconds=setup["skews"].get(slot, 0.0))
    if skew:
        # The machine's clock is off: everything that reads it (the engine's
        # clock, the lease clock) is.
        RealClock.now = lambda self: datetime.now(UTC) + skew  # type: ignore[method-assign]
    commits = logging.FileHandler(workdir / f"commits-{incarnation}.log")
    commits.setFormatter(_CommitLine())
    commit_log = logging.getLogger("fenix_core.commits")
    commit_log.addHandler(commits)
    commit_log.setLevel(logging.DEBUG)
    commit_log.propagate = False
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    cloud = SharedCloud(workdir / "cloud.json")
    action = SharedAction(workdir / "action.json", setup["action_seconds"])
    engine = Engine(
        setup["url"],
        plugins=[cloud, action],
        load_entry_points=False,
        worker_id=worker_id,
        lease_seconds=setup["lease_seconds"],
        db_retry_seconds=0.2,
    )
    deliveries = (workdir / f"deliveries-{incarnation}.log").open("a")

    def record(_sender: Engine, payload: dict[str, Any], name: str) -> None:
        line = {"s": payload["session_id"], "q": payload["seq"], "n": name, "d": _digest(payload)}
        deliveries.write(json.dumps(line) + "\n")
        deliveries.flush()

    for name, sig in SIGNALS.items():
        sig.connect(functools.partial(record, name=name), sender=engine, weak=False)

    # Managers reach the workers through a load balancer: every other reply
    # arrives at an engine beside this one that holds no session (as a
    # front end would), so the worker holding the session has to find it in
    # the database.
    front = Engine(
        setup["url"],
        plugins=[cloud, action],
        load_entry_points=False,
        worker_id=f"{worker_id}-front",
        lease_seconds=setup["lease_seconds"],
        db_retry_seconds=0.2,
    )
    replies = itertools.count()

    def send(session_id: str, project_id: str, state: str, actions: dict[str, str]) -> None:
        via = front if next(replies) % 2 else engine
        # A manager tries again while the database is unreachable.
        for attempt in range(60):
            try:
                via.reply(session_id, project_id, state, actions)
                return
            except DBAPIError as error:
                if attempt == 59 or not is_database_fault(error):
                    raise
                time.sleep(0.5)

    ScriptedManager(engine, "p1", cloud=cloud, send=send)
    signal.signal(signal.SIGTERM, lambda *_: engine.stop())
    (workdir / f"ready-{incarnation}").touch()
    engine.run_forever()
    engine.close()
    front.close()


# --------------------------------------------------------------------------- evidence


@attrs.frozen
class SessionEvidence:
    state: str
    #: instance suffix -> completed migrations; host suffix -> action runs.
    migrations: dict[str, int]
    action_runs: dict[str, int]
    seq: int
    delivered_seq: int
    version: int
    reason: str | None = None  # why it failed, if it did: named in the problem


@attrs.frozen
class Delivery:
    session_id: str
    seq: int
    signal: str
    digest: str
    incarnation: str


@attrs.frozen
class Commit:
    session_id: str
    version: int
    owner: str
    token: int
    incarnation: str
    #: When it was logged (the machine's true time, seconds).
    at: float = 0.0


@attrs.frozen
class Evidence:
    sessions: dict[str, SessionEvidence]
    #: idempotency key -> moves the cloud recorded under it.
    move_keys: dict[str, int]
    deliveries: list[Delivery]
    commits: list[Commit]
    faults: dict[str, int] = attrs.field(factory=dict)
    lease_seconds: float = 0.0


def problems(evidence: Evidence, reference: SessionEvidence) -> list[str]:
    """What went wrong, compared with ``reference`` (a session of the same
    layout run without faults); [] when nothing did."""
    found: list[str] = []
    for sid, got in sorted(evidence.sessions.items()):
        for field in ("state", "migrations", "action_runs"):
            if getattr(got, field) != getattr(reference, field):
                found.append(
                    f"session {sid}: {field} {getattr(got, field)} != {getattr(reference, field)}"
                    + (f" ({got.reason})" if field == "state" and got.reason else "")
                )
        if got.delivered_seq != got.seq:
            found.append(f"session {sid}: delivered up to seq {got.delivered_seq} of {got.seq}")
    for key, count in sorted(evidence.move_keys.items()):
        if count > 1:
            found.append(f"cloud effect duplicated: {count} moves with key {key}")
    found += _delivery_problems(evidence)
    found += _commit_problems(evidence)
    return found


def _delivery_problems(evidence: Evidence) -> list[str]:
    found: list[str] = []
    by_seq: dict[tuple[str, int], list[Delivery]] = defaultdict(list)
    for delivery in evidence.deliveries:
        by_seq[delivery.session_id, delivery.seq].append(delivery)
    for sid, got in sorted(evidence.sessions.items()):
        missing = [q for q in range(1, got.seq + 1) if (sid, q) not in by_seq]
        if missing:
            found.append(f"session {sid}: notifications never delivered: seq {missing}")
    for (sid, seq), sent in sorted(by_seq.items()):
        stored = evidence.sessions.get(sid)
        if stored is None or seq > stored.seq:
            found.append(f"session {sid}: seq {seq} delivered but never recorded")
        if len({(d.signal, d.digest) for d in sent}) > 1:
            found.append(f"session {sid}: seq {seq} delivered with different payloads")
        twice = [i for i, n in Counter(d.incarnation for d in sent).items() if n > 1]
        if twice:
            found.append(f"session {sid}: seq {seq} delivered twice by worker process {twice}")
    return found


def _commit_problems(evidence: Evidence) -> list[str]:
    found: list[str] = []
    by_session: dict[str, list[Commit]] = defaultdict(list)
    for commit in evidence.commits:
        by_session[commit.session_id].append(commit)
    for sid, commits in sorted(by_session.items()):
        commits.sort(key=lambda c: (c.version, c.token))
        versions = Counter(c.version for c in commits)
        for version, count in sorted(versions.items()):
            if count > 1:
                who = [(c.owner, c.token) for c in commits if c.version == version]
                found.append(f"session {sid}: version {version} committed {count} times: {who}")
        stored = evidence.sessions.get(sid)
        if stored is not None and commits[-1].version > stored.version:
            found.append(
                f"session {sid}: version {commits[-1].version} logged, {stored.version} stored"
            )
        owners: dict[int, str] = {}
        for before, after in pairwise(commits):
            if after.token < before.token:
                found.append(
                    f"session {sid}: token went back from {before.token} (version "
                    f"{before.version}) to {after.token} (version {after.version})"
                )
        for before, after in pairwise(commits):
            # Another worker's first commit comes at least a lease after the
            # previous holder's last one (its lease ran from that step's
            # start; half a lease is left for the length of a step).
            gap = after.at - before.at
            if after.owner != before.owner and gap < evidence.lease_seconds / 2:
                found.append(
                    f"session {sid}: {after.owner} took a live lease: its version "
                    f"{after.version} {gap:.2f} s after {before.owner}'s version {before.version}"
                )
        for commit in commits:
            if owners.setdefault(commit.token, commit.owner) != commit.owner:
                found.append(
                    f"session {sid}: token {commit.token} used by {owners[commit.token]} "
                    f"and {commit.owner}"
                )
    return found


# --------------------------------------------------------------------------- the run


def leases_on_database_clock(url: str) -> bool:
    """Whether an engine on ``url`` decides lease expiry on the database's
    clock (issue 19): only then can a worker whose own clock is off never
    take a live lease."""
    with Engine(url, load_entry_points=False, worker_id="chaos-probe") as engine:
        return seams.leases_on_database_clock(engine)


def reference() -> SessionEvidence:
    """A session of the layout run alone, without faults, in this process
    (SQLite in memory, simulated time): what every chaos session must end as."""
    clock = SimClock()
    cloud = SimulatedCloud(0.0, 0.0)
    _fill(cloud, 1)
    action = TimedAction("upgrade", 60.0)
    with Engine("sqlite://", clock=clock, plugins=[cloud, action], load_entry_points=False) as e:
        ScriptedManager(e, "p1", cloud=cloud)
        hosts = [f"s000-{h}" for h in LAYOUT]
        sid = e.create_session(
            SessionRequest(hosts=hosts, actions=[ActionSpec(plugin="upgrade", type="host")])
        )
        state = e.run_until_done(sid).state
        stored = stored_clock(e.database, sid)
    return SessionEvidence(
        state=state,
        migrations={k.removeprefix("s000-"): n for k, n in migrations_per_instance(cloud).items()},
        action_runs={str(k).removeprefix("s000-"): n for k, n in Counter(action.hosts).items()},
        seq=stored.seq,
        delivered_seq=stored.delivered_seq,
        version=stored.version,
    )


def _fill(cloud: SimulatedCloud, sessions: int) -> None:
    cloud.add_host(SPARE[0], vcpus=SPARE[1])
    for i in range(sessions):
        for host, instances in LAYOUT.items():
            cloud.add_host(f"s{i:03d}-{host}", vcpus=4)
            for suffix, project, vcpus in instances:
                cloud.add_instance(f"s{i:03d}-{suffix}", project, f"s{i:03d}-{host}", vcpus=vcpus)


class ChaosRun:
    """One chaos run in ``workdir`` against the database ``url`` of
    ``server`` (an object with ``port`` and ``restart()``)."""

    def __init__(
        self,
        workdir: Path,
        url: str,
        server: Any,
        config: ChaosConfig,
        *,
        say: Callable[[str], None] = print,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.server = server
        self.config = config
        self.say = say
        self.rng = random.Random(config.seed)
        self.faults: Counter[str] = Counter()
        self.session_ids: list[str] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._starts: Counter[str] = Counter()
        self._restart_at: dict[str, float] = {}
        self._replaced: set[str] = set()

    # ------------------------------------------------------------ set-up

    def _build_cloud(self) -> SharedCloud:
        cloud = SharedCloud(self.dir / "cloud.json")
        _fill(cloud, self.config.sessions)
        return cloud

    def _write_setup(self, proxy_port: int | None) -> Path:
        url = self.url
        if proxy_port is not None:
            url = url.replace(f":{self.server.port}/", f":{proxy_port}/")
        setup = {
            "workdir": str(self.dir),
            "url": url,
            "lease_seconds": self.config.lease_seconds,
            "action_seconds": self._action_seconds(),
            "skews": self._skews(),
        }
        path = self.dir / "setup.json"
        path.write_text(json.dumps(setup))
        return path

    def _skews(self) -> dict[str, float]:
        """Worker slot -> how far its machine clock is ahead (the last one)."""
        if not self.config.faults:
            return {}
        return {self._worker_id(self.config.workers - 1): self.config.skew_seconds}

    def _action_seconds(self) -> float:
        """Long enough that the sessions (three hosts one after another)
        run through most of the faults."""
        c = self.config
        return c.action_seconds if c.action_seconds is not None else max(0.5, c.seconds / 5)

    @staticmethod
    def _worker_id(n: int) -> str:
        return f"worker-{n}"

    # ------------------------------------------------------------ workers

    def _start(self, slot: str, setup: Path, *, replaced: bool = False) -> None:
        """Start the worker of ``slot`` under the slot's id, or ``replaced``
        under a new one (a machine replaced: its old leases must expire)."""
        self._starts[slot] += 1
        incarnation = f"{slot}.{self._starts[slot]}"
        worker_id = incarnation if replaced else slot
        err = (self.dir / f"stderr-{incarnation}.log").open("w")
        self._procs[slot] = subprocess.Popen(
            [sys.executable, __file__, "worker", str(setup), worker_id, incarnation, slot],
            stdout=err,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        err.close()

    def _wait_ready(self) -> None:
        """Faults start once every worker runs (starting one takes seconds)."""
        deadline = time.monotonic() + 120
        while not all((self.dir / f"ready-{w}.1").exists() for w in self._procs):
            if time.monotonic() > deadline or any(
                p.poll() is not None for p in self._procs.values()
            ):
                raise RuntimeError(f"chaos: a worker did not start\n{self.worker_output()}")
            time.sleep(0.1)

    def _supervise(self, setup: Path, now: float) -> None:
        """Restart workers that exited (a service manager's Restart=always)."""
        for worker_id, proc in self._procs.items():
            if proc.poll() is None:
                continue
            due = self._restart_at.get(worker_id)
            if due is None:
                if proc.returncode != -signal.SIGKILL:
                    self.faults["worker exited on its own"] += 1
                self._restart_at[worker_id] = due = now + 0.5
            if now >= due:
                del self._restart_at[worker_id]
                self._start(worker_id, setup, replaced=worker_id in self._replaced)
                self._replaced.discard(worker_id)

    def _kill(self, worker_id: str, now: float) -> None:
        proc = self._procs[worker_id]
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.faults["SIGKILL"] += 1
        # Back soon under the same id (takes its leases back at once), or
        # replaced under a new one: the others take its sessions over once
        # its leases expired. The skewed worker keeps its id: on the worker's
        # clock its leases would outlive it by the skew.
        self._restart_at[worker_id] = now + self.rng.uniform(0.1, 2.5 * self.config.lease_seconds)
        if self.rng.random() < 0.5 and worker_id not in self._skews():
            self._replaced.add(worker_id)

    def _stop_all(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------ the run

    def schedule(self) -> list[tuple[float, str]]:
        """The faults, drawn from the seed: (seconds from the start, what)."""
        c = self.config
        if not c.faults:
            return []
        events: list[tuple[float, str]] = []
        t = self.rng.uniform(1.0, 3.0)
        while t < c.seconds:
            events.append((t, f"kill {self._worker_id(self.rng.randrange(c.workers))}"))
            t += self.rng.expovariate(1 / max(1.0, c.seconds / 8))
        t = self.rng.uniform(0.5, 2.0)
        while t < c.seconds:
            events.append((t, "drop connections"))
            t += self.rng.expovariate(1 / max(0.5, c.seconds / 15))
        for n in range(max(1, int(c.seconds // 60))):
            span = c.seconds / max(1, int(c.seconds // 60))
            events.append((n * span + self.rng.uniform(0.3, 0.6) * span, "restart postgresql"))
        return sorted(events)

    def run(self) -> Evidence:
        c = self.config
        self.say(
            f"chaos: seed {c.seed}, {c.workers} workers, {c.sessions} sessions, "
            f"{c.seconds:g} s of faults (replay: FENIX_CHAOS_SEED={c.seed})"
        )
        cloud = self._build_cloud()
        action = SharedAction(self.dir / "action.json", self._action_seconds())
        admin = Engine(
            self.url, plugins=[cloud, action], load_entry_points=False, worker_id="chaos-admin"
        )
        admin.subscribe("p1")
        proxy = TcpProxy(self.server.port) if c.faults else None
        setup = self._write_setup(proxy.port if proxy else None)
        events = self.schedule()
        self._create_all(admin)
        try:
            for n in range(c.workers):
                self._start(self._worker_id(n), setup)
            self._wait_ready()
            start = time.monotonic()
            while (now := time.monotonic() - start) < c.seconds:
                while events and events[0][0] <= now:
                    _, what = events.pop(0)
                    self._fault(what, now, proxy)
                self._supervise(setup, now)
                time.sleep(0.05)
            for worker_id in list(self._restart_at):  # no fault from here on
                self._restart_at[worker_id] = 0.0
            self._settle(admin, setup, start)
        finally:
            self._stop_all()
            if proxy is not None:
                proxy.close()
            with contextlib.suppress(Exception):
                admin.close()
        return self.evidence()

    def _create_all(self, admin: Engine) -> None:
        action = [ActionSpec(plugin="upgrade", type="host")]
        for i in range(self.config.sessions):
            hosts = [f"s{i:03d}-{h}" for h in LAYOUT]
            self.session_ids.append(
                admin.create_session(SessionRequest(hosts=hosts, actions=action))
            )

    def _fault(self, what: str, now: float, proxy: TcpProxy | None) -> None:
        if what.startswith("kill "):
            self._kill(what.removeprefix("kill "), now)
        elif what == "drop connections" and proxy is not None:
            self.faults["connections dropped"] += proxy.drop_all()
            self.faults["drops"] += 1
        elif what == "restart postgresql":
            self.server.restart()
            self.faults["PostgreSQL restarts"] += 1

    def _settle(self, admin: Engine, setup: Path, start: float) -> None:
        c = self.config
        deadline = time.monotonic() + (c.settle_seconds or max(90.0, c.seconds))
        while time.monotonic() < deadline:
            self._supervise(setup, time.monotonic() - start)
            try:
                if all(self._ended(admin, sid) for sid in self.session_ids):
                    return
            except Exception:  # the server may still be coming back
                pass
            time.sleep(0.2)
        self.say("chaos: not every session ended in time")

    @staticmethod
    def _ended(admin: Engine, session_id: str) -> bool:
        """Final, its last notifications marked delivered, due never again."""
        c = SessionClockRow
        with admin.database.connect() as db:
            row = db.execute(
                select(SessionRow.state, c.next_wake, c.seq, c.delivered_seq)
                .join(c, c.session_id == SessionRow.id)
                .where(SessionRow.id == session_id)
            ).one()
        return row.state in FINAL and row.next_wake is None and row.delivered_seq == row.seq

    # ------------------------------------------------------------ evidence

    def evidence(self) -> Evidence:
        state = json.loads((self.dir / "cloud.json").read_text())
        move_keys = Counter(m["key"] for m in state["migrations"].values())
        done = Counter(e["instance_id"] for e in state["events"] if e["kind"] == "migration_done")
        actions = self.dir / "action.json"
        runs = (
            Counter(h for _, h in json.loads(actions.read_text())["runs"])
            if actions.exists()
            else Counter()
        )
        sessions: dict[str, SessionEvidence] = {}
        with Engine(self.url, load_entry_points=False, worker_id="chaos-check") as engine:
            for i, sid in enumerate(self.session_ids):
                prefix = f"s{i:03d}-"
                stored = stored_clock(engine.database, sid)
                sessions[sid] = SessionEvidence(
                    state=engine.get_session(sid).state,
                    migrations={
                        k.removeprefix(prefix): n for k, n in done.items() if k.startswith(prefix)
                    },
                    action_runs={
                        k.removeprefix(prefix): n
                        for k, n in runs.items()
                        if k is not None and k.startswith(prefix)
                    },
                    seq=stored.seq,
                    delivered_seq=stored.delivered_seq,
                    version=stored.version,
                    reason=engine.get_session(sid).reason,
                )
        return Evidence(
            sessions=sessions,
            move_keys=dict(move_keys),
            deliveries=self._deliveries(),
            commits=self._commits(),
            faults=dict(self.faults),
            lease_seconds=self.config.lease_seconds,
        )

    def _deliveries(self) -> list[Delivery]:
        found: list[Delivery] = []
        for path in sorted(self.dir.glob("deliveries-*.log")):
            incarnation = path.stem.removeprefix("deliveries-")
            for line in path.read_text().splitlines():
                if line.endswith("}"):  # a line cut by SIGKILL is not a delivery record
                    d = json.loads(line)
                    found.append(Delivery(d["s"], d["q"], d["n"], d["d"], incarnation))
        return found

    def _commits(self) -> list[Commit]:
        found: list[Commit] = []
        for path in sorted(self.dir.glob("commits-*.log")):
            incarnation = path.stem.removeprefix("commits-")
            for line in path.read_text().splitlines():
                if line.endswith("}"):
                    d = json.loads(line)
                    at = float(d["time"])
                    found.append(
                        Commit(
                            d["session_id"], d["version"], d["owner"], d["token"], incarnation, at
                        )
                    )
        return found

    def worker_output(self, lines: int = 20) -> str:
        """The last lines of each worker process's output (for a failure)."""
        parts = []
        for path in sorted(self.dir.glob("stderr-*.log")):
            tail = path.read_text().splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker_main(*sys.argv[2:6])
