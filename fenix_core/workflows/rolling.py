"""The rolling workflow on the contract: OpenStack Fenix's default sequence,
one host at a time.

::

    MAINTENANCE ──► (all answered, maintenance_at reached, ``pre`` actions) ──► decide
    decide: an empty host or a drained one ───────► START_MAINTENANCE
            a host whose instances fit elsewhere ─► PREPARE_MAINTENANCE (no compute
                                                    maintained yet) / PLANNED_MAINTENANCE
            no room: list the hosts again, then ─► SCALE_IN (managed projects) or fail
            every host done ─────────────────────► MAINTENANCE_COMPLETE
    drain:  admitted by the pipeline, the host is disabled FIRST, then listed
            (what the session knows may be old), then its projects are asked
            how to move each instance; one migration at a
            time off the host (OWN_ACTION moves are watched, all at once);
            INSTANCE_ACTION_DONE per instance, ADMIN_ACTION_DONE per project
    START_MAINTENANCE: disable (if not yet), list (an instance that arrived
            sends it back to be drained, before any other host), IN_MAINTENANCE
            announced (the work starts at the next step), the host's actions,
            back up, enable, MAINTENANCE_COMPLETE
    MAINTENANCE_COMPLETE: ``post`` actions, MAINTENANCE_COMPLETE to every
            project ──► MAINTENANCE_DONE

The state it keeps (:class:`RollingState`) has a constant size: the host
being drained or maintained, the stage, the one migration off it while it
waits (under way, its instance says which: IN_ACTION on the drained host, so
a move step does not rewrite the state). Per-host and per-instance facts are
in the views. Targets come from
``ctx.capacity.targets`` (the cloud's placement rules, moves in flight
counted); among them a host where an instance can stay (maintained, added,
outside the session) is preferred, so each instance moves once where
capacity allows. A target the cloud refused is not asked for again in that
move, and the refusal is not an attempt: the refused host is listed again
(another session or a tenant may have filled it), the next target is listed
before it is asked for, then the cloud's scheduler is asked (a move without
a target); a round in which every host refused counts as one attempt (not
while a host outside the session is out of service, up to MAX_WAIT_ROUNDS).

Around that sequence (see ``components``): questions have deadlines
(``reply_policy``); the hosts are listed and ``add_hosts`` brought in before
the first decision; a host the session retires ends DECOMMISSIONED; stuck
work is escalated (``controls.escalation``); a skipped or removed host is
left behind and its instances followed; a failed or cancelled session winds
down and enables the host it disabled; ``on_retry`` starts it over.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Self

import attrs

from ..contract import (
    ComponentState,
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
    ProjectReply,
    ReplyOutcome,
    RunAction,
    SessionContext,
    TimerFired,
    Watch,
)
from ..model import ActionSpec, Host, Instance, SessionRequest
from ..placement_rules import HARD_POLICIES, HostLimits, PlacementRule
from ..planner import capacity_shortfall
from ..states import (
    FINAL_SESSION_STATES,
    HOST_TRANSITIONS,
    HostState,
    InstanceAction,
    InstanceState,
    SessionState,
    instance_action,
)
from .base import (
    IN_SCOPE,
    WorkflowBase,
    actions_of,
    allowed_actions,
    default_action,
    host_action_types,
    retry_delay,
)
from .components.ending import NOT_ENABLED_AGAIN, wind_down
from .components.escalation import stuck_work
from .components.lifecycle import apply_located, lost_instances, stop_asking_about_nothing

__all__ = ["MAX_SCALE_IN_ROUNDS", "MAX_WAIT_ROUNDS", "SCHEDULER", "RollingState", "RollingWorkflow"]

#: SCALE_IN rounds before the session gives up on getting an empty host.
MAX_SCALE_IN_ROUNDS = 5
#: Rounds of one move in which every host refused it that are not counted as
#: attempts while a host outside the session is out of service (another
#: session maintains it: its room comes back); the back-off grows with them.
MAX_WAIT_ROUNDS = 8
#: In ``RollingState.refused``: the move without a target was refused too.
SCHEDULER = ""
#: Hosts an instance placed on does not have to leave again.
STAYS = frozenset({HostState.MAINTAINED, HostState.ADDED, HostState.OUT_OF_SCOPE})
#: Hosts that are finished work.
FINISHED = frozenset(
    {HostState.MAINTAINED, HostState.DECOMMISSIONED, HostState.REMOVED, HostState.SKIPPED}
)
_DRAIN_STATES = (SessionState.PREPARE_MAINTENANCE, SessionState.PLANNED_MAINTENANCE)
#: Timer of the step after a host's IN_MAINTENANCE (its work starts then).
_ANNOUNCED = "announced"
#: A host whose work ended without being done: skipped, or gone from the cloud.
_LEFT = frozenset({HostState.SKIPPED, HostState.REMOVED})
_FINAL = FINAL_SESSION_STATES
_NOT_MOVING = frozenset(
    {InstanceState.PENDING, InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN}
)
# Members read in the drain's loops over a host's instances (a module global
# is a quarter of the cost of an Enum class attribute).
_PENDING = InstanceState.PENDING
_CHOSEN = InstanceState.ACTION_CHOSEN
_IN_ACTION = InstanceState.IN_ACTION
_OWN_ACTION = InstanceAction.OWN_ACTION


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


def _move_key(inst: InstanceView) -> tuple[int, str]:
    return -inst.vcpus, inst.instance_id


def _move_order(instances: Iterable[InstanceView]) -> list[InstanceView]:
    """Largest first: the order a drain migrates in and plans in."""
    return sorted(instances, key=_move_key)


def _ahead(a: tuple[int, int, int, str, bool], b: tuple[int, int, int, str, bool]) -> bool:
    """Whether host ``a`` ranks before ``b`` once the room taken is gone
    (``Rolling._target_after``): by room left and name at an equal penalty,
    else as ``targets`` ranked them (the penalty decides)."""
    if a[1] == b[1]:
        return a[2:4] < b[2:4]
    return a[0] < b[0]


def _planned_avoid(
    ctx: SessionContext,
    instance_id: str,
    rules: Iterable[PlacementRule],
    placed: Mapping[str, str],
) -> set[str]:
    """The hosts an anti-affinity rule of ``instance_id`` forbids once the
    instances ``placed`` have moved there (the cloud counts them then)."""
    avoid: set[str] = set()
    for rule in rules:
        if rule.policy != "anti-affinity":
            continue
        planned = [placed[m] for m in rule.members if m != instance_id and m in placed]
        for host in set(planned):
            here = planned.count(host)
            for member in rule.members:
                if member == instance_id or member in placed:
                    continue
                other = ctx.instances.get(member)
                if other is not None and host in (other.host, other.target):
                    here += 1
            if here >= rule.max_per_host:
                avoid.add(host)
    return avoid


# No conversion on assignment (the code assigns tuples; loading converts): the
# setattr hook attrs generates for converters made every assignment a Python call.
@attrs.define(slots=True, on_setattr=attrs.setters.NO_OP)
class RollingState(ComponentState):
    """What the rolling workflow remembers between steps (constant size)."""

    component: ClassVar[str] = "rolling"
    #: 2: ``moving`` (the one migration off the drain host, rewritten at
    #: every move's start and end) gave way to ``waiting_move``: a migration
    #: under way is the instance IN_ACTION on the drain host.
    schema_version: ClassVar[int] = 2

    phase: str = "confirm"
    pre_done: int = 0
    post_done: int = 0
    action_running: bool = False  # a pre/post action runs
    drain_host: str | None = None
    we_disabled: str | None = None  # the host this session disabled, to enable it again
    current_host: str | None = None  # the host being maintained
    stage: int = 0  # its pipeline stage
    host_op: bool = False  # an operation of that stage runs
    # The one migration off the drain host (``RollingWorkflow._moving``, called
    # "moving" below) while no Move of it is under way: chosen, waiting for its
    # retry, a relisting or a Locate. None while it is under way: its instance,
    # IN_ACTION on the drain host with a migration, says which (a body of
    # schema 1 may name one under way: the same migration).
    waiting_move: str | None = None
    move_attempts: int = 0
    refused: tuple[str, ...] = attrs.field(default=(), converter=_strings)  # of ``moving``
    # "<host>: <why>" per refusal of ``moving``, in order (read only while
    # ``refused`` is not empty: it starts again with a move's first refusal)
    refusals: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    retry_wait: bool = False
    # After a refusal a target is chosen on fresh facts (another session or a
    # tenant may have filled it since the session last looked): the host being
    # listed now, and the last one listed since ``moving``'s first refusal in
    # this round (read only while ``refused`` is not empty). One is enough: a
    # host found full is not chosen again, so the listings end.
    relisting: str | None = None
    relisted: str | None = None
    waited: int = 0  # rounds of ``moving`` that waited for hosts out of service
    scale_in_rounds: int = 0
    scale_in_load: int = 0
    scale_in_freed: int = 0
    listed: bool = False  # hosts listed again since the last decision that found no room
    ended: bool = False  # the session ended without completing and was wound down
    locating: bool = False  # a Locate of a removed host's instances runs (or waits)
    hosts_listed: bool = False  # the cloud's hosts were listed before the first decision
    adding: bool = False  # that listing, or bringing in a host of add_hosts, runs
    host_down: str | None = None  # the host that did not come back up: left disabled

    @classmethod
    def from_json(cls, data: Mapping[str, Any], version: int) -> Self:
        if version == 1:
            # Stored by the release before: its ``moving``, under way or not,
            # is the one migration (``_move_ended`` lets it go at its Move's end).
            data = {("waiting_move" if k == "moving" else k): v for k, v in data.items()}
            version = 2
        return super().from_json(data, version)


def _is_relisting(st: RollingState, op: object) -> bool:
    """Whether ``op`` is the listing of a possible target after a refusal."""
    return isinstance(op, Inventory) and st.relisting is not None and op.hosts == (st.relisting,)


class RollingWorkflow(WorkflowBase):
    """Fenix default semantics: hosts are maintained one at a time."""

    name: ClassVar[str] = "rolling"
    state: ClassVar[type[ComponentState] | None] = RollingState
    _retiring_memo: tuple[SessionRequest, frozenset[str]] | None = None
    _plans_memo: (
        tuple[
            SessionRequest, dict[tuple[str, bool], tuple[tuple[str, ...], tuple[ActionSpec, ...]]]
        ]
        | None
    ) = None
    _handlers: dict[SessionState, Callable[[SessionContext, RollingState], bool]] | None = None

    # ------------------------------------------------------------------ hooks

    def start(self, ctx: SessionContext) -> None:
        st = ctx.state_of(RollingState)
        affected = self._affected(ctx)
        unmanaged = sorted(p for p in affected if not self._managed(ctx, p))
        if ctx.request.project_policy == "fail" and unmanaged:
            ctx.fail(
                "projects without an application manager: "
                + ", ".join(unmanaged)
                + " (project_policy is 'fail')"
            )
            return
        st.phase = "confirm"
        self.ask_projects(ctx, "MAINTENANCE", affected)

    def on_retry(self, ctx: SessionContext) -> None:
        """The admin retried the failed session (the engine put it back in
        MAINTENANCE): failed hosts and instances are pending again, the
        workflow forgets where it was (``pre``/``post`` actions that ran are
        not run again; a host it disabled is still known) and starts over."""
        st = ctx.state_of(RollingState)
        for host in list(ctx.hosts.in_state(HostState.FAILED)):
            ctx.set_host_state(host.name, HostState.PENDING)
        for inst in list(ctx.instances.in_state(InstanceState.FAILED)):
            ctx.set_instance_state(inst.instance_id, InstanceState.PENDING)
        kept = {"pre_done", "post_done", "action_running", "we_disabled", "host_op"}
        fresh = RollingState()
        for field in attrs.fields(RollingState):
            if field.name not in kept:
                setattr(st, field.name, getattr(fresh, field.name))
        self.start(ctx)

    def advance(self, ctx: SessionContext) -> None:
        handlers = self._handlers
        if handlers is None:  # made once per workflow object, not at every step
            handlers = self._handlers = {
                SessionState.MAINTENANCE: self._maintenance,
                SessionState.SCALE_IN: self._scale_in,
                SessionState.PREPARE_MAINTENANCE: self._drain,
                SessionState.PLANNED_MAINTENANCE: self._drain,
                SessionState.START_MAINTENANCE: self._start_maintenance,
                SessionState.MAINTENANCE_COMPLETE: self._complete,
            }
        st = ctx.state_of(RollingState)
        state = ctx.session.state
        if state not in _FINAL and not st.locating:
            lost = lost_instances(ctx)
            if lost:  # a host left the cloud: where are its instances now?
                ctx.submit(Locate(lost))
                st.locating = True
        while state not in _FINAL:
            if not handlers[state](ctx, st):
                break
            state = ctx.session.state
        self._after(ctx, st)

    def on_reply(self, ctx: SessionContext, reply: ProjectReply) -> ReplyOutcome:
        outcome = super().on_reply(ctx, reply)
        self._after(ctx, ctx.state_of(RollingState))
        return outcome

    def answered(
        self,
        ctx: SessionContext,
        project_id: str,
        awaited: str,
        instance_actions: Mapping[str, str],
    ) -> None:
        if awaited not in _DRAIN_STATES:
            return
        host = ctx.state_of(RollingState).drain_host
        if host is None:
            return
        for inst in ctx.instances.of_on(project_id, host):
            if inst.state == InstanceState.ACTION_REQUESTED:
                action = instance_actions.get(inst.instance_id) or default_action(
                    inst.live_migratable, allowed_actions(ctx)
                )
                ctx.set_instance_state(inst.instance_id, InstanceState.ACTION_CHOSEN, action=action)

    def on_timer(self, ctx: SessionContext, timer: TimerFired) -> None:
        super().on_timer(ctx, timer)
        st = ctx.state_of(RollingState)
        if timer.name.startswith("retry_move:") and timer.name == (
            f"retry_move:{self._moving(ctx, st)}"
        ):
            st.retry_wait = False
        elif timer.name == _ANNOUNCED:
            st.host_op = False
        elif timer.name == "locate":
            st.locating = False
        self._after(ctx, st)

    def on_operation(self, ctx: SessionContext, result: OpResult) -> None:
        st = ctx.state_of(RollingState)
        if ctx.session.state in _FINAL:
            self._ended_later(ctx, st, result)
        else:
            self._operation_ended(ctx, st, result)
        self._after(ctx, st)

    def _operation_ended(self, ctx: SessionContext, st: RollingState, result: OpResult) -> None:
        op, ok = result.op, result.status == OpStatus.DONE
        if _is_relisting(st, op):
            # A possible target listed after a refusal (the engine applied
            # what it found; a failed or late listing leaves the facts as
            # they were: the move goes on, the cloud has the last word).
            st.relisted, st.relisting, st.retry_wait = st.relisting, None, False
            return
        if not ok and self._escalated(ctx, st, result):
            return
        if isinstance(op, EnableHost) and st.adding:
            adding = ctx.hosts.get(op.host)
            if adding is not None and adding.state == HostState.ADDING:
                if not ok:
                    ctx.fail(f"enable host of {op.host} (add_hosts) failed: {result.detail}")
                    return
                self._added(ctx, adding)
                return
        if isinstance(op, DisableHost | EnableHost | HostUp | RunAction) and op.host is not None:
            view = ctx.hosts.get(op.host)
            if view is None or view.state in _LEFT:
                # Its host was skipped or left the cloud: its work is over.
                if op.host == st.current_host:
                    st.host_op = False
                return
        if isinstance(op, Move | Watch):
            self._move_ended(ctx, st, op, result)
        elif isinstance(op, RunAction) and op.host is None:
            st.action_running = False
            if not ok:
                ctx.fail(f"{op.spec.type} action {op.spec.plugin!r} failed: {result.detail}")
            elif op.sequence == "pre":
                st.pre_done += 1
            else:
                st.post_done += 1
        elif isinstance(op, DisableHost) and op.host == st.drain_host and st.phase == "disabling":
            if not ok:
                self._host_failed(
                    ctx, op.host, f"disable host on {op.host} failed: {result.detail}"
                )
                return
            st.we_disabled = op.host
            st.phase = "list_host"
        elif (
            isinstance(op, Inventory)
            and st.phase == "listing_host"
            and op.hosts == (st.drain_host,)
        ):
            if not ok:
                self._host_failed(
                    ctx, op.hosts[0], f"inventory on {op.hosts[0]} failed: {result.detail}"
                )
                return
            st.phase = "drain"
        elif isinstance(op, DisableHost | EnableHost | HostUp | RunAction):
            st.host_op = False
            host = op.host
            assert host is not None
            if not ok and isinstance(op, HostUp):
                why = f"host {host} did not come back after maintenance: {result.detail}"
                st.host_down = host
                ctx.set_host_state(host, HostState.FAILED, reason=why + "; left disabled")
                ctx.fail(why)
                return
            if not ok:
                what = (
                    f"{op.spec.type} action {op.spec.plugin!r} failed on {host}"
                    if isinstance(op, RunAction)
                    else f"{'disable' if isinstance(op, DisableHost) else 'enable'} host on "
                    f"{host} failed"
                )
                self._host_failed(ctx, host, f"{what}: {result.detail}")
                return
            if isinstance(op, DisableHost):
                st.we_disabled = host
            elif isinstance(op, EnableHost):
                st.we_disabled = None
            st.stage += 1
        elif isinstance(op, ListHosts) and st.adding and st.phase == "hosts":
            st.adding = False
            if not ok and op.wait_for:
                ctx.fail(f"hosts named in add_hosts did not appear: {result.detail}")
        elif isinstance(op, ListHosts):
            st.listed = True
            st.phase = "decide"
        elif isinstance(op, Locate):
            self._located(ctx, st, op, ok)
        elif isinstance(op, Inventory) and st.adding and st.phase == "hosts":
            st.adding = False  # what runs on the added host is known (or not: no matter)
        elif isinstance(op, Inventory) and st.host_op and op.hosts == (st.current_host,):
            st.host_op = False
            if not ok:
                self._host_failed(
                    ctx, op.hosts[0], f"inventory on {op.hosts[0]} failed: {result.detail}"
                )
                return
            st.stage += 1
        elif (
            isinstance(op, Inventory)
            and ctx.session.state == SessionState.SCALE_IN
            and st.phase == "refresh"
        ):
            if not ok:
                ctx.fail(f"listing instances failed: {result.detail}")
                return
            st.scale_in_freed = st.scale_in_load - self._load(ctx)
            st.phase = "decide"

    def _located(self, ctx: SessionContext, st: RollingState, op: Locate, ok: bool) -> None:
        """A ``Locate`` ended (the engine placed the instances it found)."""
        moving = self._moving(ctx, st)
        if moving is not None and moving in op.instance_ids:
            # The migration whose target left: it moves again as it was
            # chosen if it is still on the host being drained.
            st.retry_wait = False
            inst = ctx.instances.get(moving)
            if not ok or (
                inst is not None
                and inst.host == st.drain_host
                and inst.state == InstanceState.ACTION_CHOSEN
            ):
                if not ok:
                    st.locating = False
                return
            st.waiting_move, st.move_attempts, st.refused = None, 0, ()
        if ok:
            st.locating = False
            apply_located(ctx, op.instance_ids, STAYS)
        else:  # ask again in a minute; nothing works on a removed host meanwhile
            ctx.set_timer("locate", ctx.now + timedelta(seconds=60))

    @staticmethod
    def _target_left(ctx: SessionContext, op: Move | Watch) -> bool:
        if not isinstance(op, Move) or op.target is None:
            return False
        target = ctx.hosts.get(op.target)
        return target is None or target.state == HostState.REMOVED

    # ------------------------------------------------------------------ stuck, skipped

    def _escalated(self, ctx: SessionContext, st: RollingState, result: OpResult) -> bool:
        """Apply ``controls.escalation`` to work that passed its deadline;
        True if that settled it (failed the session, or skipped the host)."""
        stuck = stuck_work(ctx, result)
        if stuck is None:
            return False
        op = result.op
        if isinstance(op, RunAction) and op.host is None:
            st.action_running = False
        elif not isinstance(op, Move | Watch) and getattr(op, "host", None) == st.current_host:
            st.host_op = False
        if stuck.policy == "fail":
            if isinstance(op, Move | Watch):
                ctx.set_instance_state(op.instance_id, InstanceState.PENDING)  # still there
            ctx.fail(stuck.why)
            return True
        view = ctx.hosts.get(stuck.host) if stuck.host is not None else None
        if view is None or HostState.SKIPPED not in HOST_TRANSITIONS[view.state]:
            return False  # no host to skip: the workflow's own handling
        if isinstance(op, Move | Watch):
            # Not followed any more: where it ends up is not known.
            ctx.set_instance_state(op.instance_id, InstanceState.FAILED)
        ctx.skip_host(view.name, stuck.why)
        self._host_skipped(ctx, st, view.name)
        return True

    def _host_skipped(self, ctx: SessionContext, st: RollingState, host: str) -> None:
        """``host`` was skipped (escalation, or the admin): it is left as it
        is (disabled if it is), its instances wait no more, the session goes
        on with the next host."""
        for inst in list(ctx.instances.on(host)):
            if inst.state in (InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN):
                ctx.set_instance_state(inst.instance_id, InstanceState.PENDING)
            ctx.cancel_timer(f"retry_move:{inst.instance_id}")
        moving_id = self._moving(ctx, st)
        moving = ctx.instances.get(moving_id) if moving_id is not None else None
        if moving is not None and moving.host == host:
            st.waiting_move, st.move_attempts, st.refused, st.retry_wait = None, 0, (), False
        if st.drain_host == host:
            st.drain_host, st.phase = None, ""
        if st.current_host == host:
            st.current_host, st.stage, st.host_op = None, 0, False
        if st.we_disabled == host:
            st.we_disabled = None  # never enabled again by this session
        stop_asking_about_nothing(ctx)

    # ------------------------------------------------------------------ ending

    def _ended_later(self, ctx: SessionContext, st: RollingState, result: OpResult) -> None:
        """An operation under way when the session ended has ended: keep the
        records right (where an instance is, which host is disabled), decide
        nothing."""
        op, ok = result.op, result.status == OpStatus.DONE
        if isinstance(op, Move | Watch):
            self._move_ended(ctx, st, op, result)
        elif _is_relisting(st, op):
            st.relisting = None
        elif isinstance(op, RunAction) and op.host is None:
            st.action_running = False
        elif isinstance(op, Inventory) and op.hosts == (st.current_host,):
            st.host_op = False  # the listing before IN_MAINTENANCE
        elif isinstance(op, DisableHost | EnableHost | HostUp | RunAction):
            st.host_op = False
            if ok and isinstance(op, DisableHost):
                st.we_disabled = op.host
            elif ok and isinstance(op, EnableHost):
                st.we_disabled = None
        if isinstance(op, DisableHost) and st.phase == "disabling":
            st.phase = ""

    def _after(self, ctx: SessionContext, st: RollingState) -> None:
        """Once the session failed or was cancelled: wind down (once), then
        enable again the host this session disabled, as soon as nothing runs
        on it, unless it did not come back up or was skipped or retired."""
        state = ctx.session.state
        if state not in _FINAL or state == SessionState.MAINTENANCE_DONE:
            return
        if not st.ended:
            st.ended = True
            wind_down(ctx, ctx.session.reason or ctx.session.state.value)
            ctx.cancel_timer("start")
            ctx.cancel_timer("locate")
            moving = self._moving(ctx, st)
            if moving is not None:
                ctx.cancel_timer(f"retry_move:{moving}")
            st.retry_wait = False
        host = st.we_disabled
        if host is None or st.host_op or st.phase == "disabling" or host == st.host_down:
            return
        view = ctx.hosts.get(host)
        if view is None or view.state in NOT_ENABLED_AGAIN or view.enabled:
            st.we_disabled = None
            return
        ctx.submit(EnableHost(host))
        st.host_op = True

    # ------------------------------------------------------------------ states

    def _maintenance(self, ctx: SessionContext, st: RollingState) -> bool:
        if st.phase == "confirm":
            if ctx.projects.awaiting_count("MAINTENANCE"):
                return False
            start_at = ctx.request.maintenance_at
            if start_at is not None and start_at > ctx.now:
                ctx.set_timer("start", start_at)
                st.phase = "wait_start"
                return False
            st.phase = "pre"
        if st.phase == "wait_start":
            # Read again each time: the admin may have moved the start.
            start_at = ctx.request.maintenance_at
            if start_at is not None and start_at > ctx.now:
                ctx.set_timer("start", start_at)
                return False
            ctx.cancel_timer("start")
            st.phase = "pre"
        if st.phase == "pre":
            if st.action_running:
                return False
            if not self._run_session_actions(ctx, st, "pre"):
                return False
            st.phase = "hosts"
        if st.phase == "hosts":
            if not self._hosts_ready(ctx, st):
                return False
            shortfall = self._shortfall(ctx)
            if shortfall is not None:
                ctx.fail(shortfall)
                return False
            st.phase = "decide"
        return self._decide(ctx, st)

    def _hosts_ready(self, ctx: SessionContext, st: RollingState) -> bool:
        """True once the cloud's hosts were listed again before the first
        decision (the session may have waited for hours, a ``pre`` action
        may have changed them) and every host of ``add_hosts`` is in
        service: listed (the engine fills in what the listing found),
        enabled if it was not, ADDED, and what runs on it known."""
        if st.adding:
            return False
        adding = sorted(ctx.hosts.in_state(HostState.ADDING), key=lambda h: h.position)
        if not st.hosts_listed:
            st.hosts_listed = st.adding = True
            ctx.submit(ListHosts(tuple(h.name for h in adding)))
            return False
        for host in adding:
            st.adding = True
            if host.enabled:
                self._added(ctx, host)
            else:
                ctx.submit(EnableHost(host.name))
            return False
        return True

    def _shortfall(self, ctx: SessionContext) -> str | None:
        """Why the hosts that stay cannot hold every instance once the
        retired ones are gone (checked again once add_hosts came in, before
        any host is touched: the check at creation counted them in service)."""
        retiring = self._retiring(ctx)
        if not retiring:
            return None
        kept = [h for h in ctx.hosts if h.state not in (HostState.REMOVED, HostState.ADDING)]
        return capacity_shortfall(
            [Host(h.name, h.type, h.vcpus, h.enabled) for h in kept],
            [
                Instance(i.instance_id, i.project_id, i.host, i.vcpus)
                for h in kept
                for i in ctx.instances.on(h.name)
                if i.state != InstanceState.GONE
            ],
            retiring,
            ctx.constraints,
        )

    def _added(self, ctx: SessionContext, host: HostView) -> None:
        ctx.set_host_state(host.name, HostState.ADDED, reason="added by this session (add_hosts)")
        if host.type == "compute":
            ctx.submit(Inventory((host.name,)))  # what runs there (the engine applies it)
        else:
            ctx.state_of(RollingState).adding = False

    def _scale_in(self, ctx: SessionContext, st: RollingState) -> bool:
        if st.phase == "confirm":
            if ctx.projects.awaiting_count("SCALE_IN"):
                return False
            # What the projects removed is known only from a new listing.
            ctx.submit(Inventory(tuple(h.name for h in ctx.hosts)))
            st.phase = "refresh"
            return False
        if st.phase == "refresh":
            return False
        return self._decide(ctx, st)

    def _drain(self, ctx: SessionContext, st: RollingState) -> bool:
        host_name = st.drain_host
        if host_name is None:  # it was skipped or left the cloud
            return self._decide(ctx, st)
        host = ctx.hosts.get(host_name)
        if host is None or host.state in _LEFT:
            self._host_skipped(ctx, st, host_name)
            return self._decide(ctx, st)
        if st.phase == "disable":
            # Cordon first: nothing new lands on a host while it is emptied.
            if host.enabled:
                ctx.submit(DisableHost(host_name, reason=f"maintenance session {ctx.session_id}"))
                st.phase = "disabling"
                return False
            st.phase = "list_host"
        if st.phase == "disabling":
            return False
        if st.phase == "list_host":
            # Then list what runs there: what the session knows may be old (a
            # replacement of an instance moved earlier may have landed on it).
            ctx.submit(Inventory((host_name,)))
            st.phase = "listing_host"
            return False
        if st.phase == "listing_host":
            return False
        if host.state == HostState.PENDING:
            ctx.set_host_state(host_name, HostState.DRAINING)
        st.phase = "drain"
        unchanged, in_scope = self._request_actions(ctx, host)
        self._pump_moves(ctx, st, host, unchanged)
        if ctx.session.state in _FINAL:
            return False
        # (A migration under way is of an instance still on the host.) What
        # ``_pump_moves`` starts leaves its instance on the host, IN_ACTION:
        # a host that had instances in scope still has.
        if not in_scope and st.waiting_move is None and not self._in_scope_on(ctx, host_name):
            ctx.set_host_state(host_name, HostState.DRAINED)
            st.drain_host = None
            self._go(ctx, st, SessionState.START_MAINTENANCE)
            return True
        return False

    def _start_maintenance(self, ctx: SessionContext, st: RollingState) -> bool:
        if st.current_host is None:
            if self._refilled(ctx, st) is not None:
                return self._decide(ctx, st)
            host = self._next_host_to_maintain(ctx)
            if host is None:
                return self._decide(ctx, st)
            if not ctx.admit(host.name).admitted:
                return False
            st.current_host, st.stage, st.host_op = host.name, 0, False
        view = ctx.hosts.get(st.current_host)
        if view is None or view.state in _LEFT:
            self._host_skipped(ctx, st, st.current_host)
            return True
        if self._run_host(ctx, st, view):
            st.current_host = None
            return True
        if self._given_up(st):  # instances arrived: drain it first
            return self._decide(ctx, st)
        return False

    @staticmethod
    def _given_up(st: RollingState) -> bool:
        """``_run_host`` let its host go (a separate read: it changes ``st``)."""
        return st.current_host is None

    def _complete(self, ctx: SessionContext, st: RollingState) -> bool:
        if st.phase in ("", "post"):
            st.phase = "post"
            if st.action_running or not self._run_session_actions(ctx, st, "post"):
                return False
            st.phase = "confirm"
            self.ask_projects(ctx, "MAINTENANCE_COMPLETE", self._affected(ctx))
            return True
        if ctx.projects.awaiting_count("MAINTENANCE_COMPLETE"):
            return False
        ctx.transition(SessionState.MAINTENANCE_DONE)
        return False

    # ------------------------------------------------------------------ decisions

    def _decide(self, ctx: SessionContext, st: RollingState) -> bool:
        """Choose what comes next; False if the session waits for it."""
        if st.phase == "listing":
            return False  # the hosts are being listed again
        refilled = self._refilled(ctx, st)
        if refilled is not None:
            # Disabled by this session, then found holding instances: emptied
            # before anything else, so that the one host this session keeps
            # disabled is always the one it works on.
            return self._begin_drain(ctx, st, refilled)
        # Read from the context's indexes: a decision does not look at every
        # pending host (position order; views built only for the hosts reached).
        pending = ctx.hosts.in_state(HostState.PENDING)
        if ctx.hosts.in_state(HostState.DRAINED) or ctx.hosts.without_instances(HostState.PENDING):
            self._go(ctx, st, SessionState.START_MAINTENANCE)
            return True
        if not pending:
            self._go(ctx, st, SessionState.MAINTENANCE_COMPLETE)
            st.phase = "post"
            return True
        planned = (
            bool(ctx.hosts.in_state(HostState.MAINTAINED, type="compute"))
            or ctx.session.state == SessionState.PLANNED_MAINTENANCE
        )
        choice = self._host_to_drain(ctx, pending, planned=planned)
        if choice is None:
            return self._scale_in_or_fail(ctx, st, list(pending))
        return self._begin_drain(ctx, st, choice, planned=planned)

    def _begin_drain(
        self, ctx: SessionContext, st: RollingState, host: str, *, planned: bool | None = None
    ) -> bool:
        """Start emptying ``host`` (PREPARE_ or PLANNED_MAINTENANCE); False if
        the pipeline holds it back."""
        if not ctx.admit(host).admitted:
            return False
        if planned is None:
            planned = (
                bool(ctx.hosts.in_state(HostState.MAINTAINED, type="compute"))
                or ctx.session.state == SessionState.PLANNED_MAINTENANCE
            )
        st.listed = False
        st.scale_in_rounds = 0
        self._go(
            ctx,
            st,
            SessionState.PLANNED_MAINTENANCE if planned else SessionState.PREPARE_MAINTENANCE,
        )
        st.drain_host, st.phase = host, "disable"
        st.waiting_move, st.move_attempts, st.refused, st.retry_wait = None, 0, (), False
        return True

    @staticmethod
    def _refilled(ctx: SessionContext, st: RollingState) -> str | None:
        """The host this session disabled if it is pending again with
        instances on it (they arrived before the disable reached it)."""
        if st.we_disabled is None:
            return None
        view = ctx.hosts.get(st.we_disabled)
        if view is None or view.state != HostState.PENDING:
            return None
        if not any(i.state in IN_SCOPE for i in ctx.instances.on(view.name)):
            return None
        return view.name

    def _go(self, ctx: SessionContext, st: RollingState, dest: SessionState) -> None:
        st.phase = ""
        if ctx.session.state != dest:
            ctx.transition(dest)

    def _host_to_drain(
        self, ctx: SessionContext, pending: Collection[HostView], *, planned: bool
    ) -> str | None:
        """The first host (control-plane ones first) whose instances all fit
        elsewhere: in the request's order once a compute is maintained, else
        the least loaded first (its instances will move again later).
        ``pending`` is in position order; in the request's order the first
        host that fits ends the search, so a decision reads few hosts."""
        computes_pending = len(ctx.hosts.in_state(HostState.PENDING, type="compute"))
        if computes_pending < len(pending):  # control-plane hosts first
            for host in pending:
                if host.type != "compute" and self._fits_elsewhere(ctx, host.name):
                    return host.name
        computes: Iterable[HostView] = (h for h in pending if h.type == "compute")
        if not planned:
            # The least loaded first, then the one with fewer instances (fewer moves).
            computes = sorted(
                computes,
                key=lambda h: (self._used(ctx, h.name), self._count(ctx, h.name), h.position),
            )
        for host in computes:
            if self._fits_elsewhere(ctx, host.name):
                return host.name
        return None

    def _fits_elsewhere(self, ctx: SessionContext, host: str) -> bool:
        """Every instance on ``host`` has a target: a dry run of the drain's
        own placement (:meth:`_placements`), in the order it moves them."""
        return self._all_placed(ctx, self._movable_on(ctx, host))

    def _scale_in_or_fail(
        self, ctx: SessionContext, st: RollingState, pending: list[HostView]
    ) -> bool:
        """No host can be emptied. List the hosts again first (one added
        meanwhile may make room); then ask SCALE_IN, or fail."""
        if not st.listed:
            ctx.submit(ListHosts())
            st.phase = "listing"
            return False
        lightest = min(pending, key=lambda h: (self._used(ctx, h.name), h.position))
        # Instances move to hosts of their host's type (the placement class).
        others = (
            "the other hosts"
            if lightest.type == "compute"
            else f"the other {lightest.type} hosts, where its instances may go,"
        )
        shortage = self._rule_shortage(ctx, lightest.name) or self._capacity_shortage(
            ctx, lightest, others
        )
        affected = {i.project_id for h in pending for i in self._movable_on(ctx, h.name)}
        managed = sorted(p for p in affected if self._managed(ctx, p))
        if not managed:
            ctx.fail(
                f"cannot empty any host: {shortage}; no project has an application manager "
                "to scale in"
            )
            return False
        if st.scale_in_rounds and st.scale_in_freed <= 0:
            ctx.fail(f"SCALE_IN freed no capacity: {shortage}")
            return False
        if st.scale_in_rounds >= MAX_SCALE_IN_ROUNDS:
            ctx.fail(f"still no room after {st.scale_in_rounds} SCALE_IN rounds: {shortage}")
            return False
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
        )
        return False

    def _capacity_shortage(self, ctx: SessionContext, host: HostView, others: str) -> str:
        """Why ``host`` cannot be emptied when capacity, not a placement rule,
        is short: the totals, and when the totals would do, the instance no
        single host has room for (the room is split among the hosts)."""
        used = self._used(ctx, host.name)
        room = self._free_besides(ctx, host)
        why = (
            f"the least loaded host {host.name} has {used} vcpus of instances and "
            f"{others} have {sum(room)} vcpus free"
        )
        if sum(room) < used:
            return why
        for inst, target in self._placements(ctx, self._movable_on(ctx, host.name)):
            if target is None and ctx.capacity.limits(inst.instance_id).stuck is None:
                return (
                    f"{why}, but split: no one host has room for instance {inst.instance_id} "
                    f"({inst.vcpus} vcpus) beside the instances placed before it (the most "
                    f"free on one host is {max(room, default=0)} vcpus)"
                )
        return why

    def _free_besides(self, ctx: SessionContext, host: HostView) -> list[int]:
        """The free vCPUs of each host that could take ``host``'s instances
        (a scan of the hosts, on the way to failing only)."""
        retiring = self._retiring(ctx)
        return [
            max(0, ctx.capacity.free(h.name))
            for h in ctx.hosts
            if h.enabled and h.type == host.type and h.name != host.name and h.name not in retiring
        ]

    def _next_host_to_maintain(self, ctx: SessionContext) -> HostView | None:
        """A control-plane host with nothing to drain, else the first drained
        host, else the first host with nothing to drain (indexes, position order)."""
        empty = list(ctx.hosts.without_instances(HostState.PENDING))
        for host in empty:
            if host.type != "compute":
                return host
        for host in ctx.hosts.in_state(HostState.DRAINED):
            return host
        return empty[0] if empty else None

    # ------------------------------------------------------------------ one host

    def _stages(self, ctx: SessionContext, st: RollingState, host: HostView) -> tuple[str, ...]:
        """The steps that maintain one host, in order; an action stage is
        ``action:<index>`` into the host's actions."""
        return self._host_plan(ctx, host)[0]

    def _host_plan(
        self, ctx: SessionContext, host: HostView
    ) -> tuple[tuple[str, ...], tuple[ActionSpec, ...]]:
        """``_stages`` and the host's actions, made once per request, host
        type and whether the host retires (read at each of a host's steps)."""
        request = ctx.request
        memo = self._plans_memo
        if memo is None or memo[0] is not request:
            memo = self._plans_memo = (request, {})
        key = (host.type, host.name in self._retiring(ctx))
        found = memo[1].get(key)
        if found is None:
            specs = tuple(actions_of(request.actions, *host_action_types(host.type)))
            # A compute host is disabled first (a drained one already is), then
            # its instances are listed: one that arrived before the disable (the
            # engine adds it from the listing) sends it back to be drained.
            if host.type == "compute":
                stages = ["disable", "verify_empty", "notify_in"]
            else:
                stages = ["notify_in"]
            stages += [f"action:{k}" for k in range(len(specs))]
            if key[1]:
                stages.append("decommission")  # not coming back: not waited for, not enabled
            else:
                stages += ["host_up", "enable", "notify_complete"]
            found = memo[1][key] = (tuple(stages), specs)
        return found

    def _run_host(self, ctx: SessionContext, st: RollingState, host: HostView) -> bool:
        """Advance the host's stages as far as possible; True when maintained."""
        stages, specs = self._host_plan(ctx, host)
        while st.stage < len(stages):
            if st.host_op or ctx.session.state in _FINAL:
                return False
            view = ctx.hosts.get(host.name)
            assert view is not None
            step = stages[st.stage]
            if step == "verify_empty":
                ctx.submit(Inventory((host.name,)))
                st.host_op = True
                return False
            if step == "notify_in":
                if self._in_scope_on(ctx, host.name):
                    # Something arrived since it was emptied: drain it again
                    # (first: see ``_refilled``).
                    if view.state == HostState.DRAINED:
                        ctx.set_host_state(host.name, HostState.PENDING)
                    st.current_host, st.stage = None, 0
                    return False
                ctx.set_host_state(host.name, HostState.IN_MAINTENANCE)
                ctx.notify_host(host.name, "IN_MAINTENANCE")
                # Notifications go out after the step's operations started:
                # the host's work waits for the next step, so that
                # IN_MAINTENANCE is always delivered before it.
                ctx.set_timer(_ANNOUNCED, ctx.now)
                st.host_op = True
                st.stage += 1
                return False
            if step == "disable":
                # A host someone else disabled stays as they left it.
                if view.enabled:
                    ctx.submit(
                        DisableHost(host.name, reason=f"maintenance session {ctx.session_id}")
                    )
                    st.host_op = True
                    return False
            elif step.startswith("action:"):
                spec = specs[int(step.partition(":")[2])]
                ctx.submit(RunAction(spec, f"host:{host.name}", host.name))
                st.host_op = True
                return False
            elif step == "host_up":
                ctx.submit(HostUp(host.name))
                st.host_op = True
                return False
            elif step == "enable":
                if st.we_disabled == host.name:
                    ctx.submit(EnableHost(host.name))
                    st.host_op = True
                    return False
            elif step == "decommission":
                ctx.set_host_state(
                    host.name, HostState.DECOMMISSIONED, reason="decommissioned: left disabled"
                )
                ctx.host_done(host.name)  # finished work: pacing, settle, progress
                if st.we_disabled == host.name:
                    st.we_disabled = None  # never enabled again, also not on failure
            elif step == "notify_complete":
                ctx.set_host_state(host.name, HostState.MAINTAINED)
                ctx.host_done(host.name)
                ctx.notify_host(host.name, "MAINTENANCE_COMPLETE")
            st.stage += 1
        return True

    def _host_failed(self, ctx: SessionContext, host: str, why: str) -> None:
        ctx.set_host_state(host, HostState.FAILED, reason=why)
        ctx.fail(why)

    # ------------------------------------------------------------------ draining

    def _request_actions(
        self, ctx: SessionContext, host: HostView
    ) -> tuple[list[InstanceView] | None, bool]:
        """Ask the projects how to move their new instances off ``host``
        (unmanaged projects' instances get the default action). Returns the
        instances on ``host`` as it read them if it changed none of them
        (a move step's usual case: the drain reads them once), else None;
        and whether one of them is in the session's scope (what it changes
        stays in scope)."""
        fresh: dict[str, list[str]] = {}
        seen: list[InstanceView] | None = []
        in_scope = False
        for inst in ctx.instances.on(host.name):
            if seen is not None:
                seen.append(inst)
            if inst.state != _PENDING:
                if not in_scope:
                    in_scope = inst.state in IN_SCOPE
                continue
            in_scope = True
            seen = None  # changed below, or waiting for an answer: read again
            project = ctx.projects.get(inst.project_id)
            if project is not None and project.managed:
                if project.awaiting:
                    continue  # asked already; new arrivals wait for the answer
                ctx.set_instance_state(inst.instance_id, InstanceState.ACTION_REQUESTED)
                fresh.setdefault(inst.project_id, []).append(inst.instance_id)
            else:
                ctx.set_instance_state(
                    inst.instance_id,
                    InstanceState.ACTION_CHOSEN,
                    action=default_action(inst.live_migratable, allowed_actions(ctx)),
                )
        if fresh:
            # A retired host does not come back: managers may want to re-create
            # rather than wait (docs/lifecycle.md).
            retires = host.name in self._retiring(ctx)
            self.ask_projects(
                ctx,
                ctx.session.state.value,
                fresh,
                allowed_actions=allowed_actions(ctx),
                metadata={**ctx.request.metadata, "host_returns": False} if retires else None,
            )
        return seen, in_scope

    def _pump_moves(
        self,
        ctx: SessionContext,
        st: RollingState,
        host: HostView,
        on: Iterable[InstanceView] | None = None,
    ) -> None:
        """Start what can start: every OWN_ACTION watch, and the next migration
        (one at a time off a host, as Nova's default allows). Nothing new
        starts while the pipeline says wait (a pause): moves in flight end.
        ``on``: the instances on ``host`` as they are now, if already read."""
        if not ctx.admit(host.name).admitted:
            return
        if on is None:
            on = ctx.instances.on(host.name)
        # The chosen ones, watches and migrations apart (in one pass).
        watches: list[InstanceView] = []
        migrating: list[InstanceView] = []
        under_way = False  # a migration off the host runs (``_moving``)
        for i in on:
            state = i.state
            if state == _CHOSEN:
                (watches if i.action == _OWN_ACTION else migrating).append(i)
            elif state == _IN_ACTION and i.action != _OWN_ACTION:
                under_way = True
        for inst in watches:
            ctx.submit(Watch(inst.instance_id))
        # What is on the host as read, if no watch changed it: the target's
        # placement reads the same instances (one pass over them a step).
        current = on if len(watches) == 0 and isinstance(on, list) else None
        if st.waiting_move is not None:
            moving = ctx.instances.get(st.waiting_move)
            if st.retry_wait or moving is None or moving.state != _CHOSEN:
                return  # in flight, or waiting for its retry
            self._migrate(ctx, st, moving, current if moving.host == host.name else None)
            return
        if under_way:
            return
        # The first in ``_move_order`` (a minimum, not a sort: one is taken;
        # compared inline, not through a key function per instance).
        if migrating:
            inst = migrating[0]
            for i in migrating:
                if i.vcpus > inst.vcpus or (
                    i.vcpus == inst.vcpus and i.instance_id < inst.instance_id
                ):
                    inst = i
            st.waiting_move, st.move_attempts, st.refused = inst.instance_id, 0, ()
            st.waited = 0
            self._migrate(ctx, st, inst, current)

    def _migrate(
        self,
        ctx: SessionContext,
        st: RollingState,
        inst: InstanceView,
        on: list[InstanceView] | None = None,
    ) -> None:
        """``on``: the instances on ``inst``'s host as they are now, if read."""
        if st.relisting is not None:
            return  # a possible target is being listed: its facts come first
        action = inst.action or default_action(inst.live_migratable, allowed_actions(ctx))
        refused = frozenset(st.refused)
        target = self._planned_target(ctx, inst, refused, on)
        if target is not None and refused and target != st.relisted:
            # After a refusal, a host is chosen on fresh facts only.
            self._relist(ctx, st, target)
            return
        if target is None:
            if SCHEDULER not in refused and (
                refused or st.move_attempts or self._out_of_service_elsewhere(ctx)
            ):
                # No explicit host left after a refusal, in a new round, or
                # while a host elsewhere is out of service (what the session
                # knows of the room may be old): the cloud's scheduler may know one.
                target = None
            elif refused:
                self._refused_everywhere(ctx, st, inst)
                return
            else:
                ctx.fail(self._no_target(ctx, inst))
                return
        ctx.submit(Move(inst.instance_id, instance_action(action), target, refused - {SCHEDULER}))
        if inst.host == st.drain_host:
            st.waiting_move = None  # under way: its instance says so (``_moving``)

    @staticmethod
    def _moving(ctx: SessionContext, st: RollingState) -> str | None:
        """The one migration off the drain host: the one waiting, or the one
        under way (its instance IN_ACTION there with a migration, not a
        watch: the state is not rewritten when one starts or ends)."""
        if st.waiting_move is not None:
            return st.waiting_move
        if st.drain_host is None:
            return None
        for inst in ctx.instances.on(st.drain_host):
            if inst.state == _IN_ACTION and inst.action != _OWN_ACTION:
                return inst.instance_id
        return None

    def _relist(self, ctx: SessionContext, st: RollingState, host: str) -> None:
        """List what runs on ``host`` now (the engine applies it to the
        session's facts, capacity included); the move waits for it."""
        st.relisting, st.retry_wait = host, True
        ctx.submit(Inventory((host,)))

    def _refused_everywhere(
        self, ctx: SessionContext, st: RollingState, inst: InstanceView
    ) -> None:
        """Every host the session knows with room, and the cloud's scheduler,
        refused ``inst`` on fresh facts: the room may come back (another
        session's host enabled again, a tenant's instance deleted), so a new
        round starts after a back-off, up to ``max_migration_retries``
        rounds; then the session fails, naming the instance and each refusal.
        While a host outside the session is out of service (another session
        maintains it), a round is not counted, up to :data:`MAX_WAIT_ROUNDS`."""
        if st.waited < MAX_WAIT_ROUNDS and self._out_of_service_elsewhere(ctx):
            st.waited += 1
        else:
            st.move_attempts += 1
        if st.move_attempts <= ctx.request.max_migration_retries:
            self._retry_later(ctx, st, inst.instance_id)
            st.refused = ()  # a new round: every host may be asked again
            return
        ctx.set_instance_state(inst.instance_id, InstanceState.FAILED)
        ctx.fail(
            f"the cloud refused every host for instance {inst.instance_id} from "
            f"{inst.host} ({st.move_attempts} round(s), hosts listed again before "
            "being asked): " + "; ".join(st.refusals)
        )

    @staticmethod
    def _out_of_service_elsewhere(ctx: SessionContext) -> bool:
        """A host outside the session is disabled now (a scan of those
        hosts, after every host refused an instance only)."""
        return any(not h.enabled for h in ctx.hosts.in_state(HostState.OUT_OF_SCOPE))

    def _retry_later(self, ctx: SessionContext, st: RollingState, instance_id: str) -> None:
        delay = retry_delay(st.move_attempts + st.waited, f"{ctx.session_id}:{instance_id}")
        ctx.set_timer(f"retry_move:{instance_id}", ctx.now + delay, instance_id=instance_id)
        st.retry_wait = True

    def _planned_target(
        self,
        ctx: SessionContext,
        inst: InstanceView,
        refused: Collection[str],
        on: Iterable[InstanceView] | None = None,
    ) -> str | None:
        """``inst``'s target in the placement of everything still to leave its
        host (:meth:`_placements`, the one ``_fits_elsewhere`` checked): a
        small instance moving first must not take the room a larger one needs.
        ``on``: the instances on its host as they are now, if read already."""
        mine, vcpus = inst.instance_id, inst.vcpus
        waiting: list[InstanceView] = []
        ahead = False  # one of them moves before ``inst`` (``_move_order``)
        for i in on if on is not None else ctx.instances.on(inst.host):
            if i.state in _NOT_MOVING or (i.instance_id == mine and i.state in IN_SCOPE):
                waiting.append(i)
                if i.vcpus > vcpus or (i.vcpus == vcpus and i.instance_id < mine):
                    ahead = True
        if not ahead:
            # ``inst`` is placed first: nothing is taken before it (a move
            # step's usual case, no placement of the others needed).
            return self._target(ctx, inst, refused)
        for other, target in self._placements(ctx, waiting, mine=(mine, refused)):
            if other.instance_id == mine:
                if target is None:
                    break
                return self._leaving_room(ctx, inst, target, refused, waiting)
        return self._target(ctx, inst, refused)

    def _leaving_room(
        self,
        ctx: SessionContext,
        inst: InstanceView,
        planned: str,
        refused: Collection[str],
        waiting: Sequence[InstanceView],
    ) -> str:
        """``planned``, or another target of ``inst`` (moving ahead of larger
        instances of its host) if the larger ones would find no room once it
        is there. Each of their moves takes the first target of a placement
        made afresh on what is left, which may not be the one the check
        found: a 1-vCPU instance of a project without a manager moving first
        to the host the check kept for it, then the 3-vCPU one taking the
        emptiest host instead of that one, can leave a 2-vCPU one nowhere
        to go. Runs only while an instance moves ahead of larger ones."""
        rest = [i for i in waiting if i.instance_id != inst.instance_id]
        if self._all_placed(ctx, rest, (inst, planned)):
            return planned
        retiring = self._retiring(ctx)
        exclude = {*refused, *retiring, planned}
        for target in ctx.capacity.targets(inst.instance_id, exclude=exclude):
            if self._all_placed(ctx, rest, (inst, target)):
                return target
        return planned  # none leaves room for them all: the drain says which one is stuck

    def _all_placed(
        self,
        ctx: SessionContext,
        instances: Iterable[InstanceView],
        first: tuple[InstanceView, str] | None = None,
    ) -> bool:
        """Every one of ``instances`` has a target in the drain's placement
        (once ``first``'s instance is on its target, if given). A stuck one
        is planned as if it could move: its drain says why not."""
        if not isinstance(instances, Sequence):
            instances = list(instances)
        if self._one_host_holds(ctx, instances, first):
            return True
        for inst, to in self._placements(ctx, instances, first=first):
            if to is None and ctx.capacity.limits(inst.instance_id).stuck is None:
                return False
        return True

    def _one_host_holds(
        self,
        ctx: SessionContext,
        instances: Sequence[InstanceView],
        first: tuple[InstanceView, str] | None,
    ) -> bool:
        """Whether :meth:`_all_placed` is True without the placement: no rule
        applies to any of ``instances``, all on one host, and the most free
        host they may go to has room for all of them and ``first``'s. Each
        search of the placement reaches that host (it ranks no other kind of
        host first and stops only once it has found a host with room), and
        finds room there whatever was taken before, so every instance gets a
        target. Once a host is maintained this is the usual case of a
        drain's checks, which otherwise place the instances one by one."""
        if not instances:
            return True
        source = instances[0].host
        demand = first[0].vcpus if first is not None else 0
        limits = ctx.capacity.limits
        free_to_go = None  # the last limits found without a rule (often one shared object)
        for inst in instances:
            if inst.host != source:
                return False
            found = limits(inst.instance_id)
            if found is free_to_go:
                demand += inst.vcpus
                continue
            if (
                found.rules
                or found.penalty
                or found.types is not None
                or found.avoid
                or found.only is not None
                or found.stuck is not None
            ):
                return False
            free_to_go = found
            demand += inst.vcpus
        host = ctx.hosts.get(source)
        if host is None:
            return False
        retiring = self._retiring(ctx)
        for name, free in ctx.capacity.most_free(host.type):
            if name != source and name not in retiring:
                return free >= demand
        return False

    def _placements(
        self,
        ctx: SessionContext,
        instances: Iterable[InstanceView],
        *,
        mine: tuple[str, Collection[str]] | None = None,
        first: tuple[InstanceView, str] | None = None,
    ) -> Iterator[tuple[InstanceView, str | None]]:
        """Where each of ``instances`` (leaving one host) goes, largest first:
        each takes the target the drain will choose for it once the earlier
        ones have moved, i.e. with their room taken and their hosts counted
        in the hard placement rules, the targets ranked by the room left.
        The check before a host opens and each move of its drain both run
        it, so what the check found room for is what the drain does when it
        moves them in this order. (A smaller instance a manager's answer lets
        go first takes a target of this placement that leaves room for the
        larger ones placed afresh on what it left: :meth:`_leaving_room`.)
        ``mine``: an instance and the targets refused for it. ``first``: an
        instance (not among ``instances``) counted on a target before them."""
        taken: dict[str, int] = {}
        placed: dict[str, str] = {}
        if first is not None:
            taken[first[1]] = first[0].vcpus
            placed[first[0].instance_id] = first[1]
        for inst in _move_order(instances):
            refused: Collection[str] = ()
            if mine is not None and inst.instance_id == mine[0]:
                refused = mine[1]
            target = self._target(ctx, inst, refused, taken, placed)
            yield inst, target
            if target is not None:
                taken[target] = taken.get(target, 0) + inst.vcpus
                placed[inst.instance_id] = target

    def _target(
        self,
        ctx: SessionContext,
        inst: InstanceView,
        refused: Collection[str],
        taken: Mapping[str, int] | None = None,
        placed: Mapping[str, str] | None = None,
    ) -> str | None:
        """The first target where the instance can stay, else the first one,
        in ``ctx.capacity.targets``' order (``taken``: room already promised
        to earlier instances of a placement, on the hosts ``placed`` says:
        the targets ranked as they will be once those moves are done)."""
        retiring = self._retiring(ctx)
        exclude = {*refused, *retiring} if retiring else refused
        targets = ctx.capacity.targets(inst.instance_id, exclude=exclude)
        if not taken:
            first: str | None = None
            view_of = ctx.hosts.get
            for name in targets:
                view = view_of(name)
                if view is not None and view.state in STAYS:
                    return name
                first = first or name
            return first
        return self._target_after(ctx, inst, targets, taken, placed or {})

    def _target_after(
        self,
        ctx: SessionContext,
        inst: InstanceView,
        targets: Iterator[str],
        taken: Mapping[str, int],
        placed: Mapping[str, str],
    ) -> str | None:
        """``_target`` once the room ``taken`` is gone. ``targets`` ranks the
        hosts by (the soft rules' penalty, most free, name) as they are now:
        a host none of it was taken from keeps its rank among the others,
        one that lost room can only fall. So the first untaken host where the
        instance stays ends the search: only the taken hosts seen before it
        may still rank higher (by their room left, at an equal penalty).
        Once a host where it stays has room, no other kind of host can win;
        without soft rules (no penalty: ``targets`` comes by free vCPUs
        alone) neither can a host with less free than the room left on the
        best of those: the search ends there, not after the hundreds of
        hosts still to be maintained."""
        capacity = ctx.capacity
        limits = capacity.limits(inst.instance_id)
        avoid = _planned_avoid(ctx, inst.instance_id, limits.rules, placed) if placed else set()
        penalty = limits.penalty
        # Looked up once: this loop may pass many hosts.
        free, view_of, vcpus = capacity.free, ctx.hosts.get, inst.vcpus
        # (rank seen, penalty, -room left, name, stays) of each host with room
        seen: list[tuple[int, int, int, str, bool]] = []
        staying = False  # a host where it stays has room: no other kind can win
        most_room = 0  # the most room left on such a host
        by_free = not penalty  # targets come by free vCPUs, most first
        for rank, name in enumerate(targets):
            if name in avoid:
                continue
            view = view_of(name)
            stays = view is not None and view.state in STAYS
            if staying:
                if by_free and free(name) < most_room:
                    break  # this host and every later one have less room: none wins
                if not stays:
                    continue
            room = free(name) - taken.get(name, 0)
            if room < vcpus:
                continue
            seen.append((rank, penalty.get(name, 0), -room, name, stays))
            if stays:
                if name not in taken:
                    break
                staying = True
                most_room = max(most_room, room)
        best: tuple[int, int, int, str, bool] | None = None
        for host in seen:  # where it stays first, then the best ranked
            if best is None or host[4] > best[4] or (host[4] == best[4] and _ahead(host, best)):
                best = host
        return None if best is None else best[3]

    def _move_ended(
        self, ctx: SessionContext, st: RollingState, op: Move | Watch, result: OpResult
    ) -> None:
        inst = ctx.instances.get(op.instance_id)
        if inst is None:
            return
        done = result.status == OpStatus.DONE
        # Whether it is the drain's one migration (``_moving``), read before
        # its instance changes: a Move that failed left it where it was.
        ours = isinstance(op, Move) and (
            op.instance_id == st.waiting_move
            or (not done and self._moving(ctx, st) == op.instance_id)
        )
        if ours:
            # Not under way any more: it waits (a Locate, a retry, a relisting),
            # or is let go below.
            st.waiting_move = op.instance_id
        if not done and self._target_left(ctx, op):
            # Its target left the cloud during the move: not a failed attempt.
            # Where is it now? It moves on once it is known (``_located``).
            if inst.state == InstanceState.IN_ACTION:
                ctx.set_instance_state(op.instance_id, InstanceState.ACTION_CHOSEN)
            if ctx.session.state not in _FINAL:
                ctx.submit(Locate((op.instance_id,)))
                st.locating = True
                if ours:
                    st.retry_wait = True
            return
        # Where it is now (the engine placed a moved instance where the cloud says).
        origin = ctx.hosts.get(inst.host)
        if not done and (origin is None or origin.state in _LEFT):
            # Its host was skipped (or left the cloud) meanwhile: not a failure.
            if ours:
                st.waiting_move, st.move_attempts, st.refused, st.retry_wait = None, 0, (), False
            if inst.state == InstanceState.IN_ACTION:
                # Skipped: not followed any more. Gone: looked up with the
                # rest of its host's instances.
                left = origin is not None and origin.state == HostState.SKIPPED
                ctx.set_instance_state(
                    op.instance_id, InstanceState.FAILED if left else InstanceState.PENDING
                )
            return
        if ours and not done and isinstance(op, Move):
            self._move_failed(ctx, st, op, inst, result)
            return
        if (
            done
            and isinstance(op, Move)
            and (
                ours
                or (
                    (st.move_attempts or st.refused)
                    and self._moving(ctx, st) in (None, op.instance_id)
                )
            )
        ):
            # The drain's migration done (moved off, it is no longer under way
            # there: only a retried one has attempts or refusals to forget).
            st.waiting_move, st.move_attempts, st.refused = None, 0, ()
        if result.status != OpStatus.DONE and ctx.session.state in _FINAL:
            if inst.state == InstanceState.IN_ACTION:  # still where it was
                ctx.set_instance_state(op.instance_id, InstanceState.PENDING)
            return
        if result.status != OpStatus.DONE:  # the manager's own action failed
            ctx.set_instance_state(op.instance_id, InstanceState.FAILED)
            ctx.fail(
                f"instance {op.instance_id} of project {inst.project_id} was not moved off "
                f"{inst.host} by its manager (OWN_ACTION): {result.detail}"
            )
            return
        source = st.drain_host
        if result.result.get("gone"):
            ctx.set_instance_state(op.instance_id, InstanceState.GONE)
        else:
            stays = origin is not None and origin.state in STAYS
            ctx.set_instance_state(
                op.instance_id, InstanceState.DONE if stays else InstanceState.PENDING
            )
        if ctx.session.state in _FINAL:
            return
        if self._managed(ctx, inst.project_id):
            ctx.notify_project(inst.project_id, "INSTANCE_ACTION_DONE", [op.instance_id])
            if source is not None and not any(
                i.state in IN_SCOPE for i in ctx.instances.of_on(inst.project_id, source)
            ):
                ctx.notify_project(inst.project_id, "ADMIN_ACTION_DONE", [op.instance_id])

    def _move_failed(
        self,
        ctx: SessionContext,
        st: RollingState,
        op: Move,
        inst: InstanceView,
        result: OpResult,
    ) -> None:
        refused = bool(result.result.get("refused"))
        if refused:
            # The cloud refused the target (no room, its rules): not asked for
            # again in this round.
            why = f"{op.target or 'its scheduler'}: {result.detail}"
            st.refusals = (*(st.refusals if st.refused else ()), why)
            if not st.refused:
                st.relisted = None
            st.refused = tuple(sorted({*st.refused, op.target or SCHEDULER}))
        if ctx.session.state in _FINAL:
            ctx.set_instance_state(op.instance_id, InstanceState.PENDING)
            return
        ctx.set_instance_state(op.instance_id, InstanceState.ACTION_CHOSEN)
        if refused:
            # Nothing was started: another target is tried at once, on fresh
            # facts; the refused host is listed again first, so that what
            # filled it counts for the session's next choices too.
            if op.target is not None:
                self._relist(ctx, st, op.target)
            return
        st.move_attempts += 1
        if st.move_attempts <= ctx.request.max_migration_retries:
            self._retry_later(ctx, st, op.instance_id)
            return
        ctx.set_instance_state(op.instance_id, InstanceState.FAILED)
        ctx.fail(
            f"{op.action} of instance {op.instance_id} from {inst.host} failed after "
            f"{st.move_attempts} attempt(s): {result.detail}"
        )

    # ------------------------------------------------------------------ why no target

    def _no_target(self, ctx: SessionContext, inst: InstanceView) -> str:
        """Why ``inst`` has no target: an affinity group the cloud never
        splits, the hard rules of its groups, or no room."""
        iid = inst.instance_id
        limits = ctx.capacity.limits(iid)
        if limits.stuck is not None:
            rule = limits.stuck
            others = sorted(
                m for m in rule.members if m != iid and ctx.instances.get(m) is not None
            )
            return (
                f"instance {iid} is a member of {rule.label()}"
                + (f" with {', '.join(others)}" if others else "")
                + f" on {inst.host}: the cloud moves no member of an affinity group away from "
                "the others, so the engine cannot move it; its project has to move the group "
                "itself (answer OWN_ACTION) or remove the affinity group"
            )
        hard = self._hard_rules_in_the_way(ctx, inst, limits)
        if hard:
            return (
                f"no host can take instance {iid} from {inst.host}: every host with room for "
                f"it holds members of its {hard}, which the cloud enforces"
            )
        return f"no host has room for instance {iid} ({inst.vcpus} vcpus) from {inst.host}"

    def _rule_shortage(self, ctx: SessionContext, host: str) -> str | None:
        """Why ``host`` cannot be emptied if the cloud's placement rules, not
        capacity, keep an instance on it."""
        for inst in self._movable_on(ctx, host):
            if self._target(ctx, inst, ()) is not None:
                continue
            hard = self._hard_rules_in_the_way(ctx, inst, ctx.capacity.limits(inst.instance_id))
            if hard:
                return (
                    f"instance {inst.instance_id} on {host} cannot go anywhere: every host with "
                    f"room for it holds members of its {hard}, which the cloud enforces"
                )
        return None

    def _hard_rules_in_the_way(
        self, ctx: SessionContext, inst: InstanceView, limits: HostLimits
    ) -> str | None:
        """The instance's hard rules, named, if a host has room for it that
        they forbid (None: no hard rule, or no room anyway). A scan of the
        hosts, on the way to failing only."""
        hard = [r.label() for r in limits.rules if r.policy in HARD_POLICIES]
        if not hard:
            return None
        here = ctx.hosts.get(inst.host)
        retiring = self._retiring(ctx)
        for host in ctx.hosts:
            if (
                host.enabled
                and host.name != inst.host
                and host.name not in retiring
                and (here is None or host.type == here.type)
                and ctx.capacity.free(host.name) >= inst.vcpus
                and not limits.allows(host.name)
            ):
                return ", ".join(hard)
        return None

    # ------------------------------------------------------------------ reading the views

    def _retiring(self, ctx: SessionContext) -> frozenset[str]:
        """The hosts this session decommissions (never targets). Remembered
        per request: a decommission names every host it retires."""
        memo = self._retiring_memo
        if memo is None or memo[0] is not ctx.request:
            memo = self._retiring_memo = (ctx.request, type(self).retiring(ctx.request))
        return memo[1]

    def _run_session_actions(self, ctx: SessionContext, st: RollingState, kind: str) -> bool:
        specs = actions_of(ctx.request.actions, kind)
        done = st.pre_done if kind == "pre" else st.post_done
        if done >= len(specs):
            return True
        ctx.submit(RunAction(specs[done], kind))
        st.action_running = True
        return False

    @staticmethod
    def _managed(ctx: SessionContext, project_id: str) -> bool:
        project = ctx.projects.get(project_id)
        return project is not None and project.managed

    @staticmethod
    def _movable_on(ctx: SessionContext, host: str) -> list[InstanceView]:
        return [i for i in ctx.instances.on(host) if i.state in IN_SCOPE]

    def _in_scope_on(self, ctx: SessionContext, host: str) -> bool:
        return any(i.state in IN_SCOPE for i in ctx.instances.on(host))

    def _count(self, ctx: SessionContext, host: str) -> int:
        return len(self._movable_on(ctx, host))

    def _used(self, ctx: SessionContext, host: str) -> int:
        return sum(i.vcpus for i in self._movable_on(ctx, host))

    def _affected(self, ctx: SessionContext) -> dict[str, list[str]]:
        """Project -> its instances still in the session."""
        out: dict[str, list[str]] = {}
        for host in ctx.hosts:
            for inst in self._movable_on(ctx, host.name):
                out.setdefault(inst.project_id, []).append(inst.instance_id)
        return out

    def _load(self, ctx: SessionContext) -> int:
        return sum(
            self._used(ctx, h.name)
            for h in ctx.hosts
            if h.type == "compute" and h.state not in FINISHED
        )
