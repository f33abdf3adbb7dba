"""What the cloud's listings change in a session's records, applied by the
engine before the workflow's ``on_operation``.

* ``Inventory(hosts)`` done: instances not known yet are added (a project
  scaled out or re-created one; their project joins the session), known
  ones found on another host are placed there, and known ones on the
  listed hosts that the cloud no longer reports are GONE.
* ``Locate(instance_ids)`` done: each instance found is placed where the
  cloud reports it (the workflow decides its state).
* ``ListHosts`` done (or work on a host failed: the engine lists the
  hosts then, so that a host that left is not taken for a failure): the
  listing goes into the inventory
  (:class:`~fenix_core.core.inventory.InventoryCache`, HOST_ADDED /
  HOST_REMOVED), a host of ``add_hosts`` gets the facts listed for it, and
  the session follows the inventory's changes:
* a host the inventory has as removed (or retired by another session)
  becomes REMOVED: its unfinished operations end FAILED (the workflow is
  told, as of any failed operation: its work there is over), it is no
  longer enabled or disabled by the session; the workflow looks for its
  instances (``Locate``). A host that appeared in the cloud joins the
  session ADDED (a target only), and the engine lists what runs on it.

A session follows only the hosts changed since the inventory generation it
last saw (:meth:`InventoryCache.changed_since`); a session loaded afresh
compares all of its hosts once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..contract import Inventory, OpKind, OpStatus
from ..inventory import DECOMMISSIONED, PRESENT
from ..model import Host
from ..states import HostState, InstanceState
from .context import StepContext
from .inventory import HostChangeRec, InventoryCache
from .working_set import HostRec, InstanceRec, OpRec, ProjectRec
from .ws_port import WorkingSetAdapter

__all__ = [
    "ENGINE_OWNED",
    "apply_inventory",
    "apply_located",
    "follow_inventory",
    "host_listing",
    "hosts_of",
]

#: Operation parameter marking an operation the engine submitted for itself
#: (its result is applied to the records; no workflow hook hears of it).
ENGINE_OWNED = "by_engine"
#: Host states of records that only receive instances (never maintained here).
_TARGET_ONLY = frozenset({HostState.OUT_OF_SCOPE.value, HostState.ADDED.value})
#: A host only receiving the session's instances: it follows the inventory's ``enabled``.
_TARGET = HostState.OUT_OF_SCOPE.value
#: Host states the inventory no longer changes in a session.
_SETTLED = frozenset(
    {HostState.ADDING.value, HostState.REMOVED.value, HostState.DECOMMISSIONED.value}
)
_UNFINISHED = frozenset({OpStatus.PENDING.value, OpStatus.RUNNING.value})


def _state_on(adapter: WorkingSetAdapter, host: str) -> InstanceState:
    """The state of an instance that arrived on ``host``: DONE where it can
    stay (maintained, a target, not part of the session), else PENDING."""
    rec = adapter.ws.hosts.get(host)
    if rec is None or rec.state == HostState.MAINTAINED.value or rec.state in _TARGET_ONLY:
        return InstanceState.DONE
    return InstanceState.PENDING


# --------------------------------------------------------------------------- instances


def apply_inventory(
    adapter: WorkingSetAdapter,
    found: Iterable[Mapping[str, Any]],
    scanned: Sequence[str],
    subscribed: Callable[[str], bool],
) -> None:
    """An ``Inventory`` of the hosts ``scanned`` listed ``found``."""
    ws = adapter.ws
    seen: set[str] = set()
    for data in found:
        instance_id = str(data["instance_id"])
        host = str(data["host"])
        seen.add(instance_id)
        rec = ws.instances.get(instance_id)
        if rec is None:
            if host not in ws.hosts:
                continue
            out_of_scope = ws.hosts[host].state in _TARGET_ONLY
            project_id = str(data["project_id"])
            if not out_of_scope and project_id not in ws.projects:
                ws.add_project(
                    ProjectRec(project_id, subscribed(project_id), None, False, None, None, False)
                )
            state = InstanceState.OUT_OF_SCOPE if out_of_scope else _state_on(adapter, host)
            ws.add_instance(
                InstanceRec(
                    instance_id, project_id, str(data.get("name", "")), host,
                    int(data.get("vcpus", 1)), bool(data.get("live_migratable", True)),
                    state.value, None, None, 0, 0, None, None, None, None, None,
                )
            )  # fmt: skip
            continue
        if rec.state == InstanceState.GONE.value:
            adapter.set_instance_state(instance_id, InstanceState.PENDING, None)
        if rec.host != host and rec.state != InstanceState.IN_ACTION.value:
            was_out = rec.state == InstanceState.OUT_OF_SCOPE.value
            _relocate(adapter, instance_id, host)
            dest = ws.hosts.get(host)
            stays_out = dest is None or dest.state in _TARGET_ONLY
            if not (was_out and stays_out):
                adapter.set_instance_state(instance_id, _state_on(adapter, host), None)
    index = ws.instance_index.by_host
    for host in scanned:
        for instance_id in sorted(index.get(host, ())):
            rec = ws.instances[instance_id]
            if instance_id not in seen and rec.state not in (
                InstanceState.GONE.value,
                InstanceState.IN_ACTION.value,
            ):
                adapter.vanish(instance_id)


def apply_located(adapter: WorkingSetAdapter, where: Mapping[str, str | None]) -> None:
    """A ``Locate`` ended: each instance found is placed where it is now."""
    ws = adapter.ws
    for instance_id, host in where.items():
        rec = ws.instances.get(instance_id)
        if host is None or rec is None or rec.host == host:
            continue
        if rec.state in (InstanceState.GONE.value, InstanceState.IN_ACTION.value):
            continue
        _relocate(adapter, instance_id, host)


def _relocate(adapter: WorkingSetAdapter, instance_id: str, host: str) -> None:
    """The cloud reports the instance on ``host`` (not a move of this session)."""
    adapter.ws.set_target(instance_id, None)
    adapter.ws.place(instance_id, host)
    adapter.forget_view(instance_id)


# --------------------------------------------------------------------------- hosts


def host_listing(
    adapter: WorkingSetAdapter,
    ctx: StepContext,
    cache: InventoryCache,
    listed: Sequence[Host],
) -> list[HostChangeRec]:
    """The cloud listed its hosts (``ListHosts``, or the engine after work
    on a host failed): store the listing in the inventory, fill in the facts
    of hosts being added, follow the changes. Returns the host changes
    committed (to be announced)."""
    ws = adapter.ws
    adding = sorted(ws.host_index.in_state(HostState.ADDING.value))
    changes = cache.sync(listed, now=ctx.now, session_id=ws.session.id, adding=adding)
    by_name = {h.name: h for h in listed}
    for name in sorted(adding):
        found = by_name.get(name)
        if found is not None:
            adapter.set_host_facts(name, found.vcpus, found.enabled)
    follow_inventory(adapter, ctx, cache)
    return changes


def follow_inventory(adapter: WorkingSetAdapter, ctx: StepContext, cache: InventoryCache) -> bool:
    """Bring the session's hosts in line with the inventory's changes since
    the generation it saw (all of them after a load). True if any host of
    the session changed."""
    seen = adapter.inventory_seen
    generation = cache.generation
    names = cache.changed_since(seen) if seen >= 0 else None
    adapter.inventory_seen = generation
    if names is not None and not names:
        return False
    if adapter.final:
        return False
    ws = adapter.ws
    known = cache.hosts()
    candidates = sorted(names) if names is not None else sorted(set(ws.hosts) | set(known))
    changed = False
    for name in candidates:
        row = known.get(name)
        rec = ws.hosts.get(name)
        if rec is not None:
            if (
                rec.state == _TARGET
                and row is not None
                and row.status == PRESENT
                and row.host.enabled != rec.enabled
            ):
                # Another session disabled it (to maintain it) or enabled it again.
                adapter.follow_enabled(name, row.host.enabled)
                changed = True
                continue
            if rec.state in _SETTLED or row is None or row.status == PRESENT:
                continue
            if row.status == DECOMMISSIONED:
                if row.session_id == ws.session.id:
                    continue
                why = f"decommissioned by session {row.session_id}"
            else:
                why = f"removed from the cloud (noticed {row.changed_at.isoformat()})"
            host_removed(adapter, ctx, name, why)
            changed = True
        elif row is not None and row.status == PRESENT:
            _appeared(adapter, row.host)
            changed = True
    return changed


def host_removed(adapter: WorkingSetAdapter, ctx: StepContext, name: str, why: str) -> None:
    """``name`` left the cloud: its unfinished operations fail (the workflow
    hears of each), it is REMOVED and no longer the session's to enable."""
    ws = adapter.ws
    now = ctx.now
    detail = f"host {name} {why}"
    for key, op in list(ws.ops.items()):
        if op.handled or op.status not in _UNFINISHED:
            continue
        params = op.params or {}
        on_host = name in (op.host, params.get("source"), params.get("target"))
        moving = op.instance_id is not None and (
            (inst := ws.instances.get(op.instance_id)) is not None and inst.host == name
        )
        if on_host or moving:
            ws.update_op(key, status=OpStatus.FAILED.value, detail=detail, next_poll=None,
                         finished_at=now)  # fmt: skip
    rec = ws.hosts[name]
    ws.update_host(name, enabled=False, disabled_by_session=False, stage=0)
    ctx.set_host_state(name, HostState.REMOVED, reason=why)
    if rec.finished_at is None:
        adapter.set_host_times(name, started_at=rec.started_at, finished_at=now)
    adapter.forget_host_view(name)


def hosts_of(adapter: WorkingSetAdapter, rec: OpRec) -> list[str]:
    """The session's hosts an operation worked on, from or to."""
    ws = adapter.ws
    params = rec.params or {}
    names = [rec.host, params.get("source"), params.get("target")]
    if rec.instance_id is not None and (inst := ws.instances.get(rec.instance_id)) is not None:
        names.append(inst.host)
    return [n for n in names if isinstance(n, str) and n in ws.hosts]


def _appeared(adapter: WorkingSetAdapter, host: Host) -> None:
    ws = adapter.ws
    position = max((h.position for h in ws.hosts.values()), default=-1) + 1
    ws.add_host(
        HostRec(
            host.name, host.type, host.vcpus, HostState.ADDED.value, position, 0, host.enabled,
            False, 0, None, None, "appeared in the cloud during the session",
        )
    )  # fmt: skip
    if host.type == "compute":  # what runs there (the engine applies it)
        key = f"{ws.session.id}:{adapter.next_op_number()}"
        adapter.add_op(key, OpKind.INVENTORY, Inventory((host.name,)), {})
        op = ws.ops[key]
        ws.update_op(key, params={**op.params, ENGINE_OWNED: True})
