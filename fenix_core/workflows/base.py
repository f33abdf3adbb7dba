"""What every workflow shares: the dialogue with projects, deadlines and the
reply policy, action sequences, the host maintenance pipeline, inventory
refreshes, and failing cleanly.

A workflow is deterministic: it reads the session's rows and the clock, and
reaches the world only by recording operations and notifications on its
:class:`~fenix_core.runtime.LoadedSession`. The engine calls, within one step:

1. :meth:`Workflow.on_reply` for each reply received since the last step,
2. :meth:`Workflow.on_operation` for each operation that ended,
3. :meth:`Workflow.on_timer` for each timer that fell due,
4. :meth:`Workflow.advance` to make all the progress that is possible now,

and then commits everything at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from ..constraints import merge_cloud_dicts
from ..controls import jittered_backoff
from ..model import (
    ACTION_TYPES,
    ActionSpec,
    Instance,
    SessionRequest,
    check_request_actions,
    host_action_types,
)
from ..runtime import LoadedSession
from ..states import HostState, InstanceAction, InstanceState, SessionState
from ..store.schema import HostRow, InstanceRow, OperationRow, ProjectRow, TimerRow
from .controlled import SessionControls, timed_out
from .lifecycle import TARGET_ONLY, HostLifecycle

__all__ = ["SCHEDULER", "Workflow"]

#: The key of a refused move without a target (the cloud's scheduler chose).
SCHEDULER = ""

#: A timer due at once: the host's IN_MAINTENANCE is out before its work starts.
_ANNOUNCED = "host_announced"


class Workflow(ABC):
    """Base class of workflows; subclasses set ``name`` and implement
    :meth:`start` and :meth:`advance`."""

    name: ClassVar[str]
    #: Action types this workflow runs (validated in session requests).
    action_types: ClassVar[tuple[str, ...]] = ACTION_TYPES
    #: Whether a reply to PREPARE/PLANNED_MAINTENANCE must name an action for
    #: every instance it was asked about (False: the workflow picks the rest).
    requires_instance_actions: ClassVar[bool] = True

    def __init__(self, session: LoadedSession) -> None:
        self.s = session
        self.lifecycle = HostLifecycle(self)
        self.controls = SessionControls(self)

    # ------------------------------------------------------------------ operational controls
    # Every workflow calls may_start_host() before it starts work on a host
    # (draining it, or taking an empty one into maintenance) and may_start_work()
    # before it starts a new move; run_host() calls host_finished() itself.

    def may_start_host(self, host: HostRow) -> bool:
        """May work on ``host`` start now? Applies pause, the maintenance
        windows (the host's expected duration must fit in what is left of the
        window), pacing (hosts at once, per hour, per day, settle delay) and
        the session's health gates. True once: the host is then counted as
        started (asking again while it is in flight also answers True). False:
        the session waits, with the reason in its view and in
        ``maintenance_session``; a timer (or the gate's or a host's operation
        ending) makes the session step again, so call it again from
        ``advance()``. Idempotent within a step."""
        return self.controls.may_start_host(host)

    def may_start_work(self) -> bool:
        """False while the session is paused (or has ended): start no new
        move, let those in flight end."""
        return self.controls.may_start_work()

    def host_finished(self, host: HostRow) -> None:
        """Record that work on ``host`` is over (its duration, the settle delay
        and the gates count from here). ``run_host`` calls it; call it yourself
        only if your workflow maintains hosts without ``run_host``."""
        self.controls.host_finished(host)

    def pause(self, reason: str) -> None:
        """Stop starting hosts and moves; work in flight goes on."""
        self.controls.pause(reason)

    def resume(self) -> None:
        self.controls.resume()

    def cancel(self, reason: str) -> None:
        """End the session (MAINTENANCE_CANCELLED): stop asking, follow the
        migrations in flight, put back into service every host this session
        disabled (and only those)."""
        self._end("cancel", reason)

    def skip_host(self, host: HostRow, why: str) -> None:
        """Leave ``host`` as it is (disabled if it is), mark it SKIPPED, go on."""
        self.controls.skip_host(host, why)

    # ------------------------------------------------------------------ contract

    @classmethod
    def validate_request(cls, request: SessionRequest, action_names: Iterable[str]) -> None:
        """Reject a request this workflow cannot run (raises InvalidInput)."""
        check_request_actions(request, cls.action_types, action_names)

    @classmethod
    def retiring(cls, request: SessionRequest) -> frozenset[str]:
        """Hosts this session decommissions (emptied, then left out of service)."""
        return frozenset(request.decommission_hosts)

    @abstractmethod
    def start(self) -> None:
        """Begin the session: called by the engine at the first step of a new
        session (before :meth:`advance`) and by :meth:`retry`."""

    @abstractmethod
    def advance(self) -> None:
        """Make all the progress possible now."""

    # Optional hooks: the base class does nothing on these events.

    def on_project_answer(  # noqa: B027
        self, project: ProjectRow, awaited: str, instance_actions: Mapping[str, str]
    ) -> None:
        """A project acknowledged ``awaited`` (or the policy acts as if it had)."""

    def on_instance_moved(self, inst: InstanceRow, op: OperationRow) -> None:  # noqa: B027
        """An instance finished leaving its host (moved, or gone)."""

    def on_host_operation(self, host: HostRow, op: OperationRow) -> None:  # noqa: B027
        """A host pipeline operation ended well."""

    # ------------------------------------------------------------------ events

    def on_reply(
        self, project_id: str, ack: bool, awaited: str, instance_actions: Mapping[str, str]
    ) -> str:
        """Apply a validated reply; return what became of it (kept in the inbox)."""
        project = self.s.projects.get(project_id)
        if project is None or not project.awaiting or project.state != awaited:
            return "stale: not awaited any more"
        project.awaiting = False
        project.replied_at = self.s.now
        project.state = f"{'ACK' if ack else 'NACK'}_{awaited}"
        if not self.awaiting(awaited):
            self.s.cancel_timers("reply_deadline", state=awaited)
        if ack:
            self.on_project_answer(project, awaited, instance_actions)
            return "accepted"
        self.refused(project, awaited, f"answered NACK_{awaited}")
        return "refused"

    def on_timer(self, timer: TimerRow) -> None:
        if timer.kind == "reply_deadline":
            awaited = str(timer.data["state"])
            for project in self.awaiting(awaited):
                if project.reply_at is not None and project.reply_at > timer.due:
                    continue  # asked again later; that deadline has its own timer
                project.awaiting = False
                self.refused(
                    project, awaited, f"did not answer {awaited} by {timer.due.isoformat()}"
                )

    def on_operation(self, op: OperationRow) -> None:
        """Dispatch an ended operation; failures of host work fail the session."""
        s = self.s
        if "hosts" in op.result:  # the operation listed the cloud's hosts too
            self.lifecycle.listed(op.result["hosts"])
        if op.status == "done" and "cloud_constraints" in op.result:
            self.merge_cloud_constraints(op.result["cloud_constraints"])
        if op.kind == "gate":
            self.controls.gate_ended(op)
            return
        if op.status == "done":
            self.controls.unstuck(op)
        elif self.lifecycle.lost_host_of(op):
            self.controls.unstuck(op)  # not stuck: its host is gone (handled below)
        elif timed_out(op) and not s.final and self.controls.stuck(op):
            return
        if op.kind in ("move", "watch"):
            inst = s.instances.get(op.instance_id or "")
            if inst is not None and not self.lifecycle.lost_move(inst, op):
                self._instance_operation_ended(inst, op)
        elif op.kind == "list_hosts":
            self.lifecycle.list_ended(op)
        elif op.kind == "locate":
            self.lifecycle.located(op)
        elif op.kind == "inventory" and not op.host:
            if op.status == "done":
                self.apply_inventory(op.result.get("instances", []), op.params.get("hosts"))
            elif not s.final:
                self.fail(f"listing instances failed: {op.detail}")
        elif op.kind == "action" and op.host is None:
            if op.status == "done":
                key = str(op.params["sequence"])
                s.set_data(**{key: int(s.data.get(key, 0)) + 1})
            elif not s.final:
                spec = op.params["action"]
                self.fail(f"{spec['type']} action {spec['plugin']!r} failed: {op.detail}")
        elif op.host is not None and op.host in s.hosts:
            host = s.hosts[op.host]
            if host.state == HostState.ADDING:
                self.lifecycle.adding_ended(host, op)
            elif host.state != HostState.REMOVED:
                self._host_operation_ended(host, op)
        if s.final:
            self.cleanup()

    def merge_cloud_constraints(self, found: Mapping[str, Any]) -> None:
        """Fold what a listing found of the cloud's own constraints into the
        session's: groups by id, memberships by instance (a listing of some
        hosts only knows their instances)."""
        s = self.s
        known = s.data.get("cloud_constraints") or {"groups": [], "members": {}}
        merged = merge_cloud_dicts(known, found)
        if merged != known:
            s.set_data(cloud_constraints=merged)

    # ------------------------------------------------------------------ dialogue

    def ask(
        self,
        state: str,
        projects: Sequence[ProjectRow],
        instance_ids: Callable[[ProjectRow], Sequence[str]],
        *,
        allowed_actions: Sequence[str] = (),
        actions_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Send ``state`` to each project and wait for its answer until the deadline."""
        if not projects:
            return
        s = self.s
        reply_at = s.now + timedelta(seconds=s.request.reply_window(state))
        for project in projects:
            project.state = state
            project.awaiting = True
            project.reply_at = reply_at
            s.notify_project(
                project.project_id,
                state,
                instance_ids(project),
                allowed_actions=allowed_actions,
                reply_at=reply_at,
                actions_at=actions_at or reply_at,
                metadata=metadata if metadata is not None else s.request.metadata,
            )
        s.set_timer("reply_deadline", reply_at, state=state)

    def awaiting(self, state: str | None = None) -> list[ProjectRow]:
        return [
            p
            for p in self.s.projects.values()
            if p.awaiting and (state is None or p.state == state)
        ]

    def refused(self, project: ProjectRow, awaited: str, why: str) -> None:
        """A NACK or a missed deadline: fail, or act by default (reply_policy)."""
        if self.s.request.reply_policy == "fail":
            self.fail(f"project {project.project_id} {why}")
            return
        project.state = f"DEFAULT_{awaited}"
        self.on_project_answer(project, awaited, {})

    def managed_projects(self, ids: Iterable[str] | None = None) -> list[ProjectRow]:
        wanted = set(ids) if ids is not None else None
        return sorted(
            (
                p
                for p in self.s.projects.values()
                if p.managed and (wanted is None or p.project_id in wanted)
            ),
            key=lambda p: p.project_id,
        )

    def project_instances(self, project_id: str, *, on: str | None = None) -> list[InstanceRow]:
        """The project's instances on session hosts (or on host ``on``)."""
        rows = (
            self.s.instances_on(on)
            if on is not None
            else sorted(self.s.instances.values(), key=lambda i: i.instance_id)
        )
        return [
            i
            for i in rows
            if i.project_id == project_id
            and i.state not in (InstanceState.GONE, InstanceState.OUT_OF_SCOPE)
        ]

    def notify_instance_done(self, inst: InstanceRow) -> None:
        project = self.s.projects.get(inst.project_id)
        if project is not None and project.managed:
            self.s.notify_project(
                inst.project_id, "INSTANCE_ACTION_DONE", [inst.instance_id], metadata={}
            )

    # ------------------------------------------------------------------ action sequences

    def run_actions(self, sequence: str, types: Sequence[str], host: HostRow | None = None) -> bool:
        """Run the request's actions of ``types`` one after another (no host:
        session-wide ``pre`` / ``post``). True once all of them are done."""
        s = self.s
        specs = s.actions_of(*types)
        done = int(s.data.get(sequence, 0))
        if done >= len(specs):
            return True
        if any(s.open_ops(kind="action", host=host.name if host else None)):
            return False
        self.start_action(specs[done], sequence, host)
        return False

    def start_action(self, spec: ActionSpec, sequence: str, host: HostRow | None) -> OperationRow:
        return self.s.start_op(
            "action",
            host=host.name if host else None,
            params={
                "action": spec.to_dict(),
                "sequence": sequence,
                "host_type": host.type if host else None,
            },
            timeout=self.s.request.timeout("action"),
        )

    # ------------------------------------------------------------------ host pipeline

    def drains(self, host: HostRow) -> bool:
        """Whether ``host`` is emptied before its maintenance (and so disabled
        first and checked empty): every compute, and a controller that held
        instances when its turn came (a Kubernetes control-plane node running
        workload pods). Other controllers are maintained in place."""
        return host.type == "compute" or host.name in (self.s.data.get("drained_controllers") or ())

    def host_stages(self, host: HostRow) -> list[tuple[str, ActionSpec | None]]:
        """The steps that maintain one host, in order."""
        drains = self.drains(host)
        retires = self.lifecycle.retires(host)
        stages: list[tuple[str, ActionSpec | None]] = []
        # Disabled before anything else, so that nothing lands on it from here
        # on (a host drained first was disabled before its first move; the
        # stage then has nothing to do). A host someone else disabled stays as
        # they left it: never enable it.
        toggles = drains and host.enabled
        if toggles:
            stages.append(("disable", None))
        if drains:
            stages.append(("verify_empty", None))
        stages.append(("notify_in", None))
        stages += [("action", spec) for spec in self.s.actions_of(*host_action_types(host.type))]
        if retires:  # not coming back: not waited for, not enabled
            stages.append(("decommission", None))
            return stages
        stages.append(("host_up", None))
        if toggles:
            stages.append(("enable", None))
        stages.append(("notify_complete", None))
        return stages

    def run_host(self, host: HostRow) -> bool:
        """Advance the host's pipeline as far as possible; True when maintained."""
        s = self.s
        stages = self.host_stages(host)
        while host.stage < len(stages):
            if s.final or any(s.open_ops(host=host.name)):
                return False
            if any(t.kind == _ANNOUNCED and t.data.get("host") == host.name for t in s.timers):
                return False
            step, spec = stages[host.stage]
            if step == "notify_in" and not self.may_start_work():
                return False  # paused: a host not yet in maintenance does not go in
            if step == "notify_in":
                s.set_host_state(host, HostState.IN_MAINTENANCE)
                s.notify_host(host.name, "IN_MAINTENANCE")
                # Notifications go out at the end of the step, operations are
                # started before: the host's work starts at the next step, so
                # that IN_MAINTENANCE is always delivered before it.
                s.set_timer(_ANNOUNCED, s.now, host=host.name)
            elif step == "notify_complete":
                s.set_host_state(host, HostState.MAINTAINED)
                self.host_finished(host)
                s.notify_host(host.name, "MAINTENANCE_COMPLETE")
            elif step == "decommission":
                self.lifecycle.decommission(host)
            elif step == "verify_empty":
                s.start_op("inventory", host=host.name, params={"hosts": [host.name]})
                return False
            elif step == "disable":
                if not host.disabled_by_session:
                    self._disable(host, before_drain=False)
                    return False
            elif step == "enable":
                s.start_op("enable_host", host=host.name)
                return False
            elif step == "host_up":
                s.start_op("host_up", host=host.name, timeout=s.request.timeout("host_up"))
                return False
            elif step == "action":
                assert spec is not None
                self.start_action(spec, f"host:{host.name}", host)
                return False
            host.stage += 1
        return True

    def disabled_for_drain(self, host: HostRow) -> bool:
        """Disable ``host`` before the first instance leaves it, so that no new
        instance (a replacement pod, a scheduler's choice) lands on a host being
        emptied. True once it is disabled (or was disabled by someone else, or
        is not ours to toggle); False while the disable is under way: start no
        move off it yet. Moves still heading to it land first (they were sent
        while it was a target): their instances then leave with the others."""
        s = self.s
        if any(s.open_ops(kind="disable_host", host=host.name)):
            return False
        if any(op.params.get("target") == host.name for op in s.open_ops(kind="move")):
            return False
        if host.disabled_by_session or not host.enabled:
            return True
        self._disable(host, before_drain=True)
        return False

    def _disable(self, host: HostRow, *, before_drain: bool) -> None:
        host.disabled_by_session = True
        self.s.start_op(
            "disable_host",
            host=host.name,
            params={"reason": f"maintenance session {self.s.id}", "before_drain": before_drain},
        )

    def _host_operation_ended(self, host: HostRow, op: OperationRow) -> None:
        s = self.s
        if op.kind == "enable_host" and (op.status == "done" or s.final):
            host.disabled_by_session = False  # after a failure: one try, not a loop
        if op.kind == "disable_host" and op.status != "done":
            host.disabled_by_session = False  # not disabled: nothing to undo
        if s.final:
            return
        if op.kind == "disable_host" and op.params.get("before_drain"):
            # Not a pipeline stage: the drain goes on (or fails the session).
            if op.status != "done":
                self._host_work_failed(host, op)
            return
        if op.status != "done":
            self._host_work_failed(host, op)
            return
        if op.kind == "inventory":
            self.apply_inventory(op.result.get("instances", []), [host.name])
            if not s.is_empty(host.name):
                # Something arrived on the host since it was emptied: drain it again.
                s.set_host_state(host, HostState.PENDING)
                host.stage = 0
                self.on_host_operation(host, op)
                return
        host.stage += 1
        self.on_host_operation(host, op)

    def _host_work_failed(self, host: HostRow, op: OperationRow) -> None:
        s = self.s
        if op.kind == "host_up":
            why = f"host {host.name} did not come back after maintenance: {op.detail}"
            s.set_data(down_hosts=[*s.data.get("down_hosts", []), host.name])
            s.set_host_state(host, HostState.FAILED, reason=why + "; left disabled")
        elif op.kind == "action":
            spec = op.params["action"]
            why = f"{spec['type']} action {spec['plugin']!r} failed on {host.name}: {op.detail}"
            s.set_host_state(host, HostState.FAILED, reason=why)
        else:
            why = f"{op.kind.replace('_', ' ')} on {host.name} failed: {op.detail}"
            s.set_host_state(host, HostState.FAILED, reason=why)
        self.fail(why)

    # ------------------------------------------------------------------ instances

    def _instance_operation_ended(self, inst: InstanceRow, op: OperationRow) -> None:
        s = self.s
        source = str(op.params.get("source", inst.host))
        if op.status == "done":
            if op.result.get("gone"):
                s.set_instance_state(inst, InstanceState.GONE)
            else:
                new_host = str(op.result.get("host") or inst.target or inst.host)
                if inst.state == InstanceState.IN_ACTION:
                    s.set_instance_state(inst, InstanceState.ACTION_CHOSEN)
                inst.target = None
                self.forget_refusals(inst.instance_id)
                s.place_instance(inst, new_host)
                if new_host != source:
                    inst.moves += 1
                    self.controls.instance_moved_off(source, inst.instance_id)
                s.set_instance_state(inst, self.state_on(new_host))
            if not s.final:
                self.notify_instance_done(inst)
                self.on_instance_moved(inst, op)
            return
        # The move failed: the instance is still where it was.
        if op.kind == "move" and op.result.get("refused"):
            # The cloud refused the target (TargetRefused): not asked again as
            # is. A move that started and then failed may be tried there again.
            self.remember_refusal(inst.instance_id, op.params.get("target"), op.detail)
        if inst.state == InstanceState.IN_ACTION:
            s.set_instance_state(inst, InstanceState.ACTION_CHOSEN)
        inst.target = None
        if s.final:
            s.set_instance_state(inst, InstanceState.PENDING)
            return
        inst.attempts += 1
        if op.kind == "move" and inst.attempts <= s.request.max_migration_retries:
            backoff = jittered_backoff(
                inst.attempts, base=30.0, cap=600.0, seed=f"{s.id}:{inst.instance_id}"
            )
            s.set_timer(
                "retry_move", s.now + timedelta(seconds=backoff), instance_id=inst.instance_id
            )
            return
        s.set_instance_state(inst, InstanceState.FAILED)
        if op.kind == "watch":
            self.fail(
                f"instance {inst.instance_id} of project {inst.project_id} was not moved off "
                f"{source} by its manager (OWN_ACTION): {op.detail}"
            )
        else:
            self.fail(
                f"{op.params.get('action', 'move')} of instance {inst.instance_id} from {source} "
                f"failed after {inst.attempts} attempt(s): {op.detail}"
            )

    def state_on(self, host: str) -> InstanceState:
        """The state of an instance that arrived on ``host``: DONE where it can
        stay (maintained, or not part of the session), PENDING where it will
        have to move again."""
        row = self.s.hosts.get(host)
        if row is None or row.state == HostState.MAINTAINED or row.state in TARGET_ONLY:
            return InstanceState.DONE
        return InstanceState.PENDING

    def refused_targets(self, instance_id: str) -> dict[str, str]:
        """The targets the cloud refused for the instance's current move
        (:class:`~fenix_core.errors.TargetRefused`), with why (key :data:`SCHEDULER`: the
        move without a target, where the cloud's scheduler chose). A refused
        target is never asked for again in this move; the record goes when
        the instance has moved."""
        return dict(self.s.data.get("refused_targets", {}).get(instance_id, {}))

    def remember_refusal(self, instance_id: str, target: str | None, why: str | None) -> None:
        every = dict(self.s.data.get("refused_targets", {}))
        mine = dict(every.get(instance_id, {}))
        mine[target or SCHEDULER] = (why or "refused")[:500]
        every[instance_id] = mine
        self.s.set_data(refused_targets=every)

    def forget_refusals(self, instance_id: str) -> None:
        every = self.s.data.get("refused_targets", {})
        if instance_id in every:
            self.s.set_data(refused_targets={k: v for k, v in every.items() if k != instance_id})

    def retry_pending(self, instance_id: str) -> bool:
        return any(
            t.kind == "retry_move" and t.data.get("instance_id") == instance_id
            for t in self.s.timers
        )

    def start_move(self, inst: InstanceRow, action: str, target: str | None) -> OperationRow:
        s = self.s
        inst.action = action
        inst.target = target
        op = s.start_op(
            "watch" if action == InstanceAction.OWN_ACTION else "move",
            instance_id=inst.instance_id,
            params={"action": action, "target": target, "source": inst.host},
            timeout=s.request.timeout(
                "own_action" if action == InstanceAction.OWN_ACTION else "migration"
            ),
        )
        s.set_instance_state(inst, InstanceState.IN_ACTION)
        return op

    # ------------------------------------------------------------------ inventory

    def apply_inventory(
        self, found: Iterable[Mapping[str, Any]], scanned_hosts: Sequence[str] | None
    ) -> None:
        """Bring the instance rows in line with what the cloud reports.

        Instances not known yet are added (a project scaled out, or re-created
        one); known instances on the scanned hosts that the cloud no longer
        reports there are followed to where they are, or marked gone.
        """
        s = self.s
        seen: set[str] = set()
        for data in found:
            instance = Instance(
                instance_id=str(data["instance_id"]),
                project_id=str(data["project_id"]),
                host=str(data["host"]),
                vcpus=int(data.get("vcpus", 1)),
                name=str(data.get("name", "")),
                live_migratable=bool(data.get("live_migratable", True)),
            )
            seen.add(instance.instance_id)
            row = s.instances.get(instance.instance_id)
            if row is None:
                if instance.host not in s.hosts:
                    continue
                out_of_scope = s.hosts[instance.host].state in TARGET_ONLY
                if not out_of_scope:
                    s.ensure_project(instance.project_id, s.subscribed(instance.project_id))
                s.add_instance(
                    instance,
                    InstanceState.OUT_OF_SCOPE if out_of_scope else self.state_on(instance.host),
                )
                continue
            if row.state == InstanceState.GONE:
                s.set_instance_state(row, InstanceState.PENDING)
            if row.host != instance.host and row.state != InstanceState.IN_ACTION:
                s.place_instance(row, instance.host)
                dest = s.hosts.get(instance.host)
                stays_out = dest is None or dest.state in TARGET_ONLY
                if not (row.state == InstanceState.OUT_OF_SCOPE and stays_out):
                    s.set_instance_state(row, self.state_on(instance.host))
        scanned = set(scanned_hosts) if scanned_hosts is not None else set(s.hosts)
        for row in list(s.instances.values()):
            if (
                row.instance_id not in seen
                and row.host in scanned
                and row.state not in (InstanceState.GONE, InstanceState.IN_ACTION)
            ):
                s.set_instance_state(row, InstanceState.GONE)

    # ------------------------------------------------------------------ failure

    def fail(self, reason: str) -> None:
        """Fail the session: stop asking, put idle hosts back into service."""
        self._end("fail", reason)

    def _end(self, trigger: str, reason: str) -> None:
        s = self.s
        if s.final:
            return
        for project in s.projects.values():
            project.awaiting = False
        s.cancel_timers()
        # Migrations in flight are followed to the end (they change placement);
        # waiting for a manager's own action or a listing is pointless now.
        for op in list(s.open_ops()):
            if op.kind in ("watch", "inventory", "gate", "list_hosts", "locate"):
                s.abandon_op(
                    op, f"session {'failed' if trigger == 'fail' else 'cancelled'}: {reason}"
                )
                inst = s.instances.get(op.instance_id or "")
                if inst is not None and inst.state == InstanceState.IN_ACTION:
                    s.set_instance_state(inst, InstanceState.PENDING)
                    inst.target = None
        for inst in s.instances.values():
            if inst.state in (InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN):
                s.set_instance_state(inst, InstanceState.PENDING)
        for host in s.hosts.values():
            if host.state in (HostState.DRAINING, HostState.DRAINED):
                s.set_host_state(host, HostState.PENDING)
                host.stage = 0
            elif host.state == HostState.IN_MAINTENANCE:
                s.set_host_state(host, HostState.FAILED, reason=host.reason or reason)
        s.fire(trigger, reason=reason)
        self.cleanup()

    def cleanup(self) -> None:
        """After failure or cancel: enable every host this session disabled and
        is not working on any more, except hosts that did not come back up and
        hosts it skipped (left as they were on purpose)."""
        s = self.s
        down = set(s.data.get("down_hosts", [])) | set(s.data.get("ctl_skipped") or [])
        for host in s.hosts.values():
            if (
                host.disabled_by_session
                and host.name not in down
                and not any(s.open_ops(host=host.name))
            ):
                s.start_op("enable_host", host=host.name)

    def retry(self) -> None:
        """Restart a failed session from where it stopped."""
        s = self.s
        s.fire("retry")
        for host in s.hosts.values():
            if host.state == HostState.FAILED:
                s.set_host_state(host, HostState.PENDING)
                host.stage = 0
                host.reason = None
        for inst in s.instances.values():
            if inst.state == InstanceState.FAILED:
                s.set_instance_state(inst, InstanceState.PENDING)
                inst.attempts = 0
        s.set_data(down_hosts=[], scale_in_rounds=0, current_host=None, drain_host=None)
        s.row.failed_state = None
        s.row.finished_at = None
        self.start()

    def reschedule(self, maintenance_at: datetime | None) -> None:
        """The admin moved the start; only possible before host work started."""
        s = self.s
        s.row.maintenance_at = maintenance_at
        s.row.request = {
            **s.row.request,
            "maintenance_at": maintenance_at.isoformat() if maintenance_at else None,
        }
        s.request = SessionRequest.from_dict(s.row.request)
        s.cancel_timers("start")
        if s.row.phase == "wait_start" and maintenance_at and maintenance_at > s.now:
            s.set_timer("start", maintenance_at)

    def can_reschedule(self) -> bool:
        s = self.s
        if s.state == SessionState.AWAITING_APPROVAL:
            return True
        return s.state == SessionState.MAINTENANCE and s.row.phase in ("", "confirm", "wait_start")
