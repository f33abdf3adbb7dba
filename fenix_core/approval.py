"""Approve, then execute: what a session's plan was made from, and what changed.

A session created with ``approval: "required"`` stores, next to its plan, the
facts the plan was computed from (:func:`facts`): the hosts of its scope, the
capacity and state of every host, where each instance runs, the constraints in
force for those instances, and which projects have an application manager. At
approval the engine reads the cloud again; :func:`changes` says in words what
differs, and any difference means the plan is re-made before anything runs.
:func:`plan_id` names one plan (the facts and the request it was made for), so
an admin can approve "what I saw" and be refused a plan that was replaced.

Pure: plain data in, plain data out, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from .constraints import CloudConstraints, ConstraintSet, GroupConstraints, InstanceConstraints
from .model import Host, Instance, SessionRequest

__all__ = ["Previewer", "changes", "facts", "plan_id"]


class Previewer(Protocol):
    """What makes the preview of a session awaiting approval:
    :func:`fenix_core.sim.plan_preview.preview` (the default), or an engine's own
    (``Engine(previewer=...)``). Returns JSON-ready data; ``{"unavailable":
    why}`` when it cannot preview the request."""

    def __call__(
        self,
        request: SessionRequest,
        *,
        scope: Sequence[str],
        hosts: Sequence[Host],
        instances: Sequence[Instance],
        cloud: CloudConstraints | None,
        groups: Iterable[GroupConstraints],
        instance_constraints: Iterable[InstanceConstraints],
        now: datetime,
    ) -> dict[str, Any]: ...


#: How many names a change lists before it says "and N more".
_SHOWN = 5


def facts(
    *,
    scope: Sequence[str],
    hosts: Iterable[Host],
    instances: Iterable[Instance],
    constraints: ConstraintSet,
    managed: Iterable[str],
) -> dict[str, Any]:
    """The facts a plan depends on, as JSON-ready data.

    ``scope`` are the hosts the session maintains; ``hosts`` every host the
    cloud lists (all are migration targets); ``instances`` those on listed
    hosts; ``constraints`` the constraints in force (stored and the cloud's);
    ``managed`` the projects with an application manager.
    """
    listed = {h.name: h for h in hosts}
    placed = sorted((i for i in instances if i.host in listed), key=lambda i: i.instance_id)
    groups: dict[str, dict[str, Any]] = {}
    members: dict[str, str] = {}
    own: dict[str, dict[str, Any]] = {}
    for inst in placed:
        key = constraints.group_key_of(inst.instance_id, inst.project_id)
        members[inst.instance_id] = key
        groups.setdefault(key, constraints.group_by_key(key).to_dict())
        found = constraints.instance(inst.instance_id, inst.project_id)
        if found is not None:
            own[inst.instance_id] = found.to_dict()
    projects = {i.project_id for i in placed}
    return {
        "scope": list(scope),
        "hosts": {
            name: {"type": h.type, "vcpus": h.vcpus, "enabled": h.enabled}
            for name, h in sorted(listed.items())
        },
        "instances": {
            i.instance_id: {
                "project": i.project_id,
                "host": i.host,
                "vcpus": i.vcpus,
                "live_migratable": i.live_migratable,
            }
            for i in placed
        },
        "groups": dict(sorted(groups.items())),
        "members": members,
        "instance_constraints": own,
        "placement": sorted(
            (r.to_dict() for r in constraints.cloud.placement), key=lambda r: _canonical(r)
        ),
        "managed": sorted(set(managed) & projects),
    }


def plan_id(facts: Mapping[str, Any], request: Mapping[str, Any]) -> str:
    """A short name of the plan made from ``facts`` for ``request``: equal
    facts and request give the same id, any difference another."""
    digest = hashlib.sha256(_canonical({"facts": facts, "request": request}).encode())
    return digest.hexdigest()[:16]


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`facts`, one sentence per kind of change
    (empty when the plan still fits)."""
    found: list[str] = []
    _host_changes(found, old, new)
    _instance_changes(found, old, new)
    _constraint_changes(found, old, new)
    old_managed, new_managed = set(old["managed"]), set(new["managed"])
    _names(found, "projects now with a manager", sorted(new_managed - old_managed))
    _names(found, "projects no longer with a manager", sorted(old_managed - new_managed))
    return found


def _host_changes(found: list[str], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    old_scope, new_scope = list(old["scope"]), list(new["scope"])
    old_hosts, new_hosts = old["hosts"], new["hosts"]
    gone = [h for h in old_scope if h not in new_hosts]
    _names(found, "hosts gone from the cloud", gone)
    _names(found, "hosts left the scope", [h for h in old_scope if h not in new_scope + gone])
    _names(found, "hosts joined the scope", [h for h in new_scope if h not in old_scope])
    if set(old_scope) == set(new_scope) and old_scope != new_scope:
        found.append("the order of the hosts in the scope changed")
    _names(
        found,
        "hosts new in the cloud",
        [h for h in new_hosts if h not in old_hosts and h not in new_scope],
    )
    _names(
        found,
        "target hosts gone from the cloud",
        [h for h in old_hosts if h not in new_hosts and h not in old_scope],
    )
    both = [h for h in old_hosts if h in new_hosts]
    _names(found, "capacity changed", _moved(old_hosts, new_hosts, both, "vcpus", " vcpus"))
    for now_enabled, what in (
        (False, "hosts disabled in the cloud"),
        (True, "hosts enabled in the cloud"),
    ):
        _names(
            found,
            what,
            [
                h
                for h in both
                if old_hosts[h]["enabled"] != new_hosts[h]["enabled"]
                and new_hosts[h]["enabled"] is now_enabled
            ],
        )


def _instance_changes(found: list[str], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    old_inst, new_inst = old["instances"], new["instances"]
    _names(found, "instances gone", [i for i in old_inst if i not in new_inst])
    _names(found, "instances new", [i for i in new_inst if i not in old_inst])
    both = [i for i in old_inst if i in new_inst]
    _names(found, "instances moved", _moved(old_inst, new_inst, both, "host"))
    _names(
        found,
        "instances changed size or migratability",
        [
            i
            for i in both
            if (old_inst[i]["vcpus"], old_inst[i]["live_migratable"])
            != (new_inst[i]["vcpus"], new_inst[i]["live_migratable"])
        ],
    )
    groups_old = {i: {"group": _group(g)} for i, g in old["members"].items()}
    groups_new = {i: {"group": _group(g)} for i, g in new["members"].items()}
    _names(found, "instances changed group", _moved(groups_old, groups_new, both, "group"))


def _constraint_changes(found: list[str], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    old_groups, new_groups = old["groups"], new["groups"]
    _names(
        found,
        "group constraints changed",
        [
            f"{_group(g)} ({_diff(old_groups[g], new_groups[g])})"
            for g in old_groups
            if g in new_groups and old_groups[g] != new_groups[g]
        ],
    )
    own_old, own_new = old["instance_constraints"], new["instance_constraints"]
    _names(
        found,
        "instance constraints changed",
        sorted(i for i in set(own_old) | set(own_new) if own_old.get(i) != own_new.get(i)),
    )
    if old["placement"] != new["placement"]:
        found.append("the cloud's placement rules (server groups) changed")


def _moved(
    old: Mapping[str, Mapping[str, Any]],
    new: Mapping[str, Mapping[str, Any]],
    names: Iterable[str],
    key: str,
    unit: str = "",
) -> list[str]:
    """``"name old -> new"`` for each of ``names`` whose ``key`` differs."""
    return [
        f"{name} {old[name][key]} -> {new[name][key]}{unit}"
        for name in names
        if old[name][key] != new[name][key]
    ]


def _names(found: list[str], what: str, items: Sequence[str]) -> None:
    if not items:
        return
    shown = ", ".join(items[:_SHOWN])
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    found.append(f"{what}: {shown}{more}")


def _group(key: str) -> str:
    """A group key as people read it: an API group ``["p1", "g"]`` is "g of p1"."""
    if key.startswith("["):
        project_id, group_id = json.loads(key)
        return f"{group_id} of {project_id}"
    return key


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
