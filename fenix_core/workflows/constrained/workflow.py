"""The constrained workflow itself (:class:`ConstrainedWorkflow`): its hooks,
the feasibility check and scale-in, the waves and the hosts' stages, the
answers of the projects and the ends of the moves. The decisions and the
questions are the package's other modules'.

It advances only the open hosts whose stage's operation is not running. A
move's end reads the instances of its own wave (kept per project with the
counts), an answer the project's instances on the draining hosts."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import (
    Mapping,
)
from datetime import timedelta
from typing import Any, ClassVar

import attrs

from ... import planner
from ...contract import (
    DisableHost,
    EnableHost,
    HostUp,
    HostView,
    InstanceView,
    Inventory,
    ListHosts,
    Locate,
    Move,
    OpResult,
    OpStatus,
    RunAction,
    SessionContext,
    TimerFired,
    Watch,
)
from ...model import host_action_types
from ...states import (
    HostState,
    InstanceState,
    SessionState,
)
from ..base import IN_SCOPE, actions_of, retry_delay
from ..components.ending import NOT_ENABLED_AGAIN
from ..rolling import (
    MAX_SCALE_IN_ROUNDS,
    MAX_WAIT_ROUNDS,
    STAYS,
    RollingState,
    RollingWorkflow,
)
from . import caches, opening, placement
from .caches import _Counts
from .questions import _action_for, _ask, _asked_of, _plan
from .reads import _Step
from .state import (
    _ASKED,
    _FINAL,
    _MEMBER_STATES,
    _OPEN,
    _POSITION,
    _STAGE,
    _STAGED,
    _WAITING,
    BUSY,
    DISABLING,
    FIRST_DRAINED,
    WE_DISABLED,
    ConstrainedState,
    _new_stamp,
    _wake_at,
)
from .targeting import _all_targets


class ConstrainedWorkflow(RollingWorkflow):
    """Parallel, constraint-aware maintenance (``workflow="constrained"``)."""

    name: ClassVar[str] = "constrained"
    #: Managers may leave instances out of their reply: their constraints
    #: (migration_type, max_interruption_time) decide.
    requires_instance_actions: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[str, _Counts] = {}

    # ------------------------------------------------------------------ hooks

    def start(self, ctx: SessionContext) -> None:
        self._counts.pop(ctx.session_id, None)
        super().start(ctx)

    def on_retry(self, ctx: SessionContext) -> None:
        cst = ctx.state_of(ConstrainedState)
        for host in list(ctx.hosts.in_state(HostState.FAILED)):
            if host.stage:
                self._set_stage(ctx, host.name, 0)
        wave = cst.wave
        fresh = ConstrainedState(wave=wave)
        for field in attrs.fields(ConstrainedState):
            setattr(cst, field.name, getattr(fresh, field.name))
        cst.stamp = _new_stamp()
        super().on_retry(ctx)

    def advance(self, ctx: SessionContext) -> None:
        super().advance(ctx)
        if ctx.session.state in _FINAL:
            self._counts.pop(ctx.session_id, None)

    def on_timer(self, ctx: SessionContext, timer: TimerFired) -> None:
        if timer.name == "waves":
            ctx.state_of(ConstrainedState).wake = None
        super().on_timer(ctx, timer)

    def on_operation(self, ctx: SessionContext, result: OpResult) -> None:
        st = ctx.state_of(RollingState)
        op = result.op
        if isinstance(op, Inventory | ListHosts | Locate) and not self._found_nothing(ctx, result):
            self._changed(ctx)  # hosts or instances appeared or left: count again
        if ctx.session.state not in _FINAL and self._wave_op(ctx, op):
            if result.status != OpStatus.DONE and self._escalated(ctx, st, result):
                self._after(ctx, st)
                return
            if isinstance(op, Move | Watch):
                self._wave_move_ended(ctx, st, op, result)
            else:
                self._wave_host_op_ended(ctx, op, result)
            self._after(ctx, st)
            return
        if ctx.session.state in _FINAL and self._wave_op(ctx, op):
            self._wave_ended_later(ctx, st, op, result)
            self._after(ctx, st)
            return
        super().on_operation(ctx, result)

    def _found_nothing(self, ctx: SessionContext, result: OpResult) -> bool:
        """An emptied host's listing (``verify_empty``) that found no
        instance: nothing was added or placed anywhere, and what it may have
        found gone was on that host, which the counts do not cover."""
        op = result.op
        if not isinstance(op, Inventory) or len(op.hosts) != 1:
            return False
        view = ctx.hosts.get(op.hosts[0])
        return (
            result.status == OpStatus.DONE
            and not result.result.get("instances")
            and view is not None
            and view.state not in (HostState.PENDING, HostState.DRAINING)
        )

    def answered(
        self,
        ctx: SessionContext,
        project_id: str,
        awaited: str,
        instance_actions: Mapping[str, str],
    ) -> None:
        st = ctx.state_of(RollingState)
        if st.drain_host is not None:  # a controller drained alone
            super().answered(ctx, project_id, awaited, instance_actions)
            return
        if awaited != _ASKED:
            return
        cs = ctx.constraints
        # Those asked about are on the draining hosts: the project's
        # instances there (an index), not all of them, in id order.
        requested = [
            inst
            for host in ctx.hosts.in_state(HostState.DRAINING)
            for inst in ctx.instances.of_on(project_id, host.name)
            if inst.state == InstanceState.ACTION_REQUESTED
        ]
        requested.sort(key=lambda i: i.instance_id)
        for inst in requested:
            chosen = instance_actions.get(inst.instance_id)
            action = chosen or _action_for(ctx, inst, cs, managed=True)
            ctx.set_instance_state(inst.instance_id, InstanceState.ACTION_CHOSEN, action=action)

    # ------------------------------------------------------------------ decisions

    def _decide(self, ctx: SessionContext, st: RollingState) -> bool:
        """Controllers first, one at a time (the rolling way); then the
        computes in waves."""
        if st.phase == "listing":
            return False
        controllers = [
            h
            for h in ctx.hosts.in_state(HostState.PENDING, HostState.DRAINED)
            if h.type != "compute"
        ]
        if any(h.state == HostState.DRAINED for h in controllers) or any(
            h.type != "compute" for h in ctx.hosts.without_instances(HostState.PENDING)
        ):
            self._go(ctx, st, SessionState.START_MAINTENANCE)
            return True
        pending = [h for h in controllers if h.state == HostState.PENDING]
        planned = ctx.session.state == SessionState.PLANNED_MAINTENANCE
        if pending:
            if not planned:  # the least loaded first: its instances move again later
                pending.sort(key=lambda h: (self._used(ctx, h.name), h.position))
            choice = next((h.name for h in pending if self._fits_elsewhere(ctx, h.name)), None)
            if choice is None:
                return self._scale_in_or_fail(ctx, st, pending)
            if not ctx.admit(choice).admitted:
                return False
            st.listed = False
            self._go(
                ctx,
                st,
                SessionState.PLANNED_MAINTENANCE if planned else SessionState.PREPARE_MAINTENANCE,
            )
            st.drain_host, st.phase = choice, "disable"
            st.waiting_move, st.move_attempts, st.refused, st.retry_wait = None, 0, (), False
            return True
        if not ctx.hosts.in_state(HostState.PENDING, *_OPEN):
            self._go(ctx, st, SessionState.MAINTENANCE_COMPLETE)
            st.phase = "post"
            return True
        if not planned:
            if not self._feasible(ctx, st):
                return False
            st.listed = False
        # (Once in the waves, ``listed`` is reset when a host opens: resetting
        # it at each decision listed the hosts again and again at one instant
        # when nothing could open.)
        self._go(ctx, st, SessionState.PLANNED_MAINTENANCE)
        st.phase = "waves"
        return True

    def _drain(self, ctx: SessionContext, st: RollingState) -> bool:
        if st.phase == "waves":
            return self._waves(ctx, st)
        return super()._drain(ctx, st)

    def _next_host_to_maintain(self, ctx: SessionContext) -> HostView | None:
        """START_MAINTENANCE here is for controllers only, one at a time: a
        drained one, else an empty one; computes are maintained in the waves."""
        for host in ctx.hosts.in_state(HostState.DRAINED):
            if host.type != "compute":
                return host
        for host in ctx.hosts.without_instances(HostState.PENDING):
            if host.type != "compute":
                return host
        return None

    # ------------------------------------------------------------------ feasibility

    def _feasible(self, ctx: SessionContext, st: RollingState) -> bool:
        """Before any compute is touched: can the constraints hold at all?
        (Once per session: it reads every host and instance.)"""
        step = _Step(self, ctx, self._counts_of(ctx))
        counts: Counter[str] = Counter()
        owners: dict[str, str] = {}
        pending: list[planner.HostLoad] = []
        for host in ctx.hosts:
            for inst in ctx.instances.on(host.name):
                if inst.state in IN_SCOPE or inst.state == InstanceState.OUT_OF_SCOPE:
                    g = step.group(inst)
                    counts[g] += 1
                    owners[g] = inst.project_id
            if host.state == HostState.PENDING and host.type == "compute":
                pending.append(
                    planner.HostLoad(host.name, tuple(step.members_on(host.name)), host.position)
                )
        rules = {g: step.rule(g) for g in counts}
        targets = _all_targets(ctx, step)
        bad = planner.infeasible_groups(counts, rules, len(targets))
        if bad:
            details = "; ".join(
                f"group {ctx.constraints.group_by_key(g).group_id} of project {owners[g]} has "
                f"{counts[g]} members and allows {rules[g].host_limit()} per host, but only "
                f"{len(targets) - 1} hosts stay in service while one is maintained"
                for g in bad
            )
            self._scale_in_or_fail_for(ctx, st, {owners[g] for g in bad}, details)
            return False
        member_rules = {m.group_id: step.rule(m.group_id) for load in pending for m in load.members}
        if planner.drains_by_count(pending, targets, member_rules):
            return True  # the dry run's verdict, by counting
        _order, stuck = planner.drain_sequence(pending, targets, member_rules)
        if stuck is None:
            return True
        limited = sorted(
            {
                m.group_id
                for m in stuck.members
                if m.group_id in member_rules and member_rules[m.group_id].host_limit()
            }
        )
        if limited:
            owners_of = {m.group_id: m.project_id for m in stuck.members}
            why = (
                f"host {stuck.host} cannot be emptied: its instances of group(s) "
                + ", ".join(ctx.constraints.group_by_key(g).group_id for g in limited)
                + " find no host with room that keeps their anti-affinity or per-host limit"
            )
            self._scale_in_or_fail_for(ctx, st, {owners_of[g] for g in limited}, why)
        else:
            self._scale_in_or_fail(
                ctx, st, list(ctx.hosts.in_state(HostState.PENDING, type="compute"))
            )
        return False

    def _scale_in_or_fail_for(
        self, ctx: SessionContext, st: RollingState, projects: set[str], why: str
    ) -> None:
        if not st.listed:
            ctx.submit(ListHosts())  # a host added meanwhile may make room
            st.phase = "listing"
            return
        managed = sorted(p for p in projects if self._managed(ctx, p))
        rounds = st.scale_in_rounds
        if not managed:
            ctx.fail(f"the constraints cannot hold during maintenance: {why}")
            return
        if rounds >= MAX_SCALE_IN_ROUNDS or (rounds and st.scale_in_freed <= 0):
            ctx.fail(f"the constraints still cannot hold after {rounds} SCALE_IN round(s): {why}")
            return
        st.scale_in_rounds += 1
        st.scale_in_load = self._load(ctx)
        st.listed = False
        self._go(ctx, st, SessionState.SCALE_IN)
        st.phase = "confirm"
        self.ask_projects(
            ctx,
            "SCALE_IN",
            {
                p: [i.instance_id for i in ctx.instances.of(p) if i.state in IN_SCOPE]
                for p in managed
            },
            metadata={**ctx.request.metadata, "reason": why},
        )

    # ------------------------------------------------------------------ waves

    def _waves(self, ctx: SessionContext, st: RollingState) -> bool:
        cst = ctx.state_of(ConstrainedState)
        step = _Step(self, ctx, self._counts_of(ctx))
        self._run_hosts(ctx, step)
        if ctx.session.state in _FINAL:
            return False
        held = False
        for _ in range(2):  # opening hosts may let more moves start at once
            _ask(self, ctx, step, cst)
            held = placement._pump(ctx, step, cst) or held
            if ctx.session.state in _FINAL:
                return False
            step = step.next()  # the moves just sent arrive somewhere
            opened, waits = opening._open(ctx, step, cst)
            held = held or waits
            if not opened:
                break
            step = step.next()
        self._run_hosts(ctx, step)
        if ctx.session.state in _FINAL:
            return False
        if not ctx.hosts.in_state(HostState.PENDING, *_OPEN) and not ctx.instances.in_state(
            InstanceState.IN_ACTION
        ):
            return self._decide(ctx, st)
        if not held and not self._in_flight(ctx, cst):
            self._stuck(ctx, st, step, cst)
        return False

    def _in_flight(self, ctx: SessionContext, cst: ConstrainedState) -> bool:
        """Anything that will wake the session by itself: a move, a host's
        operation, a question, a timer of the waves."""
        if ctx.instances.in_state(InstanceState.IN_ACTION) or cst.wake is not None:
            return True
        if ctx.projects.awaiting_count():
            return True
        # One state at a time, the index's lists as they are (the hosts of
        # several states together are sorted first; any one will do), the
        # states where most hosts are BUSY first.
        return any(
            h.stage & (BUSY | DISABLING)
            for state in (*_STAGED, HostState.DRAINING)
            for h in ctx.hosts.in_state(state)
        )

    def _run_hosts(self, ctx: SessionContext, step: _Step) -> None:
        """Advance every open host that may: an emptied draining one becomes
        drained, a drained one runs its stages (side by side). A host whose
        stage's operation runs (BUSY) is advanced when it ends
        (:meth:`_wave_host_op_ended`), so only the others are looked at: the
        draining hosts without instances (an index) and the idle ones."""
        hosts = list(ctx.hosts.without_instances(HostState.DRAINING))
        hosts += self._idle_open(ctx, step.counts)
        hosts.sort(key=_POSITION)
        for host in hosts:
            if host.type != "compute":
                continue
            if (
                host.state == HostState.DRAINING
                and not host.stage & DISABLING
                and not host.enabled
                and not self._in_scope_on(ctx, host.name)
                and host.name not in step.arrivals()  # read only when it decides
            ):
                ctx.set_host_state(host.name, HostState.DRAINED)
                host = ctx.hosts.get(host.name) or host
            if host.state in (HostState.DRAINED, HostState.IN_MAINTENANCE):
                self._run_wave_host(ctx, host)
                if ctx.session.state in _FINAL:
                    return

    def _idle_open(self, ctx: SessionContext, counts: _Counts) -> list[HostView]:
        """The DRAINED and IN_MAINTENANCE hosts that are not BUSY. Most open
        hosts are BUSY, and they stay so for many steps: the idle ones are
        kept (``_Counts.idle_open``) and all of them are looked at again only
        after a host changed state, or when ``counts`` are no longer the
        session's (counted again since: :meth:`_set_stage` keeps the new ones)."""
        changes = ctx.hosts.changes()
        if counts.idle_open_at != changes or self._counts.get(ctx.session_id) is not counts:
            counts.idle_open = {
                h.name for state in _STAGED for h in ctx.hosts.in_state(state) if not h.stage & BUSY
            }
            counts.idle_open_at = changes
        idle = []
        for name in list(counts.idle_open):
            view = ctx.hosts.get(name)
            if view is not None and view.state in _STAGED and not view.stage & BUSY:
                idle.append(view)
            else:
                counts.idle_open.discard(name)
        return idle

    def _set_stage(self, ctx: SessionContext, host: str, stage: int) -> None:
        """``ctx.set_host_stage``, the host kept among the idle open ones
        (:meth:`_idle_open`) when it is not BUSY."""
        ctx.set_host_stage(host, stage)
        counts = self._counts.get(ctx.session_id)
        if counts is not None and not stage & BUSY:
            counts.idle_open.add(host)

    def _run_wave_host(self, ctx: SessionContext, host: HostView) -> None:
        """Advance the host's stages as far as possible (the rolling stages;
        it was disabled before its drain)."""
        flags = host.stage & ~_STAGE
        index = host.stage & _STAGE
        if flags & BUSY:
            return
        st = ctx.state_of(RollingState)
        stages = self._stages(ctx, st, host)
        specs = actions_of(ctx.request.actions, *host_action_types(host.type))
        while index < len(stages):
            view = ctx.hosts.get(host.name)
            assert view is not None
            name = stages[index]
            if name == "verify_empty":
                ctx.submit(Inventory((host.name,)))
                self._set_stage(ctx, host.name, index | flags | BUSY)
                return
            if name == "notify_in":
                if not ctx.admit(host.name).admitted:
                    break  # paused: a host not yet in maintenance does not go in
                if self._in_scope_on(ctx, host.name):
                    # Something arrived since it was emptied (a replacement
                    # pod, a scheduler's choice): it waits with the pending
                    # hosts to be drained again (a drained host cannot go
                    # back to DRAINING).
                    ctx.set_host_state(host.name, HostState.PENDING)
                    self._set_stage(ctx, host.name, flags & ~FIRST_DRAINED)
                    cst = ctx.state_of(ConstrainedState)
                    if cst.partial == host.name:
                        cst.partial, cst.partial_twice = None, 0
                    self._changed(ctx)
                    return
                ctx.set_host_state(host.name, HostState.IN_MAINTENANCE)
                ctx.notify_host(host.name, "IN_MAINTENANCE")
            elif name == "disable":
                if view.enabled:
                    ctx.submit(
                        DisableHost(host.name, reason=f"maintenance session {ctx.session_id}")
                    )
                    self._set_stage(ctx, host.name, index | flags | BUSY)
                    return
            elif name.startswith("action:"):
                spec = specs[int(name.partition(":")[2])]
                ctx.submit(RunAction(spec, f"host:{host.name}", host.name))
                self._set_stage(ctx, host.name, index | flags | BUSY)
                return
            elif name == "host_up":
                ctx.submit(HostUp(host.name))
                self._set_stage(ctx, host.name, index | flags | BUSY)
                return
            elif name == "enable":
                if flags & WE_DISABLED:
                    ctx.submit(EnableHost(host.name))
                    self._set_stage(ctx, host.name, index | flags | BUSY)
                    return
            elif name == "decommission":
                ctx.set_host_state(
                    host.name, HostState.DECOMMISSIONED, reason="decommissioned: left disabled"
                )
                ctx.host_done(host.name)
                flags &= ~WE_DISABLED  # never enabled again, also not on failure
            elif name == "notify_complete":
                ctx.set_host_state(host.name, HostState.MAINTAINED)
                ctx.host_done(host.name)
                ctx.notify_host(host.name, "MAINTENANCE_COMPLETE")
            index += 1
        self._set_stage(ctx, host.name, index | flags)

    def _wave_op(self, ctx: SessionContext, op: Any) -> bool:
        """Whether the operation is the waves' (not the controllers' rolling part)."""
        if isinstance(op, Move | Watch):
            inst = ctx.instances.get(op.instance_id)
            host = ctx.hosts.get(inst.host) if inst is not None else None
            st = ctx.state_of(RollingState)
            return host is not None and host.type == "compute" and st.drain_host is None
        if isinstance(op, Inventory):
            if len(op.hosts) != 1:
                return False
            view = ctx.hosts.get(op.hosts[0])
            return view is not None and view.type == "compute" and bool(view.stage & BUSY)
        if isinstance(op, DisableHost | EnableHost | HostUp | RunAction) and op.host is not None:
            view = ctx.hosts.get(op.host)
            return (
                view is not None
                and view.type == "compute"
                and bool(view.stage & (BUSY | DISABLING))
            )
        return False

    def _wave_host_op_ended(self, ctx: SessionContext, op: Any, result: OpResult) -> None:
        host: str = op.hosts[0] if isinstance(op, Inventory) else op.host
        view = ctx.hosts.get(host)
        assert view is not None
        ok = result.status == OpStatus.DONE
        flags, index = view.stage & ~_STAGE, view.stage & _STAGE
        if view.state in (HostState.SKIPPED, HostState.REMOVED):
            self._set_stage(ctx, host, index | (flags & ~(BUSY | DISABLING)))
            return
        if isinstance(op, DisableHost) and flags & DISABLING:
            flags &= ~DISABLING
            if not ok:
                self._set_stage(ctx, host, index | flags)
                self._host_failed(ctx, host, f"disable host on {host} failed: {result.detail}")
                return
            self._set_stage(ctx, host, index | flags | WE_DISABLED)
            return
        flags &= ~BUSY
        if not ok and isinstance(op, HostUp):
            why = f"host {host} did not come back after maintenance: {result.detail}"
            self._set_stage(ctx, host, index | (flags & ~WE_DISABLED))  # left disabled
            ctx.set_host_state(host, HostState.FAILED, reason=why + "; left disabled")
            ctx.fail(why)
            return
        if not ok:
            what = (
                f"{op.spec.type} action {op.spec.plugin!r} failed on {host}"
                if isinstance(op, RunAction)
                else f"{type(op).__name__} on {host} failed"
            )
            self._set_stage(ctx, host, index | flags)
            self._host_failed(ctx, host, f"{what}: {result.detail}")
            return
        if isinstance(op, DisableHost):
            flags |= WE_DISABLED
        elif isinstance(op, EnableHost):
            flags &= ~WE_DISABLED
        self._set_stage(ctx, host, (index + 1) | flags)
        fresh = ctx.hosts.get(host)
        assert fresh is not None
        self._run_wave_host(ctx, fresh)

    def _wave_ended_later(
        self, ctx: SessionContext, st: RollingState, op: Any, result: OpResult
    ) -> None:
        """After the end: keep the records right, decide nothing."""
        if isinstance(op, Move | Watch):
            self._wave_move_ended(ctx, st, op, result)
            return
        host: str = op.hosts[0] if isinstance(op, Inventory) else op.host
        view = ctx.hosts.get(host)
        if view is None:
            return
        flags, index = view.stage & ~_STAGE, view.stage & _STAGE
        flags &= ~(BUSY | DISABLING)
        if result.status == OpStatus.DONE and isinstance(op, DisableHost):
            flags |= WE_DISABLED
        elif isinstance(op, EnableHost):
            flags &= ~WE_DISABLED  # enabled again (or it failed: not tried twice)
        elif result.status != OpStatus.DONE and isinstance(op, HostUp):
            flags &= ~WE_DISABLED  # did not come back: left disabled
        self._set_stage(ctx, host, index | flags)

    def _after(self, ctx: SessionContext, st: RollingState) -> None:
        was_ended = st.ended
        super()._after(ctx, st)
        if ctx.session.state not in _FINAL or ctx.session.state == SessionState.MAINTENANCE_DONE:
            return
        if not was_ended:
            cst = ctx.state_of(ConstrainedState)
            ctx.cancel_timer("waves")
            for iid, _attempts, _refused in cst.retrying:
                ctx.cancel_timer(f"retry_move:{iid}")
            cst.retrying, cst.wake = (), None
        # Enable again every host this session disabled in the waves, once
        # nothing runs on it (after the end: a pass over the hosts per step).
        for host in ctx.hosts:
            if not host.stage & WE_DISABLED or host.stage & (BUSY | DISABLING):
                continue
            if host.state in NOT_ENABLED_AGAIN or host.enabled:
                self._set_stage(ctx, host.name, host.stage & ~WE_DISABLED)
                continue
            ctx.submit(EnableHost(host.name))
            self._set_stage(ctx, host.name, host.stage | BUSY)

    # ------------------------------------------------------------------ the moves' ends

    def _wave_move_ended(
        self, ctx: SessionContext, st: RollingState, op: Move | Watch, result: OpResult
    ) -> None:
        inst = ctx.instances.get(op.instance_id)
        if inst is None:
            return
        cst = ctx.state_of(ConstrainedState)
        origin = ctx.hosts.get(inst.host)
        ok = result.status == OpStatus.DONE
        if not ok and (origin is None or origin.state in (HostState.SKIPPED, HostState.REMOVED)):
            self._forget_retry(cst, op.instance_id)
            if inst.state == InstanceState.IN_ACTION:
                left = origin is not None and origin.state == HostState.SKIPPED
                ctx.set_instance_state(
                    op.instance_id, InstanceState.FAILED if left else InstanceState.PENDING
                )
            return
        if not ok and ctx.session.state in _FINAL:
            if inst.state == InstanceState.IN_ACTION:
                ctx.set_instance_state(op.instance_id, InstanceState.PENDING)
            return
        if not ok and isinstance(op, Watch):
            ctx.set_instance_state(op.instance_id, InstanceState.FAILED)
            ctx.fail(
                f"instance {op.instance_id} of project {inst.project_id} was not moved off "
                f"its host by its manager (OWN_ACTION): {result.detail}"
            )
            return
        if not ok:
            assert isinstance(op, Move)
            self._wave_move_failed(ctx, cst, op, inst, result)
            return
        self._forget_retry(cst, op.instance_id)
        if result.result.get("gone"):
            ctx.set_instance_state(op.instance_id, InstanceState.GONE)
        else:
            where = ctx.hosts.get(inst.host)
            stays = where is not None and where.state in STAYS
            ctx.set_instance_state(
                op.instance_id, InstanceState.DONE if stays else InstanceState.PENDING
            )
        counts = self._counts_of(ctx)
        step = _Step(self, ctx, counts)
        g = step.group(inst)
        recovery = float(step.rule(g).recovery_time)
        moved = ctx.instances.get(op.instance_id)
        assert moved is not None
        if recovery > 0:
            until = ctx.now + timedelta(seconds=recovery)
            ctx.set_instance_plan(
                op.instance_id, wave=moved.wave, not_before=None, impacted_until=until
            )
            mirrored = counts.recovery
            if mirrored is not None and mirrored.source == cst.recoveries:
                mirrored.add(op.instance_id, g, until)
                mirrored.source = cst.recoveries + 1
            cst.recoveries += 1
        # The per-group counts: one member less to do, or one more on a pending
        # host (an instance still on an open host did not leave it).
        dest = ctx.hosts.get(moved.host)
        counts.pending_loads.pop(moved.host, None)  # one more member waits there
        if moved.state == InstanceState.GONE or dest is None or dest.state not in _OPEN:
            counts.refed.add(g)
            if moved.state == InstanceState.GONE or dest is None or dest.state != HostState.PENDING:
                counts.todo[g] -= 1
            else:
                counts.pending_hosts_of.setdefault(g, set()).add(moved.host)
                counts.pending_member(g, moved.vcpus, step.limited(g), +1)
                counts.parked.add(moved.host)
                if dest.type == "compute":  # its load is worked out when it is the lightest
                    heapq.heappush(counts.pending_floor, (0, moved.host))
            cst.stamp = counts.stamp = _new_stamp()
        elif dest.state == HostState.DRAINING and moved.state == InstanceState.PENDING:
            # Sent while it was a target: it lands, is asked about, and leaves.
            counts.unasked.add(moved.host)
            counts.blocked.pop(moved.host, None)
            cst.stamp = counts.stamp = _new_stamp()
        if ctx.session.state in _FINAL:
            return
        if self._managed(ctx, inst.project_id):
            ctx.notify_project(inst.project_id, "INSTANCE_ACTION_DONE", [op.instance_id])
        self._admin_action_done(ctx, cst, counts, moved)

    def _wave_move_failed(
        self,
        ctx: SessionContext,
        cst: ConstrainedState,
        op: Move,
        inst: InstanceView,
        result: OpResult,
    ) -> None:
        entry = next((e for e in cst.retrying if e[0] == op.instance_id), None)
        attempts = entry[1] if entry else 0
        refused = set(entry[2]) if entry else set()
        if result.result.get("refused") and op.target is not None:
            # The cloud refused the host (no room, its rules), nothing was
            # started: not an attempt. The host is listed again, so that what
            # filled it (another session, a tenant) counts in the next plan.
            refused.add(op.target)
            self._relist_refused(ctx, op.target)
        elif (
            result.result.get("refused")
            and cst.waited < MAX_WAIT_ROUNDS
            and self._out_of_service_elsewhere(ctx)
        ):
            # Its scheduler found no host while another session maintains one
            # outside this session: its room comes back; not an attempt.
            cst.waited += 1
        else:
            attempts += 1
        ctx.set_instance_state(op.instance_id, InstanceState.ACTION_CHOSEN)
        if attempts <= ctx.request.max_migration_retries:
            due = ctx.now + retry_delay(attempts + cst.waited, f"{ctx.session_id}:{op.instance_id}")
            self._forget_retry(cst, op.instance_id)
            cst.retrying = (*cst.retrying, (op.instance_id, attempts, tuple(sorted(refused))))
            # Not moved again before its back-off: the waves wake up for it.
            ctx.set_instance_plan(
                op.instance_id, wave=inst.wave, not_before=due, impacted_until=inst.impacted_until
            )
            _wake_at(ctx, cst, due)
            return
        self._forget_retry(cst, op.instance_id)
        ctx.set_instance_state(op.instance_id, InstanceState.FAILED)
        ctx.fail(
            f"{op.action} of instance {op.instance_id} from {inst.host} failed after "
            f"{attempts} attempt(s): {result.detail}"
        )

    @staticmethod
    def _relist_refused(ctx: SessionContext, host: str) -> None:
        """List what runs on a refused target now (the engine applies it to
        the session's facts). Only a host the waves never drain: the listing
        must not be taken for a drained host's own."""
        view = ctx.hosts.get(host)
        if view is not None and view.state in STAYS:
            ctx.submit(Inventory((host,)))

    @staticmethod
    def _forget_retry(cst: ConstrainedState, instance_id: str) -> None:
        if any(e[0] == instance_id for e in cst.retrying):
            cst.retrying = tuple(e for e in cst.retrying if e[0] != instance_id)

    def _admin_action_done(
        self, ctx: SessionContext, cst: ConstrainedState, counts: _Counts, inst: InstanceView
    ) -> None:
        """ADMIN_ACTION_DONE to a project once every instance it was asked
        about in one wave has moved."""
        wave = inst.wave
        if wave is None:
            return
        ids = sorted(_asked_of(ctx, counts, inst.project_id).get(wave, ()))
        asked = [v for i in ids if (v := ctx.instances.get(i)) is not None and v.wave == wave]
        if any(i.state in (*_WAITING, InstanceState.IN_ACTION) for i in asked):
            return
        for i in asked:
            _plan(ctx, counts, i, None, i.not_before)
        cst.stamp = counts.stamp = _new_stamp()  # the waves asked changed
        if self._managed(ctx, inst.project_id):
            ctx.notify_project(
                inst.project_id, "ADMIN_ACTION_DONE", sorted(i.instance_id for i in asked)
            )

    # ------------------------------------------------------------------ bookkeeping

    def _counts_of(self, ctx: SessionContext) -> _Counts:
        """This session's per-group counts, rebuilt from the views if another
        process stepped it, or the constraints changed."""
        cst = ctx.state_of(ConstrainedState)
        cs = ctx.constraints
        found = self._counts.get(ctx.session_id)
        if found is not None and found.stamp == cst.stamp and found.constraints is cs:
            return found
        found = caches._Counts(cst.stamp, cs)
        step = _Step(self, ctx, found)
        for host in ctx.hosts:
            if host.state == HostState.DRAINING:
                found.unasked.add(host.name)
                found.undisabled.add(host.name)
            elif host.state != HostState.PENDING:
                continue
            load = 0
            for inst in ctx.instances.on(host.name):
                if inst.state in (InstanceState.GONE, InstanceState.OUT_OF_SCOPE):
                    continue
                g = step.group(inst)
                found.todo[g] += 1
                if step.ruled(inst.instance_id):
                    found.any_ruled = True
                if step.limited(g):
                    found.any_limited = True
                if host.state == HostState.PENDING:
                    found.pending_member(g, inst.vcpus, step.limited(g), +1)
                    if inst.moves:
                        found.parked.add(host.name)
                    if inst.state in _MEMBER_STATES:  # as its load counts it
                        found.pending_hosts_of.setdefault(g, set()).add(host.name)
                        load += inst.vcpus
            if load and host.type == "compute":
                found.pending_floor.append((load, host.name))
        heapq.heapify(found.pending_floor)
        self._counts[ctx.session_id] = found
        return found

    def _changed(self, ctx: SessionContext) -> None:
        """Hosts or instances changed outside the workflow: count again."""
        self._counts.pop(ctx.session_id, None)
        ctx.state_of(ConstrainedState).stamp = _new_stamp()

    def _stuck(
        self, ctx: SessionContext, st: RollingState, step: _Step, cst: ConstrainedState
    ) -> None:
        """Nothing in flight, nothing to wait for, hosts left: say why and
        fail; or, while a host outside the session is out of service, wait
        for it (up to MAX_WAIT_ROUNDS times in a session)."""
        waiting = [
            i.instance_id
            for h in ctx.hosts.in_state(HostState.DRAINING)
            for i in ctx.instances.on(h.name)
            if i.state == InstanceState.ACTION_CHOSEN
        ]
        if waiting and cst.waited < MAX_WAIT_ROUNDS and self._out_of_service_elsewhere(ctx):
            # Another session maintains a host outside this one: its room
            # comes back with it (the inventory tells when it is enabled).
            cst.waited += 1
            _wake_at(ctx, cst, ctx.now + retry_delay(cst.waited, ctx.session_id))
            return
        if waiting:
            ctx.fail(
                "no target host has room for "
                + ", ".join(waiting[:5])
                + (" ..." if len(waiting) > 5 else "")
                + " within capacity, anti-affinity and per-host limits"
            )
            return
        pending = list(ctx.hosts.in_state(HostState.PENDING, type="compute"))
        if pending:
            self._scale_in_or_fail(ctx, st, pending)
