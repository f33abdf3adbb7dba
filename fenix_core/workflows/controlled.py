"""Operational controls as a workflow applies them: admission of the next host
(windows, pacing, health gates, pause), stuck work and its escalation.

:class:`SessionControls` is what :class:`~fenix_core.workflows.base.Workflow`
delegates to (``may_start_host``, ``may_start_work``, ``host_finished`` ...);
the decisions themselves are the pure functions of :mod:`fenix_core.controls`.
Everything it remembers lives in the session's data (``ctl_*`` keys,
``paused``), so it survives restarts like the rest of the session.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ..budgets import topology_refusal
from ..controls import (
    HOST_GUARD,
    STUCK_KIND_OF_OPERATION,
    Controls,
    GateSpec,
    Ledger,
    admit,
    describe_stuck,
)
from ..runtime import iso
from ..states import HostState, InstanceState, budget_hosts
from ..store.schema import HostRow, OperationRow

if TYPE_CHECKING:
    from .base import Workflow

__all__ = ["STUCK_KIND_OF_OPERATION", "SessionControls", "timed_out"]

_WAIT_TIMER = "controls_wait"


def timed_out(op: OperationRow) -> bool:
    """Whether the operation failed because its deadline passed."""
    return (
        op.status == "failed"
        and op.deadline is not None
        and op.finished_at is not None
        and op.finished_at >= op.deadline
    )


class SessionControls:
    """The controls of one loaded session (see the module docstring)."""

    def __init__(self, workflow: Workflow) -> None:
        self.w = workflow
        self.s = workflow.s

    @property
    def controls(self) -> Controls:
        return self.s.request.controls

    @property
    def paused(self) -> bool:
        return bool(self.s.data.get("paused"))

    def ledger(self) -> Ledger:
        removed = (h.name for h in self.s.hosts_in(HostState.REMOVED))
        return Ledger.from_data(self.s.data, removed=removed)

    def in_flight(self, host: HostRow) -> bool:
        """Whether ``host`` was admitted and its work has not ended yet."""
        return host.name in self.ledger().in_progress()

    # ------------------------------------------------------------------ admission

    def may_start_work(self) -> bool:
        return not self.s.final and not self.paused

    def topology_allows(self, host: HostRow) -> bool:
        """Whether the topology caps would let ``host`` start next to the hosts
        in maintenance now (a workflow choosing among hosts skips the others)."""
        caps = self.controls.max_topology_in_maintenance
        if not caps:
            return True
        labels = self.s.data.get("host_labels") or {}
        busy = [labels.get(h, {}) for h in self.ledger().in_progress() if h != host.name]
        return topology_refusal(caps, labels.get(host.name) or {}, busy) is None

    def may_start_host(self, host: HostRow) -> bool:
        s = self.s
        started = s.data.get("ctl_started") or {}
        ledger = self.ledger()
        if host.name in started and host.name not in ledger.finished:
            return True  # admitted already: its work is in flight
        if s.final:
            return False
        if self.paused:
            self._wait("paused", f"paused: {s.data.get('pause_reason') or 'by the admin'}", None)
            return False
        labels = s.data.get("host_labels") or {}
        history = ledger.history(
            self.controls, hosts=budget_hosts(h.state for h in s.hosts.values()), labels=labels
        )
        admission = admit(s.now, self.controls, history, labels.get(host.name))
        if not admission.ok:
            self._drop_gates()
            cause = "window" if admission.wait_until is None else f"pace:{admission.wait_until}"
            self._wait(cause, f"{host.name} waits: {admission.reason}", admission.wait_until)
            return False
        if not self._gates_pass(host):
            return False
        s.set_data(ctl_started={**started, host.name: s.now.isoformat()}, ctl_gate=None)
        self._clear_wait()
        return True

    def host_finished(self, host: HostRow) -> None:
        s = self.s
        finished = dict(s.data.get("ctl_finished") or {})
        if host.name in finished:
            return
        finished[host.name] = s.now.isoformat()
        started = dict(s.data.get("ctl_started") or {})
        if host.name not in started and host.started_at is not None:
            started[host.name] = host.started_at.isoformat()  # a workflow that did not ask
        s.set_data(ctl_finished=finished, ctl_started=started, ctl_last_host=host.name)

    def instance_moved_off(self, source: str, instance_id: str) -> None:
        moved = dict(self.s.data.get("ctl_moved_off") or {})
        moved[source] = sorted({*moved.get(source, []), instance_id})
        self.s.set_data(ctl_moved_off=moved)

    # ------------------------------------------------------------------ gates

    def _gates_of(self, host: HostRow) -> tuple[GateSpec, ...]:
        """The gates asked before ``host``: the request's, after the driver's
        own guard for a controller (when the driver has one)."""
        gates = tuple(self.controls.gates)
        if host.type != "compute" and self.s.data.get("host_guard"):
            return (GateSpec(HOST_GUARD), *gates)
        return gates

    def _gates_pass(self, host: HostRow) -> bool:
        s = self.s
        gates = self._gates_of(host)
        if not gates:
            return True
        progress = s.data.get("ctl_gate") or {}
        if progress.get("host") != host.name:
            self._drop_gates()
            progress = {"host": host.name, "passed": 0}
            s.set_data(ctl_gate=progress)
        passed = int(progress["passed"])
        if passed >= len(gates):
            return True
        spec = gates[passed]
        running = [op for op in s.open_ops(kind="gate") if op.params.get("host") == host.name]
        if running:
            detail = running[0].detail or "checking"
            self._wait(
                f"gate:{spec.name}:{host.name}",
                f"gate {spec.name} before {host.name}: {detail}",
                None,
            )
            return False
        last = s.data.get("ctl_last_host")
        s.start_op(
            "gate",
            params={
                "gate": spec.name,
                "params": dict(spec.params),
                "host": host.name,
                "last_host": last,
                "moved_instances": list((s.data.get("ctl_moved_off") or {}).get(last, [])),
            },
            timeout=self.controls.gate_timeout,
        )
        self._wait(
            f"gate:{spec.name}:{host.name}", f"gate {spec.name} before {host.name}: checking", None
        )
        return False

    def _drop_gates(self) -> None:
        for op in list(self.s.open_ops(kind="gate")):
            self.s.abandon_op(op, "no longer needed")
        if self.s.data.get("ctl_gate"):
            self.s.set_data(ctl_gate=None)

    def gate_ended(self, op: OperationRow) -> None:
        s = self.s
        progress = s.data.get("ctl_gate") or {}
        host = str(op.params.get("host"))
        if op.status == "done":
            if progress.get("host") == host:
                s.set_data(ctl_gate={"host": host, "passed": int(progress["passed"]) + 1})
            return
        if s.final or op.status != "failed":
            return
        if op.result.get("verdict") == "stop":
            self.pause(f"gate {op.params['gate']} said stop before {host}: {op.detail}")
        elif timed_out(op):
            self.stuck(op)

    # ------------------------------------------------------------------ waiting

    def _wait(self, cause: str, reason: str, until: datetime | None) -> None:
        s = self.s
        timers = [t for t in s.timers if t.kind == _WAIT_TIMER]
        if until is not None and not any(t.due == until for t in timers):
            s.cancel_timers(_WAIT_TIMER)
            s.set_timer(_WAIT_TIMER, until)
        elif until is None and timers:
            s.cancel_timers(_WAIT_TIMER)
        before = s.data.get("ctl_waiting") or {}
        s.set_data(ctl_waiting={"cause": cause, "reason": reason, "until": iso(until)})
        if before.get("cause") != cause:
            self._announce(reason)

    def _clear_wait(self) -> None:
        if self.s.data.get("ctl_waiting"):
            self.s.set_data(ctl_waiting=None)
        self.s.cancel_timers(_WAIT_TIMER)

    def _announce(self, reason: str) -> None:
        s = self.s
        s.emit(
            "maintenance_session",
            {
                "service": s.service,
                "session_id": s.id,
                "state": s.row.state,
                "percent_done": s.row.percent_done,
                "reason": reason,
            },
        )

    # ------------------------------------------------------------------ pause

    def pause(self, reason: str) -> None:
        s = self.s
        s.set_data(paused=True, pause_reason=reason)
        self._drop_gates()
        s.cancel_timers(_WAIT_TIMER)
        s.set_data(ctl_waiting={"cause": "paused", "reason": f"paused: {reason}", "until": None})
        self._announce(f"paused: {reason}")

    def resume(self) -> None:
        s = self.s
        s.set_data(paused=False, pause_reason=None, ctl_waiting=None)
        self._announce("resumed")

    # ------------------------------------------------------------------ stuck work

    def stuck(self, op: OperationRow) -> bool:
        """Apply the escalation policy to an operation past its deadline.
        True if handled here; False: the workflow's own handling applies."""
        s = self.s
        kind = STUCK_KIND_OF_OPERATION.get(op.kind)
        if kind is None:
            return False
        policy = self.controls.policy(kind)
        host = op.host or op.params.get("source") or op.params.get("host")
        what = describe_stuck(kind, op.instance_id, op.params, host)
        why = f"{what} is stuck: {op.detail}"
        entries = [e for e in s.data.get("ctl_stuck") or [] if e["key"] != op.key]
        entries.append(
            {
                "key": op.key,
                "kind": kind,
                "host": host,
                "instance_id": op.instance_id,
                "detail": why,
                "since": iso(op.started_at or op.created_at),
                "policy": policy or "default",
            }
        )
        s.set_data(ctl_stuck=entries)
        if policy is None:
            return False
        if policy == "wait_and_notify":
            period = self.controls.gate_timeout if kind == "gate" else s.request.timeout(kind)
            s.reopen_op(op, period)
            self._announce(f"{why}; still waiting")
            return True
        if policy == "fail":
            self.w.fail(why)
            return True
        row = s.hosts.get(str(host))
        if row is None:
            return False
        self.skip_host(row, why, op)
        return True

    def unstuck(self, op: OperationRow) -> None:
        entries = self.s.data.get("ctl_stuck") or []
        if any(e["key"] == op.key for e in entries):
            self.s.set_data(ctl_stuck=[e for e in entries if e["key"] != op.key])

    def skip_host(self, host: HostRow, why: str, stuck_op: OperationRow | None = None) -> None:
        """Leave ``host`` as it is (disabled if it is), mark it SKIPPED and go on."""
        s = self.s
        involved = [
            op
            for op in s.open_ops()
            if host.name in (op.host, op.params.get("source"), op.params.get("host"))
        ]
        for op in [*involved, *([stuck_op] if stuck_op is not None else [])]:
            if op.status in ("pending", "running"):
                s.abandon_op(op, f"host {host.name} skipped: {why}")
            inst = s.instances.get(op.instance_id or "")
            if inst is not None and inst.state == InstanceState.IN_ACTION:
                s.set_instance_state(inst, InstanceState.FAILED)
                inst.target = None
        for inst in s.instances_on(host.name):
            if inst.state in (InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN):
                s.set_instance_state(inst, InstanceState.PENDING)
            s.cancel_timers("retry_move", instance_id=inst.instance_id)
        s.set_host_state(host, HostState.SKIPPED, reason=f"skipped: {why}")
        s.set_data(ctl_skipped=sorted({*(s.data.get("ctl_skipped") or []), host.name}))
        if (s.data.get("ctl_gate") or {}).get("host") == host.name:
            s.set_data(ctl_gate=None)
        self._announce(f"skipped host {host.name}: {why}")
