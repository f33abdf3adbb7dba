"""The rolling workflow: OpenStack Fenix's default sequence, one host at a time.

::

    MAINTENANCE ──► (wait for maintenance_at, run ``pre`` actions) ──► decide
    decide: a controller or an empty compute left ──► START_MAINTENANCE
            a compute whose instances fit elsewhere ─► PLANNED_MAINTENANCE
                                                       (PREPARE_MAINTENANCE while
                                                        no compute is maintained)
            no room anywhere ───────────────────────► SCALE_IN (projects with a
                                                       manager) or MAINTENANCE_FAILED
            every host maintained ──────────────────► MAINTENANCE_COMPLETE
    START_MAINTENANCE: controllers first, then every empty compute, one by one:
            IN_MAINTENANCE, disable, ``host`` + type actions, back up, enable,
            MAINTENANCE_COMPLETE ──► decide
    PREPARE/PLANNED_MAINTENANCE: ask the projects on the chosen host how to move
            each instance, move them (one migration at a time off the host),
            INSTANCE_ACTION_DONE per instance, ADMIN_ACTION_DONE per project
            ──► START_MAINTENANCE
    MAINTENANCE_COMPLETE: ``post`` actions, then MAINTENANCE_COMPLETE to every
            project, which scales back out ──► MAINTENANCE_DONE

Instances go preferably to hosts that are already maintained (or outside the
session), so that each moves once where capacity allows. Targets keep the
cloud's placement rules (server groups, see :mod:`fenix_core.placement_rules`);
a target the cloud refused is not asked for again in that move: the next
acceptable host is, then the cloud's scheduler (a move without a target).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import attrs

from .. import planner
from ..placement_rules import HARD_POLICIES, HostLimits, PlacementRule, host_limits
from ..runtime import ids
from ..states import WORK_HOST_STATES, HostState, InstanceAction, InstanceState, SessionState
from ..store.schema import HostRow, InstanceRow, ProjectRow
from .base import SCHEDULER, Workflow

__all__ = ["RollingWorkflow"]

#: SCALE_IN rounds before the session gives up on getting an empty host.
MAX_SCALE_IN_ROUNDS = 5
_DRAIN_STATES = (SessionState.PREPARE_MAINTENANCE, SessionState.PLANNED_MAINTENANCE)
_MOVABLE = (InstanceAction.MIGRATE, InstanceAction.LIVE_MIGRATE, InstanceAction.EVICT)
_NO_LIMITS = HostLimits()


class RollingWorkflow(Workflow):
    """Fenix default semantics: hosts are maintained one at a time."""

    name: ClassVar[str] = "rolling"
    _rule_index: tuple[object, dict[str, list[PlacementRule]]] | None = None

    # ------------------------------------------------------------------ driver

    def start(self) -> None:
        s = self.s
        if s.row.version == 0:
            s.announce()  # a new session: the admin view learns it exists
        affected = {i.project_id for i in s.instances.values() if self._in_scope(i)}
        unmanaged = sorted(p for p in affected if not s.projects[p].managed)
        if s.request.project_policy == "fail" and unmanaged:
            self.fail(
                "projects without an application manager: "
                + ", ".join(unmanaged)
                + " (project_policy is 'fail')"
            )
            return
        s.row.phase = "confirm"
        start_at = s.request.maintenance_at
        self.ask(
            "MAINTENANCE",
            self.managed_projects(affected),
            lambda p: ids(self.project_instances(p.project_id)),
            actions_at=max(s.now, start_at) if start_at else s.now,
        )

    def handlers(self) -> dict[SessionState, Callable[[], bool]]:
        """What advances the session in each state (True: call again)."""
        return {
            SessionState.MAINTENANCE: self._maintenance,
            SessionState.SCALE_IN: self._scale_in,
            SessionState.PREPARE_MAINTENANCE: self._drain,
            SessionState.PLANNED_MAINTENANCE: self._drain,
            SessionState.START_MAINTENANCE: self._start_maintenance,
            SessionState.MAINTENANCE_COMPLETE: self._complete,
        }

    def advance(self) -> None:
        handlers = self.handlers()
        while not self.s.final:
            if not handlers[self.s.state]():
                return

    # ------------------------------------------------------------------ states

    def _maintenance(self) -> bool:
        s = self.s
        phase = s.row.phase
        if phase == "confirm":
            if self.awaiting("MAINTENANCE"):
                return False
            s.row.phase = "wait_start"
            start_at = s.request.maintenance_at
            if start_at is not None and start_at > s.now:
                s.set_timer("start", start_at)
            return True
        if phase == "wait_start":
            if any(t.kind == "start" for t in s.timers):
                return False
            s.row.phase = "pre"
            return True
        if phase != "pre":
            raise RuntimeError(f"rolling workflow: unknown MAINTENANCE phase {phase!r}")
        if not self.run_actions("pre_actions_done", ["pre"]):
            return False
        if not self.lifecycle.hosts_ready():
            return False
        shortfall = self.lifecycle.shortfall()
        if shortfall is not None:
            self.fail(shortfall)
            return False
        return self.decide_next()

    def _scale_in(self) -> bool:
        s = self.s
        if s.row.phase == "confirm":
            if self.awaiting("SCALE_IN"):
                return False
            s.row.phase = "refresh"
            s.start_op("inventory", params={"hosts": sorted(s.hosts)})
            return False
        if any(s.open_ops(kind="inventory")):
            return False
        s.set_data(scale_in_freed=int(s.data.get("scale_in_load", 0)) - self._load())
        return self.decide_next()

    def _drain(self) -> bool:
        s = self.s
        host = s.hosts[str(s.data["drain_host"])]
        if host.state == HostState.SKIPPED:  # stuck, and the escalation policy skipped it
            return self.decide_next()
        if host.state == HostState.REMOVED:  # the cloud lost it meanwhile
            return self.decide_next()
        if s.row.phase == "refresh":
            if any(s.open_ops(kind="inventory")):
                return False
            if s.is_empty(host.name):
                s.set_host_state(host, HostState.DRAINED)
                self._go("start", SessionState.START_MAINTENANCE)
                return True
            s.set_host_state(host, HostState.DRAINING)
            s.row.phase = "drain"
            self._request_actions(host)
            return True
        # phase == "drain"
        self._request_actions(host)
        if self.disabled_for_drain(host):
            self._pump_moves(host)
        if s.final:
            return False
        self._send_admin_action_done(host)
        if s.is_empty(host.name) and not self._moves_from(host):
            s.set_host_state(host, HostState.DRAINED)
            self._go("start", SessionState.START_MAINTENANCE)
            return True
        return False

    def _start_maintenance(self) -> bool:
        s = self.s
        current = s.data.get("current_host")
        if current is None:
            host = self._next_host_to_maintain()
            if host is None:
                return self.decide_next()
            if not self.may_start_host(host):
                return False
            s.set_data(current_host=host.name)
        else:
            host = s.hosts[current]
            if host.state in (HostState.SKIPPED, HostState.REMOVED):
                s.set_data(current_host=None)
                return True
        if host.state == HostState.PENDING and not s.is_empty(host.name):
            # The last check found instances on it: it has to be drained first.
            s.set_data(current_host=None)
            return True
        if self.run_host(host):
            s.set_data(current_host=None)
            return True
        return False

    def _complete(self) -> bool:
        s = self.s
        if s.row.phase in ("", "post"):
            s.row.phase = "post"
            if not self.run_actions("post_actions_done", ["post"]):
                return False
            s.row.phase = "confirm"
            self.ask(
                "MAINTENANCE_COMPLETE",
                self.managed_projects(),
                lambda p: ids(self.project_instances(p.project_id)),
            )
            return True
        if self.awaiting("MAINTENANCE_COMPLETE"):
            return False
        s.fire("done")
        return True

    # ------------------------------------------------------------------ decisions

    def decide_next(self) -> bool:
        """Choose what comes next; False if the session has to wait for it
        (window, pacing, gate, pause)."""
        s = self.s
        pending = s.hosts_in(HostState.PENDING)
        if s.hosts_in(HostState.DRAINED) or any(s.is_empty(h.name) for h in pending):
            self._go("start", SessionState.START_MAINTENANCE)
            return True
        if not pending:
            self._go("complete", SessionState.MAINTENANCE_COMPLETE)
            return True
        # Controllers first: one that holds instances (a control-plane node
        # running pods) is drained like a compute, one at a time.
        controllers = [h for h in pending if h.type != "compute"]
        candidates = controllers or pending
        # Once PLANNED, stay PLANNED even if the maintained hosts left the cloud.
        maintained = (
            bool(s.hosts_in(HostState.MAINTAINED, type="compute"))
            or s.state == SessionState.PLANNED_MAINTENANCE
        )
        choice = self._host_to_drain(candidates, planned=maintained)
        if choice is None:
            self._scale_in_or_fail(candidates)
            return not self.lifecycle.relisting()
        return self._begin_drain(s.hosts[choice], planned=maintained)

    def _begin_drain(self, host: HostRow, *, planned: bool) -> bool:
        """Start emptying ``host`` (PREPARE_ or PLANNED_MAINTENANCE); False if
        the controls hold it back."""
        s = self.s
        if not self.may_start_host(host):
            return False
        if planned:
            self._go("plan", SessionState.PLANNED_MAINTENANCE)
        else:
            self._go("prepare", SessionState.PREPARE_MAINTENANCE)
        if host.type != "compute":
            drained = s.data.get("drained_controllers") or []
            s.set_data(drained_controllers=sorted({*drained, host.name}))
        s.set_data(drain_host=host.name, drain_projects={}, admin_done=[])
        s.row.phase = "refresh"
        s.start_op("inventory", params={"hosts": [host.name]})
        return True

    def _go(self, trigger: str, dest: SessionState) -> None:
        if self.s.state == dest:
            self.s.row.phase = ""
        else:
            self.s.fire(trigger)

    def _host_to_drain(self, computes: list[HostRow], *, planned: bool) -> str | None:
        s = self.s
        if planned:
            ordered = computes  # the rolling order: as the request listed them
        else:
            # Before any host is maintained, empty the least loaded host first:
            # its instances will have to move again later.
            ordered = sorted(
                computes, key=lambda h: (s.used[h.name], len(s.on_host[h.name]), h.position)
            )
        # Built as the planner asks for them: it usually stops at the first.
        candidates = (
            planner.DrainCandidate(h.name, tuple(self._movable(i) for i in s.instances_on(h.name)))
            for h in ordered
        )
        chosen = planner.choose_host_to_drain(candidates, self._slots())
        return chosen[0] if chosen else None

    def _scale_in_or_fail(self, computes: list[HostRow]) -> None:
        """Ask the projects to SCALE_IN, or fail; first list the hosts again
        (a host added meanwhile may make room): then nothing is decided yet."""
        s = self.s
        if not self.lifecycle.listed_now():
            return
        lightest = min(computes, key=lambda h: (s.used[h.name], h.position))
        free = sum(
            max(0, s.free_vcpus(slot_host) or 0)
            for slot_host in s.hosts.values()
            if self._placement(slot_host) is not None and slot_host.name != lightest.name
        )
        shortage = self._rule_shortage(lightest) or (
            f"the least loaded host {lightest.name} has {s.used[lightest.name]} vcpus of "
            f"instances and the other hosts have {free} vcpus free"
        )
        affected = {i.project_id for h in computes for i in s.instances_on(h.name)}
        managed = self.managed_projects(affected)
        rounds = int(s.data.get("scale_in_rounds", 0))
        if not managed:
            self.fail(
                f"cannot empty any host: {shortage}; no project has an application manager "
                "to scale in"
            )
            return
        if rounds and int(s.data.get("scale_in_freed", 0)) <= 0:
            self.fail(f"SCALE_IN freed no capacity: {shortage}")
            return
        if rounds >= MAX_SCALE_IN_ROUNDS:
            self.fail(f"still no room after {rounds} SCALE_IN rounds: {shortage}")
            return
        s.set_data(scale_in_rounds=rounds + 1, scale_in_load=self._load())
        self._go("scale_in", SessionState.SCALE_IN)
        s.row.phase = "confirm"
        self.ask(
            "SCALE_IN",
            managed,
            lambda p: ids(self.project_instances(p.project_id)),
        )

    def _rule_shortage(self, host: HostRow) -> str | None:
        """Why ``host`` cannot be emptied if the cloud's placement rules, not
        capacity, keep an instance on it."""
        slots = [x for x in self._slots() if x.host != host.name]
        for inst in self.s.instances_on(host.name):
            movable = self._movable(inst)
            hard = [r.label() for r in movable.limits.rules if r.policy in HARD_POLICIES]
            if (
                hard
                and planner.choose_target(movable, slots) is None
                and planner.choose_target(attrs.evolve(movable, limits=_NO_LIMITS), slots)
            ):
                return (
                    f"instance {inst.instance_id} on {host.name} cannot go anywhere: every "
                    f"host with room for it holds members of its {', '.join(hard)}, which "
                    "the cloud enforces"
                )
        return None

    def _next_host_to_maintain(self) -> HostRow | None:
        s = self.s
        pending = s.hosts_in(HostState.PENDING)
        for host in pending:
            if host.type != "compute" and s.is_empty(host.name):
                return host
        drained = s.hosts_in(HostState.DRAINED)
        if drained:
            return drained[0]
        for host in pending:
            if s.is_empty(host.name):
                return host
        return None

    # ------------------------------------------------------------------ draining

    def _request_actions(self, host: HostRow) -> None:
        """Ask the projects how to move their instances off ``host`` (projects
        without a manager get the engine's default action)."""
        s = self.s
        fresh: dict[str, list[InstanceRow]] = {}
        for inst in s.instances_on(host.name):
            if inst.state == InstanceState.PENDING:
                fresh.setdefault(inst.project_id, []).append(inst)
        if not fresh:
            return
        drain_projects = dict(s.data.get("drain_projects", {}))
        ask: list[ProjectRow] = []
        for project_id, insts in sorted(fresh.items()):
            project = s.ensure_project(project_id, s.subscribed(project_id))
            if project.managed and project.awaiting:
                continue  # asked already; new arrivals wait for the answer
            drain_projects[project_id] = sorted({*drain_projects.get(project_id, []), *ids(insts)})
            if project.managed:
                for inst in insts:
                    s.set_instance_state(inst, InstanceState.ACTION_REQUESTED)
                ask.append(project)
            else:
                for inst in insts:
                    inst.action = s.default_action(inst)
                    s.set_instance_state(inst, InstanceState.ACTION_CHOSEN)
        s.set_data(drain_projects=drain_projects)
        state = s.state.value
        self.ask(
            state,
            ask,
            lambda p: ids(
                i
                for i in self.project_instances(p.project_id, on=host.name)
                if i.state == InstanceState.ACTION_REQUESTED
            ),
            allowed_actions=s.allowed_actions,
            # A retired host does not come back: managers may want to re-create
            # rather than wait (see docs/lifecycle.md).
            metadata={**s.request.metadata, "host_returns": False}
            if self.lifecycle.retires(host)
            else None,
        )

    def on_project_answer(
        self, project: ProjectRow, awaited: str, instance_actions: Mapping[str, str]
    ) -> None:
        s = self.s
        if awaited not in (SessionState.PREPARE_MAINTENANCE, SessionState.PLANNED_MAINTENANCE):
            return
        # Only the host being drained has instances asked about (not all of them).
        drain_host = s.data.get("drain_host")
        candidates = (
            s.instances_on(str(drain_host)) if drain_host in s.hosts else s.instances.values()
        )
        for inst in candidates:
            if (
                inst.project_id != project.project_id
                or inst.state != InstanceState.ACTION_REQUESTED
            ):
                continue
            action = instance_actions.get(inst.instance_id) or s.default_action(inst)
            inst.action = action
            s.set_instance_state(inst, InstanceState.ACTION_CHOSEN)

    def _pump_moves(self, host: HostRow) -> None:
        """Start what can start: every OWN_ACTION watch, and the next migration
        (one at a time off a host, as Nova's default allows)."""
        s = self.s
        if not self.may_start_work():
            return  # paused: the moves in flight end, no new one starts
        busy = self._moves_from(host, kind="move")
        for inst in s.instances_on(host.name):
            if inst.state != InstanceState.ACTION_CHOSEN or self.retry_pending(inst.instance_id):
                continue
            if inst.action == InstanceAction.OWN_ACTION:
                self.start_move(inst, InstanceAction.OWN_ACTION, None)
                continue
            if busy:
                continue
            chosen, target = self._target_for(inst, host)
            if not chosen:
                return  # the session failed, saying why
            self.start_move(inst, inst.action or s.default_action(inst), target)
            busy = True

    def _target_for(self, inst: InstanceRow, source: HostRow) -> tuple[bool, str | None]:
        """Where to move ``inst``: ``(True, host)``, ``(True, None)`` to let
        the cloud's scheduler choose, or ``(False, None)`` once the session
        failed because no host can take it."""
        limits = self._limits(inst)
        iid = inst.instance_id
        if limits.stuck is not None:
            self.fail(self._stuck_message(inst, limits.stuck))
            return False, None
        refused = self.refused_targets(iid)
        slots = [x for x in self._slots() if x.host != source.name]
        movable = self._movable(inst, limits)
        target = planner.choose_target(movable, [x for x in slots if x.host not in refused])
        if target is not None:
            return True, target
        if refused and SCHEDULER not in refused:
            return True, None  # no explicit host left: the cloud's scheduler may know one
        if refused:
            self.fail(
                f"the cloud refused every host for instance {iid} from {source.name}: "
                + "; ".join(f"{host or 'its scheduler'}: {why}" for host, why in refused.items())
            )
            return False, None
        if planner.choose_target(attrs.evolve(movable, limits=HostLimits()), slots) is not None:
            hard = [r.label() for r in limits.rules if r.policy in HARD_POLICIES]
            self.fail(
                f"no host can take instance {iid} from {source.name}: every host with room "
                f"for it holds members of its {', '.join(hard)}, which the cloud enforces"
            )
            return False, None
        self.fail(f"no host has room for instance {iid} ({inst.vcpus} vcpus) from {source.name}")
        return False, None

    def _stuck_message(self, inst: InstanceRow, rule: PlacementRule) -> str:
        others = sorted(m for m in rule.members if m != inst.instance_id and m in self.s.instances)
        return (
            f"instance {inst.instance_id} is a member of {rule.label()}"
            + (f" with {', '.join(others)}" if others else "")
            + f" on {inst.host}: the cloud moves no member of an affinity group away from "
            "the others, so the engine cannot move it; its project has to move the group "
            "itself (answer OWN_ACTION) or remove the affinity group"
        )

    def _moves_from(self, host: HostRow, kind: str | None = None) -> bool:
        return any(
            op.params.get("source") == host.name
            for op in self.s.open_ops()
            if op.kind in ((kind,) if kind else ("move", "watch"))
        )

    def _send_admin_action_done(self, host: HostRow) -> None:
        s = self.s
        done = set(s.data.get("admin_done", []))
        sent = False
        for project_id, instance_ids in sorted(s.data.get("drain_projects", {}).items()):
            if project_id in done:
                continue
            left = [
                i
                for i in instance_ids
                if i in s.instances
                and s.instances[i].host == host.name
                and s.instances[i].state != InstanceState.GONE
            ]
            if left:
                continue
            done.add(project_id)
            sent = True
            if s.projects[project_id].managed:
                s.notify_project(project_id, "ADMIN_ACTION_DONE", instance_ids, metadata={})
        if sent:
            s.set_data(admin_done=sorted(done))

    # ------------------------------------------------------------------ capacity

    def _in_scope(self, inst: InstanceRow) -> bool:
        return inst.state not in (InstanceState.GONE, InstanceState.OUT_OF_SCOPE)

    def _placement(self, host: HostRow) -> bool | None:
        """Whether ``host`` can receive instances: None if not, True if an
        instance placed there can stay, False if it will have to move again."""
        if host.type != "compute" or not host.enabled or self.lifecycle.retires(host):
            return None
        if host.state in (HostState.MAINTAINED, HostState.ADDED):
            return True
        if host.state == HostState.PENDING:
            return False
        if host.state != HostState.OUT_OF_SCOPE:
            return None
        # Not ours: another running session may be draining or maintaining it.
        elsewhere = self.s.foreign_hosts().get(host.name)
        if elsewhere is None or elsewhere == HostState.MAINTAINED:
            return True
        if elsewhere == HostState.PENDING:
            return False
        return None

    def _slots(self) -> list[planner.Slot]:
        s = self.s
        slots = []
        for h in s.hosts.values():
            stays = self._placement(h)
            if stays is not None:
                slots.append(
                    planner.Slot(
                        host=h.name,
                        free=s.free_vcpus(h),
                        stays=stays,
                        project_load=s.projects_on[h.name],
                    )
                )
        return slots

    def _movable(self, inst: InstanceRow, limits: HostLimits | None = None) -> planner.Movable:
        if limits is None:
            limits = self._limits(inst)
            if limits.stuck is not None:
                # Plan as if it could move: draining its host says why it cannot.
                limits = attrs.evolve(limits, only=None)
        return planner.Movable(inst.instance_id, inst.project_id, inst.vcpus, limits)

    def _limits(self, inst: InstanceRow) -> HostLimits:
        """The cloud's placement rules on where ``inst`` may go now."""
        rules = self._rules_of(inst.instance_id)
        if not rules:
            return _NO_LIMITS
        where = {m: self._occupies(m) for rule in rules for m in rule.members}
        return host_limits(inst.instance_id, rules, where)

    def _rules_of(self, instance_id: str) -> list[PlacementRule]:
        placement = self.s.constraints().cloud.placement
        if not placement:
            return []
        cached = self._rule_index
        if cached is None or cached[0] is not placement:
            index: dict[str, list[PlacementRule]] = {}
            for rule in placement:
                for member in rule.members:
                    index.setdefault(member, []).append(rule)
            cached = self._rule_index = (placement, index)
        return cached[1].get(instance_id, [])

    def _occupies(self, instance_id: str) -> tuple[str, ...]:
        """The hosts an instance counts on: its own, and its move's target."""
        inst = self.s.instances.get(instance_id)
        if inst is None or inst.state == InstanceState.GONE:
            return ()
        if inst.state == InstanceState.IN_ACTION and inst.target:
            return (inst.host, inst.target)
        return (inst.host,)

    def _load(self) -> int:
        s = self.s
        return sum(
            s.used[h.name]
            for h in s.hosts.values()
            if h.type == "compute" and h.state in WORK_HOST_STATES
        )
