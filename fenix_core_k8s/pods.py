"""Reading nodes and pods as fenix-core sees them: what is an instance, whose,
how big, and whether it is ready."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kubernetes.client import V1Node, V1OwnerReference, V1Pod
from kubernetes.utils import parse_quantity

from fenix_core.kube_scheduling import Requests, pod_requests, tolerates

__all__ = [
    "CONTROL_PLANE_LABELS",
    "ETCD_NAMESPACE",
    "ETCD_SELECTOR",
    "MIRROR_ANNOTATION",
    "controller_of",
    "emptydir_volumes",
    "instance_id",
    "is_controller_node",
    "is_instance",
    "is_ready",
    "memory_bytes",
    "millicores",
    "node_vcpus",
    "pod_vcpus",
    "requests_of",
    "split_instance_id",
    "tolerates",
]

#: Node labels that make a node a controller host (the second is the pre-1.24 name).
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
#: The annotation the kubelet puts on the mirror pod of a static pod.
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
#: Where kubeadm's stacked etcd members are: the mirror pods of the static pods
#: ``etcd-<node>`` in kube-system, labelled ``component=etcd, tier=control-plane``.
ETCD_NAMESPACE = "kube-system"
ETCD_SELECTOR = "component=etcd"


def instance_id(pod: V1Pod) -> str:
    """``namespace/name``: pod names are only unique within a namespace."""
    assert pod.metadata is not None
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def split_instance_id(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"not a pod id (namespace/name): {value!r}")
    return namespace, name


def controller_of(pod: V1Pod) -> V1OwnerReference | None:
    for ref in (pod.metadata.owner_references if pod.metadata else None) or ():
        if ref.controller:
            return ref
    return None


def is_instance(pod: V1Pod) -> bool:
    """Whether fenix-core moves this pod: not a DaemonSet's (they stay on their
    node and come back there), not a static pod's mirror (it cannot be evicted),
    and not finished (nothing left to move)."""
    owner = controller_of(pod)
    if owner is not None and owner.kind == "DaemonSet":
        return False
    annotations = (pod.metadata.annotations if pod.metadata else None) or {}
    if MIRROR_ANNOTATION in annotations:
        return False
    phase = pod.status.phase if pod.status else None
    return phase not in ("Succeeded", "Failed")


def emptydir_volumes(pod: V1Pod) -> list[str]:
    """The pod's emptyDir volumes: node-local data that eviction deletes. This is
    what ``kubectl drain`` counts as local storage; hostPath data stays on the
    node (it is there again after the reboot) and does not block a drain."""
    volumes = (pod.spec.volumes if pod.spec else None) or ()
    return [str(v.name) for v in volumes if v.empty_dir is not None]


def is_ready(obj: V1Pod | V1Node) -> bool:
    """The Ready condition is True (pods: and the pod is not terminating)."""
    if isinstance(obj, V1Pod) and obj.metadata and obj.metadata.deletion_timestamp:
        return False
    for cond in (obj.status.conditions if obj.status else None) or ():
        if cond.type == "Ready":
            return cond.status == "True"
    return False


def is_controller_node(node: V1Node) -> bool:
    labels = (node.metadata.labels if node.metadata else None) or {}
    return any(label in labels for label in CONTROL_PLANE_LABELS)


def _quantity(value: object) -> Decimal:
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, ArithmeticError):
        return Decimal(0)


def node_vcpus(node: V1Node) -> int:
    """Allocatable CPUs, rounded down (``3800m`` is 3: never promise more)."""
    allocatable = (node.status.allocatable if node.status else None) or {}
    return max(0, math.floor(_quantity(allocatable.get("cpu", "0"))))


def pod_vcpus(pod: V1Pod) -> int:
    """CPU requests, rounded up: the larger of the containers' sum and the
    largest init container, as the scheduler counts them."""
    spec = pod.spec
    if spec is None:
        return 0

    def request(container: object) -> Decimal:
        resources = getattr(container, "resources", None)
        requests = (resources.requests if resources else None) or {}
        return _quantity(requests.get("cpu", "0"))

    total = sum((request(c) for c in spec.containers or ()), Decimal(0))
    init = max((request(c) for c in spec.init_containers or ()), default=Decimal(0))
    return max(0, math.ceil(max(total, init)))


def millicores(value: object) -> int | None:
    """A CPU quantity (``"500m"``, ``2``) in millicores, rounded up; None when absent."""
    return None if value is None else max(0, math.ceil(_quantity(value) * 1000))


def memory_bytes(value: object) -> int | None:
    """A memory quantity (``"16Gi"``) in bytes, rounded up; None when absent."""
    return None if value is None else max(0, math.ceil(_quantity(value)))


def requests_of(spec: Mapping[str, Any]) -> Requests:
    """The requests of a pod spec in its JSON form (``containers``,
    ``initContainers``) as kube-scheduler counts them (see
    :func:`fenix_core.kube_scheduling.pod_requests`)."""

    def parsed(containers: object) -> list[dict[str, int | None]]:
        out = []
        for c in containers or ():  # type: ignore[attr-defined]
            requests = ((c.get("resources") or {}).get("requests")) or {}
            out.append(
                {
                    "cpu": millicores(requests.get("cpu")),
                    "memory": memory_bytes(requests.get("memory")),
                }
            )
        return out

    return pod_requests(parsed(spec.get("containers")), parsed(spec.get("initContainers")))
