"""Default constraints from the cluster (the driver's ConstraintSource).

* Each PodDisruptionBudget becomes a group ``pdb:<namespace>/<name>`` of the
  pods it selects, with ``max_impacted_members`` = how many of them the budget
  lets be unavailable at once: ``maxUnavailable``, or the selected pods minus
  ``minAvailable``; percentages are scaled against the selected pods and
  rounded up as Kubernetes does (see :mod:`fenix_core_k8s.budget`). A budget
  that allows no disruption at all still gives 1 (the smallest value a group
  may have): the engine then tries one pod at a time and each eviction waits
  on the budget's 429 until the application makes room.
* A required pod anti-affinity on ``kubernetes.io/hostname`` that selects the
  pod's own group makes that group an ``anti_affinity_group``; pods with such
  an anti-affinity and no budget form a group ``anti-affinity:<namespace>/
  <controller or pod>`` with the default one-at-a-time rule.

A pod selected by several budgets (which the Eviction API refuses) joins the
first by name. Constraints set through the engine's API win over these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes.client import ApiClient, V1Pod, V1PodDisruptionBudget

from fenix_core.constraints import CloudConstraints, GroupConstraints
from fenix_core.model import Instance

from .budget import max_unavailable, selector_matches
from .pods import controller_of, instance_id

__all__ = ["HOSTNAME_TOPOLOGY", "constraints_from"]

HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"


def _json(api_client: ApiClient, obj: object) -> Any:
    """A client model object in its JSON form (camelCase keys)."""
    return api_client.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


def _labels(pod: V1Pod) -> dict[str, str]:
    return dict((pod.metadata.labels if pod.metadata else None) or {})


def _hostname_anti_affinity(pod: V1Pod, serialize: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """The label selectors of the pod's required hostname anti-affinity terms."""
    affinity = pod.spec.affinity if pod.spec else None
    anti = affinity.pod_anti_affinity if affinity else None
    terms = (anti.required_during_scheduling_ignored_during_execution if anti else None) or ()
    return [
        serialize(term.label_selector) or {}
        for term in terms
        if term.topology_key == HOSTNAME_TOPOLOGY and term.label_selector is not None
    ]


def constraints_from(
    pods: Sequence[V1Pod],
    budgets: Sequence[V1PodDisruptionBudget],
    instances: Sequence[Instance],
    api_client: ApiClient,
) -> CloudConstraints:
    """Groups for ``instances`` from the budgets and anti-affinities of ``pods``."""

    def serialize(obj: object) -> Any:
        return _json(api_client, obj)

    wanted = {i.instance_id: i for i in instances}
    by_id = {instance_id(p): p for p in pods if p.metadata is not None}
    groups: dict[str, GroupConstraints] = {}
    members: dict[str, str] = {}

    def project_of(ids: Sequence[str]) -> str | None:
        projects = [wanted[i].project_id for i in ids if i in wanted]
        return max(sorted(set(projects)), key=projects.count) if projects else None

    ordered = sorted(
        budgets,
        key=lambda b: (b.metadata.namespace or "", b.metadata.name or "") if b.metadata else ("",),
    )
    for pdb in ordered:
        if pdb.metadata is None or pdb.spec is None:
            continue
        namespace = pdb.metadata.namespace
        selector: Mapping[str, Any] | None = (
            serialize(pdb.spec.selector) if pdb.spec.selector is not None else None
        )
        selected = [
            pid
            for pid, pod in sorted(by_id.items())
            if pod.metadata is not None
            and pod.metadata.namespace == namespace
            and pod.metadata.deletion_timestamp is None
            and selector_matches(selector, _labels(pod))
        ]
        project = project_of(selected)
        if project is None:
            continue
        spec = serialize(pdb.spec)
        group_id = f"pdb:{namespace}/{pdb.metadata.name}"
        groups[group_id] = GroupConstraints(
            group_id=group_id,
            project_id=project,
            group_name=f"PodDisruptionBudget {namespace}/{pdb.metadata.name}",
            max_impacted_members=max(1, max_unavailable(spec, len(selected))),
        )
        for pid in selected:
            if pid in wanted:
                members.setdefault(pid, group_id)

    for pid, pod in sorted(by_id.items()):
        if pid not in wanted or pod.metadata is None:
            continue
        selectors = _hostname_anti_affinity(pod, serialize)
        if not any(selector_matches(s, _labels(pod)) for s in selectors):
            continue
        joined = members.get(pid)
        if joined is None:
            owner = controller_of(pod)
            name = f"{owner.kind}/{owner.name}" if owner else str(pod.metadata.name)
            joined = f"anti-affinity:{pod.metadata.namespace}/{name}"
            members[pid] = joined
            if joined not in groups:
                groups[joined] = GroupConstraints(
                    group_id=joined,
                    project_id=wanted[pid].project_id,
                    group_name=f"pods of {name} kept apart by hostname anti-affinity",
                )
        group = groups[joined]
        if not group.anti_affinity_group:
            groups[joined] = GroupConstraints(**{**group.to_dict(), "anti_affinity_group": True})
    used = set(members.values())
    return CloudConstraints(
        groups=tuple(g for gid, g in sorted(groups.items()) if gid in used), members=members
    )
