"""A cloud's inventory and constraints as a scenario: plan from the live cloud.

:func:`read_cloud` asks a cloud driver what it has, through its read hooks
only (``list_hosts``, ``list_instances`` and, when the driver is a
:class:`~fenix_core.hookspecs.ConstraintSource`, ``cloud_constraints``):
nothing is disabled, moved or written. :func:`scenario_data` turns what it read
(plus, optionally, the constraints stored in a fenix database) into the plain
data of a scenario file, and :func:`scenario_from_cloud` validates that into
a :class:`~fenix_core.sim.scenario.Scenario`, which :func:`fenix_core.sim.simulation.plan`
previews. Both are pure. ``fenix plan --cloud`` and ``fenix export`` are built
on them; the exported YAML loads back into the same scenario.

What the scenario keeps of the cloud:

* hosts in the driver's order, with their type, vcpus, whether they are
  enabled, and their topology labels (``Host.labels``:
  OpenStack's ``zone`` and ``aggregate``, every label of a Kubernetes node,
  ``topology.kubernetes.io/zone`` among them), which the session's topology
  caps name;
* instances in the driver's order (those on hosts the cloud did not list are
  left out), with project, host, vcpus and whether they can live-migrate;
  instances on controller hosts too (a Kubernetes control-plane node's
  pods), which a session drains first, one controller at a time;
* each instance's group as the engine would resolve it
  (:class:`~fenix_core.constraints.ConstraintSet`): constraints stored through
  the API win over the cloud's (server groups, PodDisruptionBudgets, hostname
  anti-affinity), an instance in no group stays in its project's implicit
  group. Scenario group ids are one namespace, the engine's are per project:
  a group id that several projects use becomes ``<id>@<project>`` for all but
  the first. A cloud group whose members belong to several projects (a
  budget selecting pods of two projects) gets one copy per project,
  ``<id>@<project>``, each with the group's rules;
* an instance's own stored constraints (migration type, lead time ...);
* the cloud's placement rules (server groups of every policy) with their
  members among the listed instances, which the simulated scheduler keeps
  as Nova does (:class:`~fenix_core.testing.PlacedCloud`);
* for a cloud whose scheduler places a moved instance itself (a
  :class:`SchedulingSource`: Kubernetes, where an evicted pod's replacement
  goes where kube-scheduler puts it), what that scheduler decides on
  (:class:`~fenix_core.kube_scheduling.ClusterScheduling`), so that the
  simulation places each replacement as it would
  (:class:`~fenix_core.testing.KubeScheduledCloud`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import attrs

from ..constraints import (
    CloudConstraints,
    ConstraintSet,
    GroupConstraints,
    InstanceConstraints,
    implicit_group_id,
)
from ..kube_scheduling import ClusterScheduling
from ..model import Host, Instance
from ..plugins.hookspecs import CloudDriver, ConstraintSource
from .scenario import Scenario, parse_scenario

__all__ = [
    "DEFAULT_ACTIONS",
    "CloudSnapshot",
    "SchedulingSource",
    "read_cloud",
    "scenario_data",
    "scenario_from_cloud",
]

#: The maintenance a snapshot's session runs on each host when none is given:
#: one action of 10 minutes (edit an exported scenario for the real figures).
DEFAULT_ACTIONS: tuple[Mapping[str, Any], ...] = (
    {"plugin": "maintenance", "type": "host", "seconds": 600},
)


@runtime_checkable
class SchedulingSource(Protocol):
    """A driver whose cloud's scheduler, not the workflow, decides where a
    moved instance goes (the Kubernetes driver: an evicted pod's replacement
    lands where kube-scheduler puts it): what that scheduler decides on, read
    only."""

    def scheduling_inputs(self, instances: Sequence[Instance]) -> ClusterScheduling: ...


@attrs.frozen
class CloudSnapshot:
    """What a cloud driver listed at one moment."""

    hosts: tuple[Host, ...]
    instances: tuple[Instance, ...]
    constraints: CloudConstraints = attrs.field(factory=CloudConstraints)
    #: what the cloud's own scheduler decides on (None: the workflow's target is taken)
    scheduling: ClusterScheduling | None = None


def read_cloud(driver: CloudDriver) -> CloudSnapshot:
    """List the hosts, instances and the cloud's own constraints of ``driver``.

    Only read hooks are called: ``list_hosts()``, ``list_instances(None)``
    and, for a :class:`~fenix_core.hookspecs.ConstraintSource`,
    ``cloud_constraints(instances)``, for a :class:`SchedulingSource`
    ``scheduling_inputs(instances)``. Instances on hosts that were not
    listed are left out.
    """
    hosts = tuple(driver.list_hosts())
    names = {h.name for h in hosts}
    instances = tuple(i for i in driver.list_instances(None) if i.host in names)
    constraints = (
        driver.cloud_constraints(instances)
        if isinstance(driver, ConstraintSource)
        else CloudConstraints()
    )
    scheduling = (
        driver.scheduling_inputs(instances) if isinstance(driver, SchedulingSource) else None
    )
    return CloudSnapshot(hosts, instances, constraints, scheduling)


def scenario_from_cloud(
    snapshot: CloudSnapshot,
    stored_groups: Iterable[GroupConstraints] = (),
    stored_instances: Iterable[InstanceConstraints] = (),
    **options: Any,
) -> Scenario:
    """The :class:`~fenix_core.sim.scenario.Scenario` of a snapshot (pure).

    ``stored_groups`` / ``stored_instances`` are constraints set through the
    engine's API (``Engine.list_group_constraints()`` /
    ``list_instance_constraints()`` of a fenix database); ``options`` are
    those of :func:`scenario_data`. Raises
    :class:`~fenix_core.errors.InvalidInput` when the options make a
    scenario that does not validate (an unknown workflow, a bad session field).
    """
    return parse_scenario(scenario_data(snapshot, stored_groups, stored_instances, **options))


def scenario_data(
    snapshot: CloudSnapshot,
    stored_groups: Iterable[GroupConstraints] = (),
    stored_instances: Iterable[InstanceConstraints] = (),
    *,
    name: str = "cloud snapshot",
    start: datetime | None = None,
    session: Mapping[str, Any] | None = None,
    actions: Sequence[Mapping[str, Any]] = DEFAULT_ACTIONS,
    migration_seconds: float | None = None,
    live_migration_seconds: float | None = None,
) -> dict[str, Any]:
    """The snapshot as scenario-file data (what ``fenix export`` writes as YAML).

    ``session`` is the scenario's ``session`` section (the session request's
    fields, e.g. ``{"workflow": "constrained", "max_parallel_hosts": 4}``);
    ``actions`` its ``actions`` section (default :data:`DEFAULT_ACTIONS`);
    ``start`` when the simulation starts (default: the scenario default);
    the migration times default to the scenario defaults. Pure.
    """
    groups, members, own = _groups(snapshot, stored_groups, stored_instances)
    data: dict[str, Any] = {
        "name": name,
        "hosts": [_host(h) for h in snapshot.hosts],
        "instances": [_instance(i, members.get(i.instance_id), own) for i in snapshot.instances],
        "groups": groups,
        "placement": _placement(snapshot),
        "actions": [dict(a) for a in actions],
        "session": dict(session or {}),
    }
    if snapshot.scheduling is not None:
        data["scheduler"] = _scheduler(snapshot)
    if start is not None:
        data["start"] = start.isoformat()
    migrations = {
        k: v
        for k, v in (("seconds", migration_seconds), ("live_seconds", live_migration_seconds))
        if v is not None
    }
    if migrations:
        data["migrations"] = migrations
    return data


def _placement(snapshot: CloudSnapshot) -> list[dict[str, Any]]:
    listed = {i.instance_id for i in snapshot.instances}
    rules = []
    for rule in snapshot.constraints.placement:
        members = [m for m in rule.members if m in listed]
        if members:
            rules.append({**rule.to_dict(), "members": members})
    return rules


def _scheduler(snapshot: CloudSnapshot) -> dict[str, Any]:
    """The scheduler's inputs for the listed hosts and instances only."""
    assert snapshot.scheduling is not None
    hosts = {h.name for h in snapshot.hosts}
    listed = {i.instance_id for i in snapshot.instances}
    kept = ClusterScheduling(
        {n: v for n, v in snapshot.scheduling.nodes.items() if n in hosts},
        {p: v for p, v in snapshot.scheduling.pods.items() if p in listed},
    )
    return kept.to_dict()


def _host(host: Host) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": host.name, "type": host.type, "vcpus": host.vcpus}
    if not host.enabled:
        entry["enabled"] = False
    if host.labels:
        entry["labels"] = {k: v if isinstance(v, str) else list(v) for k, v in host.labels.items()}
    return entry


def _instance(
    inst: Instance, group: str | None, own: Mapping[tuple[str, str], InstanceConstraints]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": inst.instance_id,
        "project": inst.project_id,
        "host": inst.host,
        "vcpus": inst.vcpus,
    }
    if not inst.live_migratable:
        entry["live_migratable"] = False
    if group is not None:
        entry["group"] = group
    constraints = own.get((inst.project_id, inst.instance_id))
    if constraints is not None:
        rules = constraints.to_dict()
        for key in ("instance_id", "project_id", "group_id"):
            rules.pop(key)
        entry["constraints"] = {k: v for k, v in rules.items() if v is not None}
    return entry


def _groups(
    snapshot: CloudSnapshot,
    stored_groups: Iterable[GroupConstraints],
    stored_instances: Iterable[InstanceConstraints],
) -> tuple[list[dict[str, Any]], dict[str, str], dict[tuple[str, str], InstanceConstraints]]:
    """The scenario's groups, each instance's scenario group id, and the
    instances' own stored constraints keyed by (project, instance)."""
    resolved = ConstraintSet.of(stored_groups, stored_instances, cloud=snapshot.constraints)
    implicit_prefix = implicit_group_id("")
    # (engine group key, instance's project) -> scenario group id
    ids: dict[tuple[str, str], str] = {}
    used: set[str] = set()
    groups: list[dict[str, Any]] = []
    members: dict[str, str] = {}
    for inst in snapshot.instances:
        key = resolved.group_key_of(inst.instance_id, inst.project_id)
        if key.startswith(implicit_prefix):
            continue
        scenario_id = ids.get((key, inst.project_id))
        if scenario_id is None:
            rules = resolved.group_by_key(key)
            scenario_id = rules.group_id
            if scenario_id in used or rules.project_id != inst.project_id:
                scenario_id = f"{rules.group_id}@{inst.project_id}"
            taken = scenario_id
            while scenario_id in used:  # a group really named "<id>@<project>"
                scenario_id = f"{taken}#{len(used)}"
            ids[(key, inst.project_id)] = scenario_id
            used.add(scenario_id)
            entry = {
                k: v for k, v in rules.to_dict().items() if k not in ("group_id", "project_id")
            }
            groups.append({"id": scenario_id, "project": inst.project_id, **entry})
        members[inst.instance_id] = scenario_id
    listed = {(i.project_id, i.instance_id) for i in snapshot.instances}
    own = {k: c for k, c in resolved.instances.items() if k in listed}
    return groups, members, own
