"""Host set changes inside a session: hosts that appear, disappear, are added
on purpose (``add_hosts``) or retired (``decommission_hosts``).

:class:`HostLifecycle` is part of every :class:`~fenix_core.workflows.base.Workflow`
(``workflow.lifecycle``). It keeps the session's host rows in line with the
stored inventory (:mod:`fenix_core.inventory`):

* a host that appeared in the cloud becomes an ``ADDED`` row, a migration
  target where instances stay;
* a host that disappeared becomes ``REMOVED`` with a reason: the operations
  on it, from it or to it are abandoned, the projects asked only about its
  instances stop being awaited, and its instances are looked up (``locate``)
  and followed to where the cloud reports them now, or marked gone;
* hosts named in ``add_hosts`` wait (``ADDING``) until the cloud lists them,
  are enabled if needed, announced (``HOST_ADDED``) and become ``ADDED``;
* a retired host ends its maintenance ``DECOMMISSIONED``: left disabled and
  announced ``HOST_REMOVED``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import inventory
from ..errors import InvalidInput
from ..model import Host, Instance, SessionRequest
from ..planner import capacity_shortfall
from ..states import HostState, InstanceState, SessionState
from ..store.schema import HostRow, InstanceRow, InventoryHostRow, OperationRow

if TYPE_CHECKING:
    from .base import Workflow

__all__ = ["TARGET_ONLY", "HostLifecycle", "capacity_shortfall", "check_request"]

#: Host states of rows that only receive instances (never maintained here).
TARGET_ONLY = frozenset({HostState.OUT_OF_SCOPE, HostState.ADDED})
_ASKED = (SessionState.PREPARE_MAINTENANCE.value, SessionState.PLANNED_MAINTENANCE.value)
_GONE_OR_DONE = (HostState.ADDING, HostState.REMOVED, HostState.DECOMMISSIONED)


def check_request(
    request: SessionRequest, retiring: Iterable[str], listed: Mapping[str, Host]
) -> list[str]:
    """Validate ``add_hosts`` / the retired hosts against the cloud; return the scope.

    Raises InvalidInput naming the field.
    """
    retired = set(retiring)
    adds = set(request.add_hosts)
    field = "decommission_hosts" if request.decommission_hosts else "hosts"
    for name in request.add_hosts:
        if name in request.hosts or name in retired:
            raise InvalidInput("add_hosts", f"host {name!r} is also to be maintained or retired")
        found = listed.get(name)
        if found is not None and found.type != "compute":
            raise InvalidInput("add_hosts", f"host {name!r} is a {found.type}, not a compute host")
    scope = list(request.hosts) if request.hosts else [n for n in listed if n not in adds]
    outside = sorted(retired - set(scope))
    if outside:
        raise InvalidInput(field, "to be retired but not among the hosts: " + ", ".join(outside))
    if retired and retired >= {n for n, h in listed.items() if h.type == "compute"}:
        raise InvalidInput(field, "retiring every compute host leaves nowhere for the instances")
    return scope


class HostLifecycle:
    """Host set changes for one session's workflow."""

    def __init__(self, workflow: Workflow) -> None:
        self.w = workflow
        self.s = workflow.s
        self.retiring = frozenset(type(workflow).retiring(self.s.request))
        # When (the step's time) the cloud's hosts were last listed; in memory
        # only: after a restart, a decision that needs a fresh listing lists again.
        self._listed_at: datetime | None = None

    def retires(self, host: HostRow) -> bool:
        return host.name in self.retiring

    # ------------------------------------------------------------------ listings

    def listed(self, data: Sequence[Mapping[str, Any]]) -> None:
        """An operation listed the cloud's hosts: store the changes, follow them."""
        s = self.s
        self._listed_at = s.now
        hosts = [inventory.host_from_dict(d) for d in data]
        adding = {h.name for h in s.hosts_in(HostState.ADDING)}
        pending = inventory.pending_adds(s.orm, besides=s.id) | adding
        s.new_host_changes += inventory.sync(
            s.orm, hosts, now=s.now, session_id=s.id, pending=pending
        )
        if s.final:
            return
        self.reconcile()
        by_name = {h.name: h for h in hosts}
        for host in s.hosts_in(HostState.ADDING):
            found = by_name.get(host.name)
            if found is not None:
                self._bring_in(host, found)

    def reconcile(self, rows: Mapping[str, InventoryHostRow] | None = None) -> None:
        """Bring the session's hosts in line with the stored inventory."""
        s = self.s
        if s.final:
            return
        rows = inventory.load(s.orm) if rows is None else rows
        for host in list(s.hosts.values()):
            row = rows.get(host.name)
            if host.state in _GONE_OR_DONE or row is None or row.status == inventory.PRESENT:
                continue
            if row.status == inventory.DECOMMISSIONED:
                if row.session_id == s.id:
                    continue
                why = f"decommissioned by session {row.session_id}"
            else:
                why = f"removed from the cloud (noticed {row.changed_at.isoformat()})"
            self.host_removed(host, why)
        for name, row in rows.items():
            if row.status == inventory.PRESENT and name not in s.hosts:
                self._appeared(row)

    # ------------------------------------------------------------------ hosts that come

    def _appeared(self, row: InventoryHostRow) -> None:
        s = self.s
        host = s.add_host(row.name, row.type, row.vcpus, row.enabled, HostState.ADDED)
        host.reason = "appeared in the cloud during the session"
        if host.type == "compute":
            s.start_op("inventory", params={"hosts": [host.name]})  # what runs there

    def hosts_ready(self) -> bool:
        """True once the host set was listed again before the first decision
        (the session may have waited for hours, and a ``pre`` action may have
        changed it) and every host of ``add_hosts`` is in service."""
        s = self.s
        if any(s.open_ops(kind="list_hosts")):
            return False
        adding = s.hosts_in(HostState.ADDING)
        if any(any(s.open_ops(host=h.name)) for h in adding):
            return False
        if adding or not s.data.get("hosts_listed"):
            s.set_data(hosts_listed=True)
            s.start_op(
                "list_hosts",
                params={"wait_for": [h.name for h in adding]},
                timeout=s.request.timeout("host_added"),
            )
            return False
        return True

    def listed_now(self) -> bool:
        """True if the cloud's hosts were listed in this step. Otherwise list
        them (the session steps again when the listing ends) and return False:
        asking projects to SCALE_IN is worth a listing first, a host may have
        been added since the last one."""
        s = self.s
        if self._listed_at == s.now:
            return True
        if not self.relisting():
            s.start_op("list_hosts", params={"wait_for": [], "before": "SCALE_IN"})
        return False

    def relisting(self) -> bool:
        """Whether a listing of the cloud's hosts is under way."""
        return any(self.s.open_ops(kind="list_hosts"))

    def shortfall(self) -> str | None:
        """Why the hosts that stay cannot hold every instance (retired hosts only)."""
        s = self.s
        if not self.retiring:
            return None
        kept = [
            Host(h.name, h.type, h.vcpus, h.enabled)
            for h in s.hosts.values()
            if h.state not in (HostState.REMOVED, HostState.ADDING)
        ]
        present = [
            Instance(i.instance_id, i.project_id, i.host, i.vcpus)
            for i in s.instances.values()
            if i.state != InstanceState.GONE
        ]
        return capacity_shortfall(kept, present, self.retiring, s.constraints())

    def _bring_in(self, host: HostRow, found: Host) -> None:
        s = self.s
        host.type, host.vcpus = found.type, found.vcpus
        if found.enabled:
            self._added(host)
        elif not any(s.open_ops(host=host.name)):
            s.start_op("enable_host", host=host.name)

    def _added(self, host: HostRow) -> None:
        s = self.s
        host.enabled = True
        s.set_host_state(host, HostState.ADDED, reason="added by this session (add_hosts)")
        s.new_host_changes += inventory.admit(
            s.orm, Host(host.name, host.type, host.vcpus, True), now=s.now, session_id=s.id
        )
        if host.type == "compute":
            s.start_op("inventory", params={"hosts": [host.name]})

    def adding_ended(self, host: HostRow, op: OperationRow) -> None:
        """An operation on a host of ``add_hosts`` ended (enabling it)."""
        if self.s.final:
            return
        if op.status == "done":
            self._added(host)
        else:
            self.w.fail(
                f"{op.kind.replace('_', ' ')} of {host.name} (add_hosts) failed: {op.detail}"
            )

    def list_ended(self, op: OperationRow) -> None:
        s = self.s
        if op.params.get("before"):
            # A listing before a decision: if it failed, decide with what is known.
            self._listed_at = s.now
            return
        if op.status != "done" and not s.final:
            self.w.fail(f"hosts named in add_hosts did not appear: {op.detail}")

    # ------------------------------------------------------------------ hosts that go

    def decommission(self, host: HostRow) -> None:
        """The retired host's work is done: it stays disabled, for good."""
        s = self.s
        host.disabled_by_session = False  # never enabled again, also not on failure
        host.enabled = False
        s.set_host_state(host, HostState.DECOMMISSIONED, reason="decommissioned: left disabled")
        host.finished_at = s.now
        self.w.host_finished(host)  # finished work: pacing, settle, progress, ETA
        s.new_host_changes += inventory.retire(
            s.orm, host.name, host.type, now=s.now, session_id=s.id
        )

    def host_removed(self, host: HostRow, why: str) -> None:
        """Drop the host's pending work and follow its instances."""
        s = self.s
        name = host.name
        follow: dict[str, InstanceRow] = {}
        for op in list(s.open_ops()):
            if name not in (op.host, op.params.get("source"), op.params.get("target")):
                continue
            s.abandon_op(op, f"host {name} {why}")
            inst = s.instances.get(op.instance_id or "")
            if inst is not None:
                follow[inst.instance_id] = inst
        for inst in s.instances_on(name):
            follow[inst.instance_id] = inst
        for inst in follow.values():
            s.cancel_timers("retry_move", instance_id=inst.instance_id)
            if inst.state == InstanceState.IN_ACTION:
                s.set_instance_state(inst, InstanceState.ACTION_CHOSEN)
                inst.target = None
            if inst.host == name and inst.state in (
                InstanceState.ACTION_REQUESTED,
                InstanceState.ACTION_CHOSEN,
            ):
                s.set_instance_state(inst, InstanceState.PENDING)
        host.disabled_by_session = False  # a host that is gone cannot be enabled
        host.enabled = False
        host.stage = 0
        in_flight = self.w.controls.in_flight(host)
        s.set_host_state(host, HostState.REMOVED, reason=why)
        if host.finished_at is None or in_flight:
            host.finished_at = s.now  # a host maintained before it went keeps its end
        if in_flight:
            # Its work ended with it: no longer in maintenance for pacing, and
            # the settle delay runs from here (its span is not a duration).
            self.w.host_finished(host)
        self._stop_asking()
        if follow:
            s.start_op("locate", params={"instance_ids": sorted(follow), "host": name})

    def _stop_asking(self) -> None:
        """Projects asked how to move instances that are no longer theirs to move."""
        s = self.s
        asked = {
            i.project_id for i in s.instances.values() if i.state == InstanceState.ACTION_REQUESTED
        }
        for project in self.w.awaiting():
            if project.state in _ASKED and project.project_id not in asked:
                project.awaiting = False
                if not self.w.awaiting(project.state):
                    s.cancel_timers("reply_deadline", state=project.state)

    def lost_host_of(self, op: OperationRow) -> bool:
        """Whether a host the operation was on, from or to is gone from the cloud."""
        hosts = self.s.hosts
        for name in (op.host, op.params.get("source"), op.params.get("target")):
            host = hosts.get(str(name)) if name else None
            if host is not None and host.state == HostState.REMOVED:
                return True
        return False

    def lost_move(self, inst: InstanceRow, op: OperationRow) -> bool:
        """A move or watch ended from or to a host that is gone: the instance
        is looked up instead (True), rather than counted as moved or failed."""
        s = self.s
        ends = [s.hosts.get(str(op.params.get(k) or "")) for k in ("source", "target")]
        gone = [h.name for h in ends if h is not None and h.state == HostState.REMOVED]
        if not gone:
            return False
        if inst.state == InstanceState.IN_ACTION:
            s.set_instance_state(inst, InstanceState.ACTION_CHOSEN)
            inst.target = None
        if not s.final:
            s.start_op("locate", params={"instance_ids": [inst.instance_id], "host": gone[0]})
        return True

    def located(self, op: OperationRow) -> None:
        """Follow instances of a removed host to where the cloud reports them."""
        s = self.s
        if op.status != "done" or s.final:
            return  # left where they were: a host that is gone is never worked on
        lost_host = op.params.get("host")
        for instance_id, where in dict(op.result.get("where", {})).items():
            inst = s.instances.get(instance_id)
            if inst is None or inst.state in (InstanceState.GONE, InstanceState.IN_ACTION):
                continue
            if where is None or where == lost_host:
                s.set_instance_state(inst, InstanceState.GONE)  # lost with its host
                continue
            if where == inst.host:
                continue
            was_out = inst.state == InstanceState.OUT_OF_SCOPE
            s.place_instance(inst, where)
            dest = s.hosts.get(where)
            if not (was_out and (dest is None or dest.state in TARGET_ONLY)):
                s.set_instance_state(inst, self.w.state_on(where))
