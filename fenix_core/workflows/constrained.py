"""The constrained workflow: ETSI constraints, several hosts at once.

::

    MAINTENANCE ──► (wait for maintenance_at, run ``pre`` actions) ──► check
    check: a group whose per-host limit cannot hold with one host out, or no
           host that can be emptied ──► SCALE_IN (its project has a manager)
                                        or MAINTENANCE_FAILED naming the group
    START_MAINTENANCE: controllers, one at a time (the rolling workflow's loop)
    PLANNED_MAINTENANCE: waves, overlapping:
        open hosts ── PLANNED_MAINTENANCE to each affected project (per wave,
                      actions_at honouring each instance's lead_time; one
                      instance per question where instance constraints exist)
        move members as their groups allow (max_impacted_members at once,
                      recovery_time after each move, anti-affinity and
                      max_instances_per_host on targets, capacity counting
                      arrivals in flight), INSTANCE_ACTION_DONE per instance,
                      ADMIN_ACTION_DONE per project and wave
        each emptied host runs the host pipeline while others drain
    MAINTENANCE_COMPLETE: ``post`` actions, MAINTENANCE_COMPLETE to every
           project ──► MAINTENANCE_DONE

A member is *impacted* from the start of its move (or its manager's own
action) until ``recovery_time`` after the move ended. Instances still waiting
on a host that is being drained are running normally and do not count: the
workflow only starts a move when the member's group has room for one more
impact, so the group's limit holds at every instant. The constraints are read
afresh at every decision, so managers may change them mid-session.

Which hosts to open is decided by :func:`fenix_core.planner.hosts_to_open`:
a host is opened when it gives work to a group that could lose a member now
but has nothing to move, as long as the instances on every open host still
fit where instances stay (:func:`fenix_core.second_moves.opening_targets`,
and ``max_parallel_hosts`` allows). Only the first wave, opened while nothing
where instances stay has room and nothing is out of service, sends instances
to hosts still queued (:mod:`fenix_core.second_moves`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from .. import planner, second_moves
from ..constraints import COLD_MIGRATION_INTERRUPTION, ConstraintSet, move_action
from ..runtime import LoadedSession, ids
from ..states import HostState, InstanceAction, InstanceState, SessionState
from ..store.schema import HostRow, InstanceRow, OperationRow, ProjectRow
from .rolling import MAX_SCALE_IN_ROUNDS, RollingWorkflow

__all__ = ["COLD_MIGRATION_INTERRUPTION", "ConstrainedWorkflow"]

#: Seconds one move is expected to take (used to rank groups by work left).
_MOVE_ESTIMATE = 30.0
#: Up to this many hosts left, every host opened is checked by a dry run to
#: leave an order in which the rest can still be emptied (it costs
#: hosts x instances per decision, so larger sessions rely on the first check).
_DRY_RUN_LIMIT = 200
_WAITING = (InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN)
_OPEN = (HostState.DRAINING, HostState.DRAINED, HostState.IN_MAINTENANCE)


class ConstrainedWorkflow(RollingWorkflow):
    """Parallel, constraint-aware maintenance (``workflow="constrained"``)."""

    name: ClassVar[str] = "constrained"
    #: Managers may leave instances out of their reply: their constraints
    #: (migration_type, max_interruption_time) decide.
    requires_instance_actions: ClassVar[bool] = False

    def __init__(self, session: LoadedSession) -> None:
        super().__init__(session)
        self._index_of: ConstraintSet | None = None
        # Instances impacted now: None while moving, else until when.
        self._impacted: dict[str, datetime | None] = {}
        # Per group: members on hosts still to maintain, and which pending
        # hosts hold members (to find hosts that give an idle group work).
        self._todo: Counter[str] = Counter()
        self._pending_hosts_of: dict[str, set[str]] = defaultdict(set)
        # Per group with a per-host limit: members per host, arrivals included.
        self._limited: dict[str, Counter[str]] = {}
        self._group: dict[str, str] = {}
        # Instances asked about per (wave, project), until ADMIN_ACTION_DONE.
        self._asked: dict[tuple[int, str], list[str]] = {}

    # ------------------------------------------------------------------ driver

    def handlers(self) -> dict[SessionState, Callable[[], bool]]:
        return {
            **super().handlers(),
            SessionState.PLANNED_MAINTENANCE: self._drain_or_waves,
            SessionState.PREPARE_MAINTENANCE: self._drain_or_waves,
        }

    def _drain_or_waves(self) -> bool:
        """A controller holding instances is emptied alone, the rolling way
        (phases ``refresh`` / ``drain``); computes are emptied in waves."""
        if self.s.row.phase in ("refresh", "drain"):
            return self._drain()
        return self._waves()

    def decide_next(self) -> bool:
        s = self.s
        self._index_of = None
        controllers = [h for h in s.hosts_in(HostState.PENDING) if h.type != "compute"]
        drained = [h for h in s.hosts_in(HostState.DRAINED) if h.type != "compute"]
        if drained or any(s.is_empty(h.name) for h in controllers):
            self._go("start", SessionState.START_MAINTENANCE)
            return True
        if controllers:
            # Controllers first, one at a time: this one runs instances.
            planned = s.state == SessionState.PLANNED_MAINTENANCE
            choice = self._host_to_drain(controllers, planned=planned)
            if choice is None:
                self._scale_in_or_fail(controllers)
                return True
            return self._begin_drain(s.hosts[choice], planned=planned)
        if not [h for h in s.hosts.values() if h.state in (HostState.PENDING, *_OPEN)]:
            self._go("complete", SessionState.MAINTENANCE_COMPLETE)
            return True
        if s.state != SessionState.PLANNED_MAINTENANCE and not self._feasible():
            return not self.lifecycle.relisting()
        self._go("plan", SessionState.PLANNED_MAINTENANCE)
        s.row.phase = "waves"
        return True

    def _next_host_to_maintain(self) -> HostRow | None:
        """START_MAINTENANCE here is for controllers only, one at a time (the
        rolling workflow's loop): a drained one, else an empty one; computes
        are maintained in the waves."""
        s = self.s
        drained = [h for h in s.hosts_in(HostState.DRAINED) if h.type != "compute"]
        pending = [h for h in s.hosts_in(HostState.PENDING) if h.type != "compute"]
        return next(iter(drained), None) or next((h for h in pending if s.is_empty(h.name)), None)

    # ------------------------------------------------------------------ feasibility

    def _feasible(self) -> bool:
        """Before any compute is touched: can the constraints hold at all?"""
        s = self.s
        cs = s.constraints()
        counts: Counter[str] = Counter()
        owners: dict[str, str] = {}
        for inst in s.instances.values():
            if self._in_scope(inst) or inst.state == InstanceState.OUT_OF_SCOPE:
                g = cs.group_key_of(inst.instance_id, inst.project_id)
                counts[g] += 1
                owners[g] = inst.project_id
        rules = {g: self._rule(cs, g) for g in counts}
        usable = sum(1 for h in s.hosts.values() if self._placement(h) is not None)
        bad = planner.infeasible_groups(counts, rules, usable)
        if bad:
            details = "; ".join(
                f"group {cs.group_by_key(g).group_id} of project {owners[g]} has "
                f"{counts[g]} members and allows "
                f"{rules[g].host_limit()} per host, but only {usable - 1} hosts stay in "
                "service while one is maintained"
                for g in bad
            )
            self._scale_in_or_fail_for({owners[g] for g in bad}, details)
            return False
        pending = [h for h in s.hosts_in(HostState.PENDING) if h.type == "compute"]
        self._rebuild(cs)
        loads = [
            planner.HostLoad(h.name, tuple(self._members_on(h, cs)), h.position) for h in pending
        ]
        rules = self._rules_for(cs, [m for load in loads for m in load.members])
        _order, stuck = planner.drain_sequence(loads, self._targets(cs), rules)
        if stuck is None:
            return True
        limited = sorted(
            {
                m.group_id
                for m in stuck.members
                if m.group_id in rules and rules[m.group_id].host_limit()
            }
        )
        if limited:
            owners_of = {m.group_id: m.project_id for m in stuck.members}
            why = (
                f"host {stuck.host} cannot be emptied: its instances of group(s) "
                + ", ".join(cs.group_by_key(g).group_id for g in limited)
                + " find no host with room that keeps their anti-affinity or per-host limit"
            )
            self._scale_in_or_fail_for({owners_of[g] for g in limited}, why)
        else:
            self._scale_in_or_fail(pending)
        return False

    def _scale_in_or_fail_for(self, projects: set[str], why: str) -> None:
        s = self.s
        if not self.lifecycle.listed_now():
            return  # a host added meanwhile may make room: decided after the listing
        managed = self.managed_projects(projects)
        rounds = int(s.data.get("scale_in_rounds", 0))
        if not managed:
            self.fail(f"the constraints cannot hold during maintenance: {why}")
            return
        if rounds >= MAX_SCALE_IN_ROUNDS or (rounds and int(s.data.get("scale_in_freed", 0)) <= 0):
            self.fail(f"the constraints still cannot hold after {rounds} SCALE_IN round(s): {why}")
            return
        s.set_data(scale_in_rounds=rounds + 1, scale_in_load=self._load())
        self._go("scale_in", SessionState.SCALE_IN)
        s.row.phase = "confirm"
        self.ask(
            "SCALE_IN",
            managed,
            lambda p: ids(self.project_instances(p.project_id)),
            metadata={**s.request.metadata, "reason": why},
        )

    # ------------------------------------------------------------------ waves

    def _waves(self) -> bool:
        s = self.s
        cs = s.constraints()
        if self._index_of is not cs:
            self._rebuild(cs)
        self._run_pipelines()
        if self._ended():
            return False
        for _ in range(2):  # opening hosts may let more moves start at once
            self._ask(cs)
            self._pump(cs)
            if self._ended():
                return False
            if not self._open(cs):
                break
        self._run_pipelines()
        if self._ended():
            return False
        left = [h for h in s.hosts.values() if h.state in (HostState.PENDING, *_OPEN)]
        if not left and not any(s.open_ops(kind="move")) and not any(s.open_ops(kind="watch")):
            return self.decide_next()
        if not any(s.open_ops()) and not self._next_wake_set():
            self._stuck(cs)
        return False

    def _run_pipelines(self) -> None:
        """Advance every emptied host's pipeline (they run side by side)."""
        s = self.s
        for host in [h for h in s.hosts.values() if h.state in _OPEN]:
            if (
                host.state == HostState.DRAINING
                and s.is_empty(host.name)
                and not self._moves_from(host)
            ):
                s.set_host_state(host, HostState.DRAINED)
            if host.state in (HostState.DRAINED, HostState.IN_MAINTENANCE):
                self.run_host(host)
                if s.final:
                    return

    def _ask(self, cs: ConstraintSet) -> None:
        """Tell the projects about instances on open hosts not asked yet."""
        s = self.s
        fresh: dict[str, list[InstanceRow]] = defaultdict(list)
        for host in s.hosts_in(HostState.DRAINING):
            for inst in s.instances_on(host.name):
                if inst.state == InstanceState.PENDING:
                    fresh[inst.project_id].append(inst)
        if not fresh:
            return
        wave = int(s.data.get("wave", 0)) + 1
        asked: list[ProjectRow] = []
        latest = s.now
        for project_id, insts in sorted(fresh.items()):
            project = s.ensure_project(project_id, s.subscribed(project_id))
            if project.managed and project.awaiting:
                continue  # asked already; these wait for the answer
            if project.managed and any(cs.instance(i.instance_id, i.project_id) for i in insts):
                # Fenix's ETSI workflow asked about one instance at a time, and
                # the managers written for it (OPNFV Doctor's VNFM, Tacker) act
                # on instance_ids[0] only (e.g. switch an HA pair over): the
                # others wait, PENDING, for the next question.
                insts = insts[:1]
            for inst in insts:
                own = cs.instance(inst.instance_id, inst.project_id)
                lead = own.lead_time if own is not None else 0
                inst.not_before = s.now + timedelta(seconds=lead) if lead else None
                if project.managed:
                    inst.wave = wave
                    s.set_instance_state(inst, InstanceState.ACTION_REQUESTED)
                    if inst.not_before is not None and inst.not_before > latest:
                        latest = inst.not_before
                else:
                    inst.action = self._action_for(inst, cs, managed=False)
                    s.set_instance_state(inst, InstanceState.ACTION_CHOSEN)
            if project.managed:
                asked.append(project)
                self._asked[(wave, project_id)] = ids(insts)
        if not asked:
            return
        s.set_data(wave=wave)
        for project in asked:
            # Each project hears only of its own instances, with the action the
            # engine proposes for each from its constraints (it may answer
            # with another one).
            insts = [s.instances[i] for i in self._asked[(wave, project.project_id)]]
            proposed = {i.instance_id: self._action_for(i, cs, managed=True) for i in insts}
            self.ask(
                SessionState.PLANNED_MAINTENANCE.value,
                [project],
                lambda p: self._asked[(wave, p.project_id)],
                allowed_actions=s.allowed_actions,
                actions_at=latest,
                metadata={**s.request.metadata, "proposed_actions": proposed},
            )

    def on_project_answer(
        self, project: ProjectRow, awaited: str, instance_actions: Mapping[str, str]
    ) -> None:
        if self.s.row.phase in ("refresh", "drain"):  # a controller drained alone
            super().on_project_answer(project, awaited, instance_actions)
            return
        if awaited != SessionState.PLANNED_MAINTENANCE:
            return
        s = self.s
        cs = s.constraints()
        for host in s.hosts_in(HostState.DRAINING):
            for inst in s.instances_on(host.name):
                if (
                    inst.project_id == project.project_id
                    and inst.state == InstanceState.ACTION_REQUESTED
                ):
                    chosen = instance_actions.get(inst.instance_id)
                    inst.action = chosen or self._action_for(inst, cs, managed=True)
                    s.set_instance_state(inst, InstanceState.ACTION_CHOSEN)

    def _action_for(self, inst: InstanceRow, cs: ConstraintSet, *, managed: bool) -> str:
        """How to move an instance (:func:`fenix_core.constraints.move_action`)."""
        s = self.s
        own = cs.instance(inst.instance_id, inst.project_id)
        found = move_action(
            own, s.allowed_actions, live_migratable=inst.live_migratable, managed=managed
        )
        return found if found is not None else s.default_action(inst)

    # ------------------------------------------------------------------ moves

    def _pump(self, cs: ConstraintSet) -> None:
        """Start every move the groups, targets and capacity allow now."""
        s = self.s
        if not self.may_start_work():
            return
        now = s.now
        budgets = self._budgets(cs)
        waiting: list[planner.Member] = []
        own_actions: list[InstanceRow] = []
        wake: datetime | None = None
        for host in s.hosts_in(HostState.DRAINING):
            if not self.disabled_for_drain(host):
                continue  # nothing leaves a host before it is disabled
            for inst in s.instances_on(host.name):
                if inst.state != InstanceState.ACTION_CHOSEN or self.retry_pending(
                    inst.instance_id
                ):
                    continue
                if inst.not_before is not None and inst.not_before > now:
                    wake = inst.not_before if wake is None else min(wake, inst.not_before)
                    continue
                if inst.action == InstanceAction.OWN_ACTION:
                    own_actions.append(inst)
                else:
                    waiting.append(self._member(inst, cs))
        for inst in own_actions:
            g = self._group_of(inst, cs)
            if budgets.get(g, 0) > 0:
                budgets[g] -= 1
                self._started(inst, InstanceAction.OWN_ACTION, None, cs)
        if waiting:
            # Place the members whose groups may lose one more now, in
            # planner.completion_order (a member that moved once first: it goes
            # only where it stays; then the hosts closest to empty, so that they
            # come back and take instances for good), then start them, the
            # groups with most work first.
            rules = self._rules_for(cs, waiting)
            order = planner.completion_order(
                waiting,
                host_of={m.instance_id: s.instances[m.instance_id].host for m in waiting},
                moved={m.instance_id for m in waiting if s.instances[m.instance_id].moves},
            )
            targets = self._targets(cs)
            ahead = self._limited_ahead(cs)

            def place(waiting_makes_room: bool) -> dict[str, str]:
                twice = self._may_move_twice(waiting, waiting_makes_room=waiting_makes_room)
                moves = planner.assign_moves(
                    order, budgets, targets, rules, twice=twice, ahead=ahead
                )[0]
                return dict(moves)

            plan = place(True)
            if not plan and not self._waiting_makes_room():
                plan = place(False)  # waiting would not make room: no limit
            waiting.sort(key=lambda m: (-self._weight(cs, m.group_id), -m.vcpus, m.instance_id))
            for m in waiting:
                target = plan.get(m.instance_id)
                if target is None or budgets.get(m.group_id, 0) <= 0:
                    continue
                budgets[m.group_id] -= 1
                inst = s.instances[m.instance_id]
                self._started(inst, inst.action or s.default_action(inst), target, cs)
        recovery = [t for t in self._impacted.values() if t is not None and t > now]
        if recovery:
            soonest = min(recovery)
            wake = soonest if wake is None else min(wake, soonest)
        self._wake_at(wake)

    def _may_move_twice(
        self, waiting: Sequence[planner.Member], *, waiting_makes_room: bool
    ) -> set[str]:
        """The waiting members that may go to a host still queued."""
        s = self.s
        first = self._first_drained()
        return {
            m.instance_id
            for m in waiting
            if second_moves.may_move_twice(
                moved_before=s.instances[m.instance_id].moves > 0,
                first_drained=s.instances[m.instance_id].host in first,
                waiting_makes_room=waiting_makes_room,
            )
        }

    def _limited_ahead(self, cs: ConstraintSet) -> dict[str, int]:
        """Per group with a per-host limit, the fewest vcpus of its members on
        hosts still queued (placements keep a host able to take them)."""
        s = self.s
        ahead: dict[str, int] = {}
        for g in self._limited:
            for name in self._pending_hosts_of.get(g, ()):
                for inst in s.instances_on(name):
                    if self._group_of(inst, cs) == g:
                        ahead[g] = min(ahead.get(g, inst.vcpus), inst.vcpus)
        return ahead

    def _first_drained(self) -> set[str]:
        """The hosts opened while nothing where instances stay could take any."""
        return set(self.s.data.get("first_drained", ()))

    def _waiting_makes_room(self) -> bool:
        """Whether something under way may yet make room where instances stay:
        a host being maintained, a move, a group's recovery_time."""
        s = self.s
        if any(s.open_ops(kind="move")) or any(s.open_ops(kind="watch")):
            return True
        if any(t is None or t > s.now for t in self._impacted.values()):
            return True
        return any(
            h.type == "compute"
            and (
                h.state in (HostState.DRAINED, HostState.IN_MAINTENANCE)
                or (h.state == HostState.DRAINING and s.is_empty(h.name))
            )
            for h in s.hosts.values()
        )

    def _started(
        self, inst: InstanceRow, action: str, target: str | None, cs: ConstraintSet
    ) -> None:
        why = second_moves.why_again(
            moved_before=inst.moves > 0, first_drained=inst.host in self._first_drained()
        )
        op = self.start_move(inst, action, target)
        host = self.s.hosts.get(target) if target is not None else None
        if host is not None and self._placement(host) is False:
            # Said in the plan: this instance lands on a host it will leave again.
            op.params = {**op.params, "moves_again": why}
        self._impacted[inst.instance_id] = None
        g = self._group_of(inst, cs)
        if target is not None and g in self._limited:
            self._limited[g][target] += 1

    def _instance_operation_ended(self, inst: InstanceRow, op: OperationRow) -> None:
        s = self.s
        cs = s.constraints()
        source = str(op.params.get("source", inst.host))
        target = op.params.get("target")
        g = self._group_of(inst, cs)
        super()._instance_operation_ended(inst, op)
        if inst.state == InstanceState.IN_ACTION:
            return
        recovery = float(self._rule(cs, g).recovery_time)
        until = s.now + timedelta(seconds=recovery)
        inst.impacted_until = until
        self._impacted[inst.instance_id] = until
        counts = self._limited.get(g)
        if counts is not None:
            if target is not None:
                counts[str(target)] -= 1  # the arrival counted in flight
            if inst.host != source and inst.state not in (InstanceState.GONE,):
                counts[source] -= 1
                counts[inst.host] += 1
        if inst.state == InstanceState.GONE or inst.host != source:
            dest = s.hosts.get(inst.host)
            if inst.state == InstanceState.GONE or dest is None or dest.state != HostState.PENDING:
                self._todo[g] -= 1
            else:
                self._pending_hosts_of[g].add(inst.host)
        self._admin_action_done(inst)

    def _admin_action_done(self, inst: InstanceRow) -> None:
        """ADMIN_ACTION_DONE to a project once every instance it was asked
        about in one wave has moved."""
        s = self.s
        if inst.wave is None:
            return
        key = (inst.wave, inst.project_id)
        asked = self._asked.get(key, [inst.instance_id])
        members = [s.instances[i] for i in asked if i in s.instances]
        if any(i.state in (*_WAITING, InstanceState.IN_ACTION) for i in members):
            return
        for i in members:
            i.wave = None
        self._asked.pop(key, None)
        project = s.projects.get(inst.project_id)
        if project is not None and project.managed and not s.final:
            s.notify_project(inst.project_id, "ADMIN_ACTION_DONE", asked, metadata={})

    # ------------------------------------------------------------------ opening hosts

    def _open(self, cs: ConstraintSet) -> bool:
        """Open the pending hosts that give idle groups work; True if any."""
        s = self.s
        open_now = sum(1 for h in s.hosts.values() if h.state in _OPEN and h.type == "compute")
        cap = s.request.max_parallel_hosts
        slots = (cap - open_now) if cap is not None else len(s.hosts)
        if slots <= 0:
            return False
        budgets = self._budgets(cs)
        busy: set[str] = set()
        draining: list[planner.HostLoad] = []
        for host in s.hosts_in(HostState.DRAINING):
            members = self._members_on(host, cs)
            draining.append(planner.HostLoad(host.name, tuple(members), host.position))
            busy.update(m.group_id for m in members)
        idle = {
            g: self._weight(cs, g)
            for g, left in self._todo.items()
            if left > 0 and g not in busy and budgets.get(g, 1) > 0
        }
        names: set[str] = set()
        for g in idle:
            names.update(self._pending_hosts_of.get(g, ()))
        pending = [h for h in s.hosts_in(HostState.PENDING) if h.type == "compute"]
        names.update(h.name for h in pending if s.is_empty(h.name))
        if not names and not draining and pending and not any(s.open_ops(kind="move")):
            # Nothing in flight and no group idle with work: open the lightest
            # host anyway, so that the session always makes progress.
            names.add(min(pending, key=lambda h: (s.used[h.name], h.position)).name)
            idle = dict.fromkeys(self._todo, 1.0)
        if not names:
            return False
        candidates = [
            planner.HostLoad(
                name, tuple(self._members_on(s.hosts[name], cs)), s.hosts[name].position
            )
            for name in sorted(names)
            if s.hosts[name].state == HostState.PENDING
            and self.controls.topology_allows(s.hosts[name])
        ]
        rules = self._rules_for(cs, [m for c in candidates for m in c.members])
        rules.update(self._rules_for(cs, [m for d in draining for m in d.members]))
        feasible = None
        if len(pending) <= _DRY_RUN_LIMIT:
            world: list[Any] = []  # built on first use: most decisions open nothing

            def feasible(opened: Sequence[str]) -> bool:
                if not world:
                    loads = [
                        planner.HostLoad(h.name, tuple(self._members_on(h, cs)), h.position)
                        for h in [*s.hosts_in(HostState.DRAINING), *pending]
                    ]
                    all_rules = dict(rules)
                    all_rules.update(
                        self._rules_for(cs, [m for load in loads for m in load.members])
                    )
                    targets = self._targets(cs) + [
                        planner.Target(h.name, s.free_vcpus(h), False, _GroupCount(self, h.name))
                        for h in s.hosts_in(HostState.DRAINING)
                    ]
                    world.extend((loads, targets, all_rules))
                loads, targets, all_rules = world
                order = [*(h.host for h in draining), *opened]
                return planner.drain_sequence(loads, targets, all_rules, first=order)[1] is None

        targets = self._targets(cs)
        # Instances of a host opened now move only where they stay: it opens
        # when they fit there now.
        chosen = planner.hosts_to_open(
            candidates,
            draining=draining,
            targets=second_moves.opening_targets(targets),
            idle_groups=idle,
            slots=slots,
            rules=rules,
            feasible=feasible,
        )
        empty_only = all(s.is_empty(name) for name in chosen)
        if empty_only and not draining and not self._waiting_makes_room():
            # Nothing where instances stay can take any host, nothing is out
            # of service: the first wave (second_moves).
            chosen = self._first_wave(candidates, targets, idle, slots, rules, feasible)
        opened = False
        for name in chosen:
            host = s.hosts[name]
            if not self.controls.topology_allows(host):
                continue  # its zone (rack ...) would be one too many next to one just opened
            if not self.may_start_host(host):
                break  # a window, pacing, a gate or a pause holds the rest
            opened = True
            s.set_host_state(host, HostState.DRAINING)
            for inst in s.instances_on(name):
                self._pending_hosts_of[self._group_of(inst, cs)].discard(name)
        return opened

    def _first_wave(
        self,
        candidates: Sequence[planner.HostLoad],
        targets: list[planner.Target],
        idle: Mapping[str, float],
        slots: int,
        rules: Mapping[str, planner.GroupRule],
        feasible: Callable[[Sequence[str]], bool] | None,
    ) -> list[str]:
        """Nothing where instances stay can take any host's instances and
        nothing is out of service: open the first drained hosts, whose
        instances may move twice, within second_moves.first_wave_room."""
        s = self.s
        stay_room = sum(t.free or 0 for t in targets if t.stays)
        order = second_moves.first_wave_order(candidates, stay_room=stay_room)
        # Those that cost second moves beyond the bound: every loaded host
        # but the first when no host is empty.
        costly = [load for load in order[1:] if load.members]
        room = second_moves.first_wave_room(
            sum(1 for i in s.instances.values() if self._in_scope(i)),
            one_host=len(costly[0].members) if costly else 0,
        )
        chosen: list[str] = []
        taken: list[planner.HostLoad] = []
        extra = 0
        for index, load in enumerate(order):
            if len(chosen) >= slots:
                break
            # The first host's second moves, when no host is empty, are in the
            # bound (second_moves.moves_lower_bound); the others are extra.
            cost = len(load.members) if index else 0
            if cost and extra + cost > room:
                continue
            more = planner.hosts_to_open(
                [load],
                draining=taken,
                targets=[t for t in targets if t.host not in chosen],
                idle_groups=idle,
                slots=1,
                rules=rules,
                feasible=_after(chosen, feasible),
            )
            if not more:
                continue
            chosen.append(load.host)
            taken.append(load)
            extra += cost
            if load.members:
                s.set_data(first_drained=[*s.data.get("first_drained", ()), load.host])
        return chosen

    # ------------------------------------------------------------------ bookkeeping

    def _rebuild(self, cs: ConstraintSet) -> None:
        """Rebuild the per-group indexes (on load, and when constraints change)."""
        s = self.s
        now = s.now
        self._index_of = cs
        self._group = {}
        self._todo = Counter()
        self._pending_hosts_of = defaultdict(set)
        self._limited = {}
        self._impacted = {}
        self._asked = {}
        for inst in s.instances.values():
            if inst.wave is not None:
                self._asked.setdefault((inst.wave, inst.project_id), []).append(inst.instance_id)
            if inst.state == InstanceState.GONE:
                continue
            g = self._group_of(inst, cs)
            rule = self._rule(cs, g)
            if rule.host_limit() is not None:
                counts = self._limited.setdefault(g, Counter())
                counts[inst.host] += 1
                if inst.state == InstanceState.IN_ACTION and inst.target:
                    counts[inst.target] += 1
            if inst.state == InstanceState.IN_ACTION:
                self._impacted[inst.instance_id] = None
            elif inst.impacted_until is not None and inst.impacted_until > now:
                self._impacted[inst.instance_id] = inst.impacted_until
            host = s.hosts.get(inst.host)
            if host is None or inst.state == InstanceState.OUT_OF_SCOPE:
                continue
            if host.state == HostState.PENDING:
                self._todo[g] += 1
                self._pending_hosts_of[g].add(host.name)
            elif host.state == HostState.DRAINING:
                self._todo[g] += 1

    def _group_of(self, inst: InstanceRow, cs: ConstraintSet) -> str:
        if self._index_of is cs:
            g = self._group.get(inst.instance_id)
            if g is None:
                g = self._group[inst.instance_id] = cs.group_key_of(
                    inst.instance_id, inst.project_id
                )
            return g
        return cs.group_key_of(inst.instance_id, inst.project_id)

    def _rule(self, cs: ConstraintSet, key: str) -> planner.GroupRule:
        """The rules of the group of key ``key`` (ConstraintSet.group_key_of:
        unique across projects, so two projects' groups of one id stay apart)."""
        return planner.GroupRule.of(cs.group_by_key(key), key)

    def _rules_for(
        self, cs: ConstraintSet, members: list[planner.Member]
    ) -> dict[str, planner.GroupRule]:
        return {m.group_id: self._rule(cs, m.group_id) for m in members}

    def _member(self, inst: InstanceRow, cs: ConstraintSet) -> planner.Member:
        return planner.Member(
            inst.instance_id, inst.project_id, self._group_of(inst, cs), inst.vcpus
        )

    def _members_on(self, host: HostRow, cs: ConstraintSet) -> list[planner.Member]:
        return [
            self._member(i, cs)
            for i in self.s.instances_on(host.name)
            if i.state not in (InstanceState.IN_ACTION, InstanceState.GONE)
        ]

    def _budgets(self, cs: ConstraintSet) -> dict[str, int]:
        """How many more members of each group may be impacted now."""
        s = self.s
        now = s.now
        impacted: Counter[str] = Counter()
        for instance_id, until in list(self._impacted.items()):
            if until is not None and until <= now:
                del self._impacted[instance_id]
                continue
            inst = s.instances.get(instance_id)
            if inst is not None:
                impacted[self._group_of(inst, cs)] += 1
        budgets: dict[str, int] = {}
        for g in self._todo:
            budgets[g] = self._max_impacted(cs, g) - impacted[g]
        for g, count in impacted.items():
            if g not in budgets:
                budgets[g] = self._max_impacted(cs, g) - count
        return budgets

    def _max_impacted(self, cs: ConstraintSet, key: str) -> int:
        return cs.group_by_key(key).max_impacted_members

    def _weight(self, cs: ConstraintSet, group_id: str) -> float:
        """How long a group still needs at best: its remaining rounds of moves."""
        g = cs.group_by_key(group_id)
        rounds = math.ceil(max(0, self._todo[group_id]) / g.max_impacted_members)
        return rounds * (_MOVE_ESTIMATE + g.recovery_time)

    def _targets(self, cs: ConstraintSet) -> list[planner.Target]:
        s = self.s
        targets: list[planner.Target] = []
        for h in s.hosts.values():
            stays = self._placement(h)
            if stays is None:
                continue
            targets.append(
                planner.Target(
                    host=h.name,
                    free=s.free_vcpus(h),
                    stays=stays,
                    members=_GroupCount(self, h.name),
                )
            )
        return targets

    def _wake_at(self, when: datetime | None) -> None:
        s = self.s
        current = [t for t in s.timers if t.kind == "wave_wake"]
        if when is None:
            return
        if any(t.due <= when for t in current):
            return
        s.cancel_timers("wave_wake")
        s.set_timer("wave_wake", when)

    def _next_wake_set(self) -> bool:
        return bool(self.s.timers)

    def _stuck(self, cs: ConstraintSet) -> None:
        """Nothing in flight, nothing to wait for, hosts left: say why and fail."""
        s = self.s
        waiting = [
            i.instance_id
            for h in s.hosts_in(HostState.DRAINING)
            for i in s.instances_on(h.name)
            if i.state == InstanceState.ACTION_CHOSEN
        ]
        if any(self.awaiting()) or s.data.get("paused") or s.data.get("ctl_waiting"):
            return  # a project, the admin or the calendar holds it: not stuck
        if waiting:
            self.fail(
                "no target host has room for "
                + ", ".join(waiting[:5])
                + (" ..." if len(waiting) > 5 else "")
                + " within capacity, anti-affinity and per-host limits"
            )
        elif s.hosts_in(HostState.PENDING):
            pending = [h for h in s.hosts_in(HostState.PENDING) if h.type == "compute"]
            self._scale_in_or_fail(pending)

    def on_host_operation(self, host: HostRow, op: OperationRow) -> None:
        if host.state == HostState.PENDING:
            self._index_of = None  # instances appeared on it: re-index

    def apply_inventory(
        self, found: Iterable[Mapping[str, Any]], scanned_hosts: Sequence[str] | None
    ) -> None:
        super().apply_inventory(found, scanned_hosts)
        self._index_of = None

    def _ended(self) -> bool:
        return self.s.final

    def retry(self) -> None:
        self._index_of = None
        super().retry()


def _after(
    opened: Sequence[str], feasible: Callable[[Sequence[str]], bool] | None
) -> Callable[[Sequence[str]], bool] | None:
    """``feasible`` asked about hosts opened after ``opened``."""
    if feasible is None:
        return None
    first = tuple(opened)
    return lambda more: feasible([*first, *more])


class _GroupCount(Mapping[str, int]):
    """Members of each limited group on one host, read from the workflow's index."""

    def __init__(self, workflow: ConstrainedWorkflow, host: str) -> None:
        self._workflow = workflow
        self._host = host

    def __getitem__(self, group_id: str) -> int:
        counts = self._workflow._limited.get(group_id)
        if counts is None:
            raise KeyError(group_id)
        return counts[self._host]

    def get(self, group_id: str, default: int = 0) -> int:  # type: ignore[override]
        counts = self._workflow._limited.get(group_id)
        return counts[self._host] if counts is not None else default

    def __iter__(self) -> Iterator[str]:
        return (g for g, c in self._workflow._limited.items() if c[self._host])

    def __len__(self) -> int:
        return sum(1 for _ in self)
