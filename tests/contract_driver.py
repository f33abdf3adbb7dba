"""A driver that plays the engine and the cloud around a FakeContext, so a
workflow on the contract runs a whole session without an engine.

Each event (an operation ending, a reply, a timer) is applied as the engine
would (the views change first, then the hook runs), then ``advance``; the
workflow's component state goes through ``to_json``/``from_json`` after each
step as the store would persist it. The invariants of host work are checked
as the workflow submits it; a violation raises ``AssertionError``."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from fenix_core.contract import (
    DisableHost,
    EnableHost,
    HostUp,
    InstanceView,
    Inventory,
    ListHosts,
    Locate,
    Move,
    Operation,
    OpRef,
    OpResult,
    OpStatus,
    ProjectReply,
    RunAction,
    SessionContext,
    TimerFired,
    Watch,
    Workflow,
)
from fenix_core.states import FINAL_SESSION_STATES, HostState, InstanceState, SessionState
from fenix_core.testing.contract import FakeContext

#: (project, state, instance ids) -> (reply state, instance actions), or None:
#: the project stays silent
Answer = Callable[[str, str, tuple[str, ...]], tuple[str, Mapping[str, str]] | None]
BUSY = frozenset({HostState.DRAINING, HostState.DRAINED, HostState.IN_MAINTENANCE})


def ack(project: str, state: str, ids: tuple[str, ...]) -> tuple[str, Mapping[str, str]] | None:
    return f"ACK_{state}", {}


class LoggingContext(FakeContext):
    """FakeContext that also keeps one ordered log of what each project and
    host was sent (questions and notices interleaved, as a project sees them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log: list[tuple[str, str]] = []
        # (project, state, allowed actions, metadata) of each question
        self.questions: list[tuple[str, str, tuple[str, ...], Mapping[str, Any] | None]] = []

    def ask(self, state: str, instances: Mapping[str, Sequence[str]], **kwargs: Any) -> None:
        super().ask(state, instances, **kwargs)
        self.log += [(p, state) for p in instances]
        allowed = tuple(kwargs.get("allowed_actions", ()))
        self.questions += [(p, state, allowed, kwargs.get("metadata")) for p in instances]

    def notify_project(self, project_id: str, state: str, instance_ids: Sequence[str]) -> None:
        super().notify_project(project_id, state, instance_ids)
        self.log.append((project_id, state))

    def notify_host(self, host: str, state: str) -> None:
        super().notify_host(host, state)
        self.log.append((host, state))


class Driver:
    def __init__(
        self,
        ctx: LoggingContext,
        workflow: Workflow,
        *,
        answer: Answer = ack,
        refuse: frozenset[tuple[str, str | None]] = frozenset(),
        fail_moves: Mapping[str, int] | None = None,
        refuse_first: frozenset[str] = frozenset(),
        scale_in: Mapping[str, Sequence[str]] | None = None,
        openings: Sequence[str] = (),
        delays: Mapping[str, float] | None = None,
        resume_when_idle: bool = True,
        fail_ops: Mapping[tuple[str, str], int] | None = None,
        stuck: Mapping[tuple[str, str], int] | None = None,
        admin_skips: Mapping[str, HostState] | None = None,
        when: Sequence[
            tuple[Callable[[LoggingContext], bool], Callable[[LoggingContext], None]]
        ] = (),
        where: Mapping[str, str | None] | None = None,
        appearing: Mapping[str, tuple[int, bool]] | None = None,
        arrive: Mapping[str, Sequence[InstanceView]] | None = None,
    ) -> None:
        self.ctx, self.wf, self.answer = ctx, workflow, answer
        self.refuse = refuse  # (instance, target) the cloud refuses (TargetRefused)
        self.fail_moves = dict(fail_moves or {})  # instance -> failures before it moves
        self.refuse_first = set(refuse_first)  # instances whose first target is refused
        self.scale_in = dict(scale_in or {})  # project -> instances it deletes at SCALE_IN
        self.openings = deque(openings)  # closed hosts, opened in this order when idle
        self.delays = dict(delays or {})  # project -> seconds its replies take
        self.events: deque[tuple[str, Any]] = deque()
        # replies on their way: (arrival, order, (project, state, ids))
        self.later: list[tuple[datetime, int, tuple[str, str, tuple[str, ...]]]] = []
        self.late: list[tuple[str, str]] = []  # replies refused: no longer awaited
        self.resume_when_idle = resume_when_idle  # a paused session resumed when idle
        self.resumed_at: list[datetime] = []
        # (operation class name, host) -> how many times it fails before it works
        self.fail_ops = dict(fail_ops or {})
        # (operation class name, host or instance) -> times it passes its deadline
        self.stuck = dict(stuck or {})
        # host -> the state in which the admin skips it (before the next step)
        self.admin_skips = dict(admin_skips or {})
        # (condition, what happens): once, before the first step the condition holds
        self.when = list(when)
        # instance -> where the cloud reports it once its host is gone (None: lost)
        self.where = dict(where or {})
        # add_hosts the cloud lists: host -> (vcpus, enabled); the others never appear
        self.appearing = dict(appearing or {})
        # host -> instances the cloud lists there at its next listing of that host
        self.arrive = {h: list(v) for h, v in (arrive or {}).items()}
        self.seen_ops = 0
        self.seen_asks = 0
        # hosts whose DisableHost ended, or disabled before the session
        self.disabled = {h.name for h in ctx.hosts if not h.enabled}
        self.host_actions: list[str] = []  # hosts RunAction ran on, in order
        self.moves: list[tuple[str, str | None, frozenset[str]]] = []  # (instance, target, refused)
        self.steps = 0

    def view(self) -> SessionContext:
        """The context the workflow's hooks get (the engine's is a new one
        each step over the same session)."""
        return self.ctx

    @property
    def final(self) -> bool:
        return self.ctx.session.state in FINAL_SESSION_STATES

    # ------------------------------------------------------------------ the loop

    def run(self, limit: int = 20_000) -> None:
        self.wf.start(self.view())
        self._step()
        self._loop(limit)

    def retry(self, limit: int = 20_000) -> None:
        """The admin retries the failed session: the engine puts it back in
        MAINTENANCE and calls ``on_retry``."""
        assert self.ctx.session.state == SessionState.MAINTENANCE_FAILED
        self.ctx.transition(SessionState.MAINTENANCE)
        self.wf.on_retry(self.view())
        self._step()
        self._loop(limit)

    def finish(self) -> None:
        """Let what is under way end after the session ended (operations end,
        the workflow is told; nothing new is decided)."""
        while self.events:
            kind, payload = self.events.popleft()
            if kind == "op":
                self._end(*payload)
                self._step()

    def _loop(self, limit: int) -> None:
        while not self.final and self.steps < limit:
            timer = min(self.ctx.timers.items(), key=lambda t: t[1][0], default=None)
            if self.events:
                kind, payload = self.events.popleft()
                if kind == "op":
                    self._end(*payload)
                elif payload[0] in self.delays:
                    arrival = self.ctx.now + timedelta(seconds=self.delays[payload[0]])
                    heapq.heappush(self.later, (arrival, self.steps, payload))
                    continue  # nothing happened yet
                else:
                    self._reply(*payload)
            elif self.later and (timer is None or self.later[0][0] <= timer[1][0]):
                arrival, _, payload = heapq.heappop(self.later)
                self.ctx.now = max(self.ctx.now, arrival)
                self._reply(*payload)
            elif timer is not None:
                name, (due, data) = timer
                del self.ctx.timers[name]
                self.ctx.now = max(self.ctx.now, due)
                self.wf.on_timer(self.view(), TimerFired(name, due, data))
            elif self.ctx.paused is not None and self.resume_when_idle:
                self.ctx.now += timedelta(hours=1)  # the admin resumes
                self.ctx.paused = None
                self.resumed_at.append(self.ctx.now)
            elif self.openings:
                self.ctx.now += timedelta(hours=1)  # a window opens
                self.ctx.closed.pop(self.openings.popleft(), None)
            else:
                return  # nothing more will happen
            self._step()
        self.finish()

    def _step(self) -> None:
        self.steps += 1
        for entry in list(self.when):
            condition, happen = entry
            if condition(self.ctx):
                self.when.remove(entry)
                happen(self.ctx)
        for host, when in list(self.admin_skips.items()):
            view = self.ctx.hosts.get(host)
            if view is not None and view.state == when:
                # the admin skips it: the engine marks it, then steps
                del self.admin_skips[host]
                self.ctx.skip_host(host, "by the admin")
        self.wf.advance(self.view())
        for kind, comp in list(self.ctx.components.items()):  # as the store persists it
            self.ctx.components[kind] = kind.from_json(comp.to_json(), kind.schema_version)
        self._check_state()
        for ref, op in self.ctx.submitted[self.seen_ops :]:
            self._check_submitted(op)
            self.events.append(("op", (ref, op)))
        self.seen_ops = len(self.ctx.submitted)
        for project, asked in self.ctx.asked[self.seen_asks :]:
            for state, ids in asked.items():
                self.events.append(("ask", (project, state, ids)))
        self.seen_asks = len(self.ctx.asked)

    # ------------------------------------------------------------------ invariants

    def _check_state(self) -> None:
        hosts = list(self.ctx.hosts)
        busy = [h.name for h in hosts if h.state in BUSY]
        assert len(busy) <= 1, f"more than one host out at once: {busy}"
        used: dict[str, int] = {}
        for inst in self.ctx._instances.values():  # one pass, not one per host
            if inst.state != InstanceState.GONE:
                used[inst.host] = used.get(inst.host, 0) + inst.vcpus
        for host in hosts:
            assert used.get(host.name, 0) <= host.vcpus, f"{host.name} over capacity"

    def _check_submitted(self, op: Operation) -> None:
        host = op.host if isinstance(op, DisableHost | RunAction) else None
        if isinstance(op, Move | Watch):
            inst = self.ctx.instances.get(op.instance_id)
            assert inst is not None
            host = inst.host
            assert host in self.disabled, f"{op} off {host} before the host was disabled"
            if isinstance(op, Move):
                assert op.target is None or op.target not in op.refused, op
        if host is not None:
            assert host not in self.ctx.closed, f"{op} on {host} while its window is closed"
        if isinstance(op, RunAction) and op.host is not None:
            assert (op.host, "IN_MAINTENANCE") in self.ctx.notified, (
                f"actions on {op.host} before IN_MAINTENANCE"
            )
            left = [
                i.instance_id
                for i in self.ctx.instances.on(op.host)
                if i.state not in (InstanceState.GONE, InstanceState.OUT_OF_SCOPE)
            ]
            assert not left, f"{op.host}'s action runs with instances on it: {left}"
            self.host_actions.append(op.host)

    # ------------------------------------------------------------------ the cloud

    def _end(self, ref: OpRef, op: Operation) -> None:
        ctx = self.ctx
        status, detail, result = OpStatus.DONE, None, {}
        host = getattr(op, "host", None)
        subject = (type(op).__name__, host or getattr(op, "instance_id", ""))
        if self.stuck.get(subject, 0) > 0:
            self.stuck[subject] -= 1
            detail = "not finished by its deadline"
            self.wf.on_operation(self.view(), OpResult(ref, op, OpStatus.FAILED, detail, {}, True))
            return
        if self.fail_ops.get((type(op).__name__, host or ""), 0) > 0:
            self.fail_ops[(type(op).__name__, host or "")] -= 1
            self.wf.on_operation(self.view(), OpResult(ref, op, OpStatus.FAILED, "it broke", {}))
            return
        gone_from = (
            ctx.instances.get(op.instance_id).host  # type: ignore[union-attr]
            if isinstance(op, Move | Watch)
            else host
        )
        gone = ctx.hosts.get(gone_from) if gone_from else None
        if gone is not None and gone.state == HostState.REMOVED:
            self.wf.on_operation(self.view(), OpResult(ref, op, OpStatus.FAILED, "host gone", {}))
            return
        if isinstance(op, Locate):
            found = {}
            for instance_id in op.instance_ids:
                found[instance_id] = self.where.get(instance_id)
                if found[instance_id] is not None:
                    ctx.placed(instance_id, str(found[instance_id]))
            self.wf.on_operation(self.view(), OpResult(ref, op, status, None, {"where": found}))
            return
        if isinstance(op, DisableHost):
            ctx.host_enabled(op.host, False)
            self.disabled.add(op.host)
        elif isinstance(op, EnableHost):
            ctx.host_enabled(op.host, True)
            self.disabled.discard(op.host)
        elif isinstance(op, Move | Watch):
            refused = op.refused if isinstance(op, Move) else frozenset()
            target = op.target if isinstance(op, Move) else None
            if isinstance(op, Move):
                self.moves.append((op.instance_id, op.target, op.refused))
            if target is None:  # the cloud's scheduler (or the manager) chooses
                target = next(iter(ctx.capacity.targets(op.instance_id, exclude=refused)), None)
            if isinstance(op, Move) and (
                (op.instance_id, op.target) in self.refuse or op.instance_id in self.refuse_first
            ):
                self.refuse_first.discard(op.instance_id)
                status, detail, result = OpStatus.FAILED, "TargetRefused", {"refused": True}
            elif self.fail_moves.get(op.instance_id, 0) > 0:
                self.fail_moves[op.instance_id] -= 1
                status, detail = OpStatus.FAILED, "migration failed"
            elif target is None:
                status, detail = OpStatus.FAILED, "no valid host"
            else:
                ctx.placed(op.instance_id, target)
                result = {"host": target}
        elif isinstance(op, Inventory) and any(h in self.arrive for h in op.hosts):
            for host in op.hosts:  # the engine adds what the listing found
                for inst in self.arrive.pop(host, []):
                    ctx._instances[inst.instance_id] = inst
        elif isinstance(op, Inventory) and ctx.session.state == SessionState.SCALE_IN:
            for ids in self.scale_in.values():
                for instance_id in ids:
                    ctx.vanished(instance_id)
            self.scale_in = {}
        elif isinstance(op, ListHosts):
            missing = [h for h in op.wait_for if h not in self.appearing]
            if missing:
                status, detail = OpStatus.FAILED, f"timed out after 120 s: {', '.join(missing)}"
            for name in op.wait_for:  # the engine fills in what the listing found
                if name in self.appearing:
                    vcpus, on = self.appearing[name]
                    ctx._hosts[name] = attrs.evolve(ctx._hosts[name], vcpus=vcpus, enabled=on)
        else:
            assert isinstance(op, RunAction | HostUp | Inventory), op
        self.wf.on_operation(self.view(), OpResult(ref, op, status, detail, result))

    def _reply(self, project: str, state: str, ids: tuple[str, ...]) -> None:
        answer = self.answer(project, state, ids)
        if answer is None:
            return  # silent
        view = self.ctx.projects.get(project)
        if view is None or view.awaiting != state:
            # The engine refuses it (the deadline passed, or it was not asked).
            self.late.append((project, state))
            return
        reply_state, actions = answer
        self.ctx.answered(project, reply_state)
        self.wf.on_reply(self.view(), ProjectReply(project, reply_state, actions, self.ctx.now))


def start_time() -> datetime:
    from datetime import UTC

    return datetime(2026, 1, 1, tzinfo=UTC)
