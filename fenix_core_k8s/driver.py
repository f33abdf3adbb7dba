"""KubernetesDriver: fenix-core's cloud driver for a Kubernetes cluster.

Hosts are nodes, instances are the pods bound to them, disabling a host is
cordoning its node, and moving an instance is evicting its pod through the
policy/v1 Eviction API, which honours PodDisruptionBudgets (see
:mod:`fenix_core_k8s.moves`). Everything goes through the official
``kubernetes`` client.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar

import attrs
from kubernetes.client import ApiClient, CoreV1Api, PolicyV1Api, V1Node, V1Pod
from kubernetes.client.exceptions import ApiException

from fenix_core.clock import Clock, RealClock
from fenix_core.constraints import CloudConstraints
from fenix_core.errors import CloudError, InvalidInput
from fenix_core.kube_scheduling import (
    QUEUED_TAINT_KEY,
    ClusterScheduling,
    NodeInputs,
    PodInputs,
    Requests,
    lasting_taints,
)
from fenix_core.model import Host, Instance, OperationStatus
from fenix_core.placement_rules import HOST_TYPES, PlacementRule
from fenix_core.states import InstanceAction

from .config import connect
from .constraints import constraints_from
from .moves import Evictions, UnmanagedPods, api_message
from .pods import (
    ETCD_NAMESPACE,
    ETCD_SELECTOR,
    controller_of,
    instance_id,
    is_controller_node,
    is_instance,
    is_ready,
    memory_bytes,
    millicores,
    node_vcpus,
    pod_vcpus,
    requests_of,
    split_instance_id,
)

__all__ = ["CORDONED_ANNOTATION", "QUEUED_TAINT", "DriverOptions", "KubernetesDriver"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Set on a node together with ``spec.unschedulable`` when fenix-core cordons
#: it; only nodes carrying it are ever uncordoned. Its value is the reason.
CORDONED_ANNOTATION = "fenix-core/cordoned"
#: A ``PreferNoSchedule`` taint with this key (its value: the session id) is
#: on each node a session still has to maintain, so that the scheduler puts
#: replacement pods elsewhere when it can (they would only be evicted again).
QUEUED_TAINT = QUEUED_TAINT_KEY
#: Read-modify-write rounds of a node's taints before giving up on a conflict.
_TAINT_ATTEMPTS = 3


class DriverOptions(TypedDict, total=False):
    """The driver's options besides ``api_client`` and ``clock`` (see KubernetesDriver)."""

    kubeconfig: str | os.PathLike[str] | None
    context: str | None
    in_cluster: bool | None
    project_label: str | None
    unmanaged_pods: UnmanagedPods
    delete_emptydir_data: bool
    steer_replacements: bool


class KubernetesDriver:
    """A :class:`~fenix_core.hookspecs.CloudDriver` on the official client.

    Connection: ``api_client=`` (a configured :class:`kubernetes.client.ApiClient`),
    else ``kubeconfig=`` / ``context=``, else in-cluster or the default
    kubeconfig as kubectl does (:func:`fenix_core_k8s.config.connect`).

    ``project_label``: the pod label whose value is the pod's project (its
    namespace when the label is missing); by default the namespace.
    ``unmanaged_pods``: what to do with a pod that no controller recreates:
    ``"fail"`` the move, naming the pod (default), or ``"evict"`` it (it is
    then gone for good).
    ``delete_emptydir_data``: evict pods with emptyDir volumes, whose data is
    then lost (``kubectl drain --delete-emptydir-data``). By default such a
    pod is not evicted: its move waits, saying why, until the pod is gone.
    ``steer_replacements``: put a ``PreferNoSchedule`` taint
    (``QUEUED_TAINT`` (``fenix-core/queued``)) on the nodes a session still has to maintain, so
    that the scheduler prefers other nodes for replacement pods (default
    True; False leaves the nodes' taints alone). See :meth:`mark_queued`.

    It is a :class:`~fenix_core.hookspecs.HostGuard`: a control-plane node
    may go into maintenance only while every other control-plane node and
    every etcd member is Ready (see :meth:`host_guard`).
    """

    name = "kubernetes"

    def __init__(
        self,
        api_client: ApiClient | None = None,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
        clock: Clock | None = None,
        project_label: str | None = None,
        unmanaged_pods: UnmanagedPods = "fail",
        delete_emptydir_data: bool = False,
        steer_replacements: bool = True,
    ) -> None:
        if unmanaged_pods not in ("fail", "evict"):
            raise InvalidInput(
                "unmanaged_pods", f"must be 'fail' or 'evict', got {unmanaged_pods!r}"
            )
        if not isinstance(delete_emptydir_data, bool):
            raise InvalidInput(
                "delete_emptydir_data", f"must be True or False, got {delete_emptydir_data!r}"
            )
        if not isinstance(steer_replacements, bool):
            raise InvalidInput(
                "steer_replacements", f"must be True or False, got {steer_replacements!r}"
            )
        self.steer_replacements = steer_replacements
        if api_client is None:
            api_client = connect(kubeconfig=kubeconfig, context=context, in_cluster=in_cluster)
        self.api_client = api_client
        self.core = CoreV1Api(api_client)
        self.policy = PolicyV1Api(api_client)
        self.clock: Clock = clock if clock is not None else RealClock()
        self.project_label = project_label
        self.evictions = Evictions(
            self.core,
            self.clock,
            unmanaged_pods=unmanaged_pods,
            delete_emptydir_data=delete_emptydir_data,
        )

    # ------------------------------------------------------------------ inventory

    def list_hosts(self) -> Sequence[Host]:
        nodes = self._call("listing nodes", self.core.list_node).items
        return [self._host(n) for n in nodes if n.metadata is not None]

    def _host(self, node: V1Node) -> Host:
        assert node.metadata is not None
        assert node.metadata.name is not None
        return Host(
            name=node.metadata.name,
            type="controller" if is_controller_node(node) else "compute",
            vcpus=node_vcpus(node),
            enabled=self._schedulable_or_ours(node),
            details={"ready": is_ready(node)},
            # topology.kubernetes.io/zone, a rack label ...: what topology caps name.
            labels=dict(node.metadata.labels or {}),
        )

    @staticmethod
    def _schedulable_or_ours(node: V1Node) -> bool:
        """Enabled unless cordoned by someone else: a node that fenix-core left
        cordoned (a failed drain) is fenix-core's to uncordon after maintenance."""
        if not (node.spec and node.spec.unschedulable):
            return True
        annotations = (node.metadata.annotations if node.metadata else None) or {}
        return CORDONED_ANNOTATION in annotations

    def list_instances(self, hosts: Sequence[str] | None = None) -> Sequence[Instance]:
        if hosts is None:
            pods = self._call("listing pods", self.core.list_pod_for_all_namespaces).items
        else:
            pods = []
            for host in hosts:
                pods += self._call(
                    f"listing the pods on {host}",
                    self.core.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={host}",
                ).items
        return [self._instance(p) for p in pods if p.spec and p.spec.node_name and is_instance(p)]

    def _instance(self, pod: V1Pod) -> Instance:
        assert pod.metadata is not None
        assert pod.spec is not None
        project = self._project_of(pod)
        owner = controller_of(pod)
        return Instance(
            instance_id=instance_id(pod),
            project_id=project,
            host=str(pod.spec.node_name),
            vcpus=pod_vcpus(pod),
            name=str(pod.metadata.name),
            live_migratable=False,
            details={
                "namespace": pod.metadata.namespace,
                "controller": f"{owner.kind}/{owner.name}" if owner else None,
                "ready": is_ready(pod),
            },
        )

    def locate(self, instance_id: str) -> str | None:
        pod = self._read_pod(*self._split(instance_id))
        if pod is None:
            return None
        return pod.spec.node_name if pod.spec else None

    def _read_pod(self, namespace: str, name: str) -> V1Pod | None:
        try:
            return self.core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(f"reading pod {namespace}/{name}", exc) from None

    def instance_owner(self, instance_id: str) -> str | None:
        """The project of the pod (its namespace, or its ``project_label``);
        None when the pod does not exist or is not a maintained instance."""
        try:
            namespace, name = split_instance_id(instance_id)
        except ValueError:
            return None  # not a pod id: no such instance
        pod = self._read_pod(namespace, name)
        if pod is None or pod.metadata is None or not is_instance(pod):
            return None
        return self._project_of(pod)

    def _project_of(self, pod: V1Pod) -> str:
        assert pod.metadata is not None
        project = str(pod.metadata.namespace)
        if self.project_label is not None:
            project = (pod.metadata.labels or {}).get(self.project_label, project)
        return project

    def allowed_actions(self) -> Sequence[str]:
        return [InstanceAction.EVICT.value, InstanceAction.OWN_ACTION.value]

    # ------------------------------------------------------------------ hosts

    def disable_host(self, host: str, reason: str) -> None:
        """Cordon ``host`` unless it is cordoned already (by anyone): only a node
        fenix-core cordoned gets the annotation that lets it be uncordoned."""
        reason = reason or "fenix-core maintenance"
        node = self._call(f"reading node {host}", self.core.read_node, host)
        if node.spec is not None and node.spec.unschedulable:
            return
        patch = {
            "metadata": {"annotations": {CORDONED_ANNOTATION: reason[:1024]}},
            "spec": {"unschedulable": True},
        }
        self._call(f"cordoning node {host}", self.core.patch_node, host, patch)

    def enable_host(self, host: str) -> None:
        node = self._call(f"reading node {host}", self.core.read_node, host)
        annotations = (node.metadata.annotations if node.metadata else None) or {}
        if CORDONED_ANNOTATION not in annotations:
            if node.spec is not None and node.spec.unschedulable:
                log.info("node %s was cordoned by someone else: left cordoned", host)
            return
        patch = {
            "metadata": {"annotations": {CORDONED_ANNOTATION: None}},
            "spec": {"unschedulable": None},
        }
        self._call(f"uncordoning node {host}", self.core.patch_node, host, patch)

    def mark_queued(self, session_id: str, hosts: Sequence[str]) -> None:
        """Taint exactly ``hosts`` among the nodes for session ``session_id``
        (:class:`~fenix_core.hookspecs.HostQueue`): a ``PreferNoSchedule``
        taint ``QUEUED_TAINT`` (``fenix-core/queued``) whose value is the session id. The
        scheduler still uses a tainted node when no other fits. A node tainted
        by another session is left as it is; this session's taint comes off
        every node not in ``hosts`` (all of them once the session ended).

        ``spec.taints`` is an atomic list (a patch replaces it whole), so each
        change is a read-modify-write that carries the node's resourceVersion:
        a concurrent change of the node answers 409 and is read again.
        """
        wanted = set(hosts) if self.steer_replacements else set()
        nodes = self._call("listing nodes", self.core.list_node).items
        for node in nodes:
            name = node.metadata.name if node.metadata else None
            if name is None:
                continue
            if _taint_change(_taints(node), session_id, name in wanted) is not None:
                self._retaint(name, session_id, name in wanted)

    def host_queued(self, session_id: str, host: str, queued: bool) -> None:
        """One node joined or left session ``session_id``'s queue
        (:class:`~fenix_core.hookspecs.HostQueueChanges`): that node's taint
        alone is put on or taken off, without listing the nodes."""
        self._retaint(host, session_id, queued and self.steer_replacements)

    def _retaint(self, name: str, session_id: str, queued: bool) -> None:
        for attempt in range(_TAINT_ATTEMPTS):
            node = self._call(f"reading node {name}", self.core.read_node, name)
            taints = _taint_change(_taints(node), session_id, queued)
            if taints is None:
                return
            version = node.metadata.resource_version if node.metadata else None
            patch = {"metadata": {"resourceVersion": version}, "spec": {"taints": taints}}
            try:
                self.core.patch_node(name, patch)
                return
            except ApiException as exc:
                if exc.status == 409 and attempt + 1 < _TAINT_ATTEMPTS:
                    continue  # the node changed since it was read: read it again
                if exc.status == 404:
                    return  # the node is gone: nothing to steer
                raise self._error(f"tainting node {name}", exc) from None

    def host_is_up(self, host: str) -> bool:
        try:
            node = self.core.read_node(host)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise self._error(f"reading node {host}", exc) from None
        return is_ready(node)

    def host_guard(self, host: str) -> str | None:
        """The etcd quorum guard, in the spirit of medik8s node-maintenance-operator:
        a control-plane node may go into maintenance only while every other
        control-plane node is Ready and every etcd member on another node is
        Ready (kubeadm's stacked etcd: the static pods ``etcd-<node>`` in
        kube-system, label ``component=etcd``; with an external etcd there are
        none and the nodes alone count). None: it may; else why it waits.
        Other nodes are never held back."""
        nodes = self._call("listing nodes", self.core.list_node).items
        this = next((n for n in nodes if n.metadata and n.metadata.name == host), None)
        if this is None or not is_controller_node(this):
            return None
        why = [
            f"control-plane node {n.metadata.name} is not Ready"
            for n in nodes
            if n.metadata and n.metadata.name != host and is_controller_node(n) and not is_ready(n)
        ]
        members = self._call(
            "listing the etcd members",
            self.core.list_namespaced_pod,
            ETCD_NAMESPACE,
            label_selector=ETCD_SELECTOR,
        ).items
        why += [
            f"etcd member {p.metadata.name} on {p.spec.node_name} is not Ready"
            for p in members
            if p.metadata and p.spec and p.spec.node_name != host and not is_ready(p)
        ]
        if not why:
            return None
        return (
            f"control-plane node {host} waits: "
            + "; ".join(why)
            + " (taking it down now could cost the control plane its etcd quorum)"
        )

    # ------------------------------------------------------------------ moves

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        """Evict the pod (``target`` is ignored: the scheduler places the replacement)."""
        if action != InstanceAction.EVICT:
            raise CloudError(
                f"Kubernetes moves pods only by EVICT, not {action}", instance_id=instance_id
            )
        return self.evictions.start(instance_id, key)

    def poll_move(self, handle: str) -> OperationStatus:
        try:
            return self.evictions.poll(handle)
        except ApiException as exc:
            raise self._error("following an eviction", exc) from None

    def find_move(self, key: str) -> str | None:
        return self.evictions.find(key)

    # ------------------------------------------------------------------ constraints

    def cloud_constraints(self, instances: Sequence[Instance]) -> CloudConstraints:
        pods = self._call("listing pods", self.core.list_pod_for_all_namespaces).items
        budgets = self._call(
            "listing PodDisruptionBudgets",
            self.policy.list_pod_disruption_budget_for_all_namespaces,
        ).items
        nodes = self._call("listing nodes", self.core.list_node).items
        found = constraints_from(pods, budgets, instances, self.api_client)
        rules = self._placement_classes(nodes, pods)
        return attrs.evolve(found, placement=(*found.placement, *rules)) if rules else found

    # ------------------------------------------------------------------ planning

    def scheduling_inputs(self, instances: Sequence[Instance]) -> ClusterScheduling:
        """What a plan needs to place replacement pods as kube-scheduler would
        (read only: one listing of nodes, one of pods): per node its
        allocatable CPU and memory, the requests of the pods that stay on it
        (DaemonSet pods, static pods: they are not instances) and its lasting
        NoSchedule / NoExecute taints; per listed instance its requests,
        tolerations and nodeSelector."""
        nodes = self._call("listing nodes", self.core.list_node).items
        pods = self._call("listing pods", self.core.list_pod_for_all_namespaces).items
        wanted = {i.instance_id for i in instances}
        stays: dict[str, Requests] = {}
        for pod in pods:
            if pod.spec is None or not pod.spec.node_name or is_instance(pod):
                continue
            if (pod.status.phase if pod.status else None) not in ("Succeeded", "Failed"):
                where = str(pod.spec.node_name)
                stays[where] = stays.get(where, Requests()) + requests_of(self._json(pod.spec))
        return ClusterScheduling(
            self._node_inputs(nodes, stays),
            {
                instance_id(p): self._pod_inputs(p)
                for p in pods
                if p.spec is not None and is_instance(p) and instance_id(p) in wanted
            },
        )

    def _json(self, obj: object) -> dict[str, Any]:
        """A client model object in its JSON form (camelCase keys)."""
        return dict(self.api_client.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    def _pod_inputs(self, pod: V1Pod) -> PodInputs:
        spec = self._json(pod.spec)
        return PodInputs(
            requests_of(spec),
            tuple(spec.get("tolerations") or ()),
            dict(spec.get("nodeSelector") or {}),
        )

    def _node_inputs(
        self, nodes: Sequence[V1Node], stays: Mapping[str, Requests] | None = None
    ) -> dict[str, NodeInputs]:
        found: dict[str, NodeInputs] = {}
        for node in nodes:
            if node.metadata is None or node.metadata.name is None:
                continue
            name = node.metadata.name
            data = self._json(node)
            allocatable = (data.get("status") or {}).get("allocatable") or {}
            found[name] = NodeInputs(
                cpu_m=millicores(allocatable.get("cpu")) or 0,
                memory=memory_bytes(allocatable.get("memory")) or 0,
                stays=(stays or {}).get(name, Requests()),
                taints=lasting_taints((data.get("spec") or {}).get("taints") or ()),
            )
        return found

    def _placement_classes(
        self, nodes: Sequence[V1Node], pods: Sequence[V1Pod]
    ) -> list[PlacementRule]:
        """``host-types`` rules for the pods that kube-scheduler may put on
        nodes of another type than their own: a pod that tolerates the
        control-plane taint (CoreDNS) may land on workers and control-plane
        nodes alike; one whose node's type alone passes its filters (no
        toleration, or a nodeSelector for control-plane nodes) keeps its
        host's type, the default placement class. Every such pod of the
        cluster is listed, so that the rule is whole in each listing."""
        inputs = self._node_inputs(nodes)
        labels = {
            n.metadata.name: dict(n.metadata.labels or {})
            for n in nodes
            if n.metadata is not None and n.metadata.name is not None
        }
        types = {
            n.metadata.name: "controller" if is_controller_node(n) else "compute"
            for n in nodes
            if n.metadata is not None and n.metadata.name is not None
        }
        classes: dict[tuple[str, ...], list[str]] = {}
        for pod in pods:
            if pod.spec is None or not pod.spec.node_name or not is_instance(pod):
                continue
            own = types.get(pod.spec.node_name)
            if own is None:
                continue
            wanted = self._pod_inputs(pod)
            may = {types[n] for n, node in inputs.items() if wanted.may_run_on(node, labels[n])}
            if may and may != {own}:
                classes.setdefault(tuple(sorted(may | {own})), []).append(instance_id(pod))
        return [
            PlacementRule(
                group_id=f"kube-scheduler:{'+'.join(kinds)}",
                policy=HOST_TYPES,
                members=sorted(members),
                name=f"pods kube-scheduler may put on {' or '.join(kinds)} nodes",
                host_types=kinds,
            )
            for kinds, members in sorted(classes.items())
        ]

    # ------------------------------------------------------------------ helpers

    def _split(self, value: str) -> tuple[str, str]:
        try:
            return split_instance_id(value)
        except ValueError as exc:
            raise CloudError(str(exc), instance_id=value) from None

    def _call(self, what: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except ApiException as exc:
            raise self._error(what, exc) from None

    @staticmethod
    def _error(what: str, exc: ApiException) -> CloudError:
        hint = ""
        if exc.status in (401, 403):
            hint = " (check the credentials and the RBAC rules in docs/kubernetes.md)"
        return CloudError(f"{what} failed: HTTP {exc.status}: {api_message(exc)}{hint}")


def _taints(node: V1Node) -> list[dict[str, Any]]:
    """The node's taints as plain dicts (key, value, effect, timeAdded)."""
    out = []
    for t in (node.spec.taints if node.spec else None) or ():
        taint: dict[str, Any] = {"key": t.key, "effect": t.effect}
        if t.value is not None:
            taint["value"] = t.value
        if t.time_added is not None:
            taint["timeAdded"] = t.time_added.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(taint)
    return out


def _taint_change(
    taints: list[dict[str, Any]], session_id: str, queued: bool
) -> list[dict[str, Any]] | None:
    """The node's new taint list for one session, or None if it stays as it is."""
    present = [t for t in taints if t["key"] == QUEUED_TAINT]
    if queued:
        if present:
            return None  # steered already (by this session or another one)
        return [*taints, {"key": QUEUED_TAINT, "value": session_id, "effect": "PreferNoSchedule"}]
    if not any(t.get("value") == session_id for t in present):
        return None
    return [t for t in taints if not (t["key"] == QUEUED_TAINT and t.get("value") == session_id)]
