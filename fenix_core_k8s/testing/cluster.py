"""The state behind the fake apiserver: nodes, pods, controllers, budgets, events.

Objects are kept in their JSON form (what the apiserver would send), so the
HTTP layer only has to route and encode. Time comes from a fenix clock; the
"controllers" (ReplicaSet / StatefulSet recreation, pods becoming Ready,
terminating pods going away, nodes rebooting) are scheduled changes that fall
due when a request arrives at or after their time, so on a
:class:`~fenix_core.clock.SimClock` they take simulated seconds and no thread
sleeps.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from fenix_core.clock import Clock, RealClock
from fenix_core.kube_scheduling import Candidate, Requests, best_node

from ..budget import desired_healthy, selector_matches
from ..pods import CONTROL_PLANE_LABELS, memory_bytes, millicores, requests_of, tolerates

__all__ = ["ApiError", "EvictionRecord", "FakeCluster"]

Obj = dict[str, Any]

#: Owner kinds whose pods the fake's controllers recreate.
RECREATED = ("ReplicaSet", "StatefulSet")


class ApiError(Exception):
    """An apiserver error: becomes a ``Status`` response with this code."""

    def __init__(
        self, code: int, reason: str, message: str, causes: Iterable[Mapping[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.causes = [dict(c) for c in causes]

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.causes:
            body["details"] = {"causes": self.causes}
        return body


@attrs.frozen
class EvictionRecord:
    """One eviction request and the state of the pod's budget when it came.

    ``code`` is the HTTP answer (201, 429, 500, 404 ...). ``budget`` is
    ``namespace/name`` of the one PodDisruptionBudget selecting the pod (None
    if none or several), ``spec`` its spec, and the counts are its status just
    before the eviction: ``healthy_after`` is how many selected pods stayed
    healthy after it, which must never be below ``desired_healthy`` for an
    eviction that was granted (201) while the pod was healthy.
    """

    time: datetime
    namespace: str
    pod: str
    node: str | None
    code: int
    pod_was_healthy: bool
    budget: str | None = None
    spec: Mapping[str, Any] = attrs.field(factory=dict)
    expected_pods: int = 0
    current_healthy: int = 0
    desired_healthy: int = 0
    disruptions_allowed: int = 0
    healthy_after: int = 0


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(obj: Mapping[str, Any]) -> bool:
    for cond in obj.get("status", {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _set_condition(obj: Obj, kind: str, status: bool, now: datetime, reason: str = "") -> None:
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    value = "True" if status else "False"
    for cond in conditions:
        if cond["type"] == kind:
            if cond["status"] != value:
                cond["lastTransitionTime"] = _stamp(now)
            cond["status"] = value
            cond["reason"] = reason or cond.get("reason", "")
            return
    conditions.append(
        {"type": kind, "status": value, "reason": reason, "lastTransitionTime": _stamp(now)}
    )


#: kubeadm's control-plane label, and the key of the taint it puts with it.
CONTROL_PLANE_KEY = CONTROL_PLANE_LABELS[0]


def _running(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods the scheduler's cache counts on a node: terminating ones too,
    until they are gone; not finished ones."""
    return [p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")]


def _allocatable(node: Mapping[str, Any]) -> tuple[int, int]:
    """The node's allocatable CPU (millicores) and memory (bytes)."""
    allocatable = node["status"]["allocatable"]
    return (
        millicores(allocatable.get("cpu")) or 0,
        memory_bytes(allocatable.get("memory")) or 0,
    )


def _node_selected(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """NodeAffinity's filter on ``spec.nodeSelector``: every pair is a label
    of the node."""
    labels = node["metadata"].get("labels") or {}
    selector = pod["spec"].get("nodeSelector") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _controller(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in pod["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


class FakeCluster:
    """An in-memory Kubernetes cluster with the behaviour fenix-core relies on.

    Build it with :meth:`add_node`, :meth:`add_replicaset`,
    :meth:`add_statefulset`, :meth:`add_daemonset`, :meth:`add_pod` and
    :meth:`add_pdb`; inject faults with :meth:`block_pdb` and
    :meth:`node_stays_down`; read what happened in :attr:`evictions`,
    :attr:`deletions`, :attr:`events` and :attr:`node_log`.
    ``startup_seconds`` is how long a new pod takes to be Ready,
    ``grace_seconds`` how long an evicted pod takes to terminate and
    ``controller_seconds`` how long a controller takes to notice it.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        startup_seconds: float = 20.0,
        grace_seconds: float = 5.0,
        controller_seconds: float = 1.0,
    ) -> None:
        self.clock: Clock = clock if clock is not None else RealClock()
        self.startup_seconds = startup_seconds
        self.grace_seconds = grace_seconds
        self.controller_seconds = controller_seconds
        self.lock = threading.RLock()
        self.nodes: dict[str, Obj] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self.pdbs: dict[tuple[str, str], Obj] = {}
        self.events: list[Obj] = []
        self.evictions: list[EvictionRecord] = []
        #: (time, namespace, pod) of every plain DELETE of a pod.
        self.deletions: list[tuple[datetime, str, str]] = []
        #: (time, node, what): cordon / uncordon / reboot / ready / not_ready.
        self.node_log: list[tuple[datetime, str, str]] = []
        self._owners: dict[str, Obj] = {}  # uid -> controller (kind, namespace, name, template)
        self._blocked: dict[tuple[str, str], datetime] = {}
        self._stays_down: set[str] = set()
        self._due: list[tuple[datetime, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._version = itertools.count(1)
        self._names = itertools.count()
        self._applying: datetime | None = None

    # ------------------------------------------------------------------ time

    def now(self) -> datetime:
        """The cluster's time: the clock's, or the due time of the change being applied."""
        return self._applying if self._applying is not None else self.clock.now()

    def tick(self) -> None:
        """Apply every scheduled change that is due (called on each request), each
        at its own time, so that changes it schedules in turn fall due as they
        would have in a running cluster."""
        with self.lock:
            now = self.clock.now()
            try:
                while self._due and self._due[0][0] <= now:
                    self._applying, _, change = heapq.heappop(self._due)
                    change()
            finally:
                self._applying = None

    def _later(self, seconds: float, change: Callable[[], None]) -> None:
        heapq.heappush(
            self._due, (self.now() + timedelta(seconds=seconds), next(self._seq), change)
        )

    def _rv(self, obj: Obj) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._version))

    def resource_version(self) -> str:
        return str(next(self._version))

    # ------------------------------------------------------------------ building

    def add_node(
        self,
        name: str,
        *,
        cpu: str = "4",
        control_plane: bool = False,
        control_plane_taint: bool = True,
        unschedulable: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> Obj:
        """A Ready node with ``cpu`` allocatable (a Kubernetes quantity).

        A ``control_plane`` node is labelled and, as kubeadm sets it up,
        tainted ``node-role.kubernetes.io/control-plane:NoSchedule``: only
        pods that tolerate it are scheduled there (``control_plane_taint=False``:
        an untainted control plane, as on a small cluster)."""
        now = self.now()
        all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
        spec: Obj = {"unschedulable": True} if unschedulable else {}
        if control_plane:
            all_labels[CONTROL_PLANE_KEY] = ""
            if control_plane_taint:
                spec["taints"] = [{"key": CONTROL_PLANE_KEY, "effect": "NoSchedule"}]
        node: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "labels": all_labels,
                "annotations": {},
                "creationTimestamp": _stamp(now),
            },
            "spec": spec,
            "status": {
                "allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
                "capacity": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
                "conditions": [],
            },
        }
        _set_condition(node, "Ready", True, now, "KubeletReady")
        with self.lock:
            self._rv(node)
            self.nodes[name] = node
            for owner in self._owners.values():
                if owner["kind"] == "DaemonSet":
                    self._create_pod(owner, node=name, ready=True)
        return node

    def _new_owner(
        self,
        kind: str,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        cpu: str,
        anti_affinity: bool,
        replicas: int,
        tolerations: Iterable[Mapping[str, Any]] = (),
        node_selector: Mapping[str, str] | None = None,
    ) -> Obj:
        owner: Obj = {
            "kind": kind,
            "namespace": namespace,
            "name": name,
            "uid": str(uuid.uuid4()),
            "labels": dict(labels),
            "cpu": cpu,
            "anti_affinity": anti_affinity,
            "replicas": replicas,
            "tolerations": [dict(t) for t in tolerations],
            "node_selector": dict(node_selector or {}),
        }
        self._owners[owner["uid"]] = owner
        return owner

    def add_replicaset(
        self,
        namespace: str,
        name: str,
        nodes: Iterable[str],
        *,
        labels: Mapping[str, str] | None = None,
        cpu: str = "500m",
        anti_affinity: bool = False,
        volumes: Iterable[Mapping[str, Any]] = (),
        tolerations: Iterable[Mapping[str, Any]] = (),
        node_selector: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        """A ReplicaSet with one pod on each of ``nodes`` (a node may repeat).

        Its pods are named ``<name>-<suffix>``; an evicted or deleted one is
        replaced by a new pod with a new name on a schedulable node.
        ``anti_affinity`` adds a required pod anti-affinity on
        ``kubernetes.io/hostname`` for the set's own labels; ``volumes`` and
        ``tolerations`` are the pod template's (``[{"name": "cache",
        "emptyDir": {}}]``; ``[{"key": "node-role.kubernetes.io/control-plane",
        "operator": "Exists", "effect": "NoSchedule"}]`` as CoreDNS has);
        ``node_selector`` the template's ``nodeSelector``.
        """
        return self._add_set(
            "ReplicaSet",
            namespace,
            name,
            nodes,
            labels,
            cpu,
            anti_affinity,
            volumes,
            tolerations,
            node_selector,
        )

    def add_statefulset(
        self,
        namespace: str,
        name: str,
        nodes: Iterable[str],
        *,
        labels: Mapping[str, str] | None = None,
        cpu: str = "500m",
        anti_affinity: bool = False,
        volumes: Iterable[Mapping[str, Any]] = (),
        tolerations: Iterable[Mapping[str, Any]] = (),
    ) -> list[Obj]:
        """A StatefulSet whose pods ``<name>-0``, ``<name>-1`` ... sit on ``nodes``;
        an evicted pod comes back with the same name once the old one is gone."""
        return self._add_set(
            "StatefulSet", namespace, name, nodes, labels, cpu, anti_affinity, volumes, tolerations
        )

    def _add_set(
        self,
        kind: str,
        namespace: str,
        name: str,
        nodes: Iterable[str],
        labels: Mapping[str, str] | None,
        cpu: str,
        anti_affinity: bool,
        volumes: Iterable[Mapping[str, Any]] = (),
        tolerations: Iterable[Mapping[str, Any]] = (),
        node_selector: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        placed = list(nodes)
        with self.lock:
            owner = self._new_owner(
                kind,
                namespace,
                name,
                labels or {"app": name},
                cpu,
                anti_affinity,
                len(placed),
                tolerations,
                node_selector,
            )
            owner["volumes"] = [dict(v) for v in volumes]
            ordinal = kind == "StatefulSet"
            return [
                self._create_pod(owner, node=n, ready=True, name=f"{name}-{i}" if ordinal else None)
                for i, n in enumerate(placed)
            ]

    def add_daemonset(
        self, namespace: str, name: str, *, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        """A DaemonSet: one pod on every node, now and on nodes added later."""
        with self.lock:
            owner = self._new_owner(
                "DaemonSet", namespace, name, labels or {"app": name}, "100m", False, 0
            )
            return [self._create_pod(owner, node=n, ready=True) for n in self.nodes]

    def add_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        *,
        labels: Mapping[str, str] | None = None,
        cpu: str = "250m",
        mirror: bool = False,
        volumes: Iterable[Mapping[str, Any]] = (),
    ) -> Obj:
        """A pod without a controller (``mirror``: a static pod's mirror)."""
        with self.lock:
            pod = self._pod_object(namespace, name, node, labels or {}, cpu, None, ready=True)
            if volumes:
                pod["spec"]["volumes"] = [dict(v) for v in volumes]
            if mirror:
                pod["metadata"]["annotations"]["kubernetes.io/config.mirror"] = "hash"
            self.pods[(namespace, name)] = pod
            return pod

    def add_etcd_member(self, node: str) -> Obj:
        """kubeadm's stacked etcd member on ``node``: the mirror pod of the static
        pod ``etcd-<node>`` in kube-system, labelled ``component=etcd`` and
        ``tier=control-plane``, as kubeadm writes its manifest."""
        return self.add_pod(
            "kube-system",
            f"etcd-{node}",
            node,
            labels={"component": "etcd", "tier": "control-plane"},
            cpu="100m",
            mirror=True,
        )

    def set_node_ready(self, name: str, ready: bool) -> None:
        """The node's kubelet reports Ready (or stops: NotReady) from now on."""
        with self.lock:
            node = self.nodes[name]
            _set_condition(
                node, "Ready", ready, self.now(), "KubeletReady" if ready else "KubeletNotReady"
            )
            self._rv(node)
            self.node_log.append((self.now(), name, "ready" if ready else "not_ready"))

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """The pod's Ready condition (an etcd member failing its probe ...)."""
        with self.lock:
            pod = self._get_pod(namespace, name)
            _set_condition(pod, "Ready", ready, self.now())
            self._rv(pod)

    def add_pdb(
        self,
        namespace: str,
        name: str,
        match_labels: Mapping[str, str],
        *,
        min_available: int | str | None = None,
        max_unavailable: int | str | None = None,
        unhealthy_pod_eviction_policy: str | None = None,
    ) -> Obj:
        """A PodDisruptionBudget (policy/v1) selecting pods by ``match_labels``."""
        spec: Obj = {"selector": {"matchLabels": dict(match_labels)}}
        if min_available is not None:
            spec["minAvailable"] = min_available
        if max_unavailable is not None:
            spec["maxUnavailable"] = max_unavailable
        if unhealthy_pod_eviction_policy is not None:
            spec["unhealthyPodEvictionPolicy"] = unhealthy_pod_eviction_policy
        pdb: Obj = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _stamp(self.now()),
            },
            "spec": spec,
        }
        with self.lock:
            self.pdbs[(namespace, name)] = pdb
        return pdb

    # ------------------------------------------------------------------ faults

    def block_pdb(self, namespace: str, name: str, seconds: float) -> None:
        """The budget allows no disruption for ``seconds`` from now (as if the
        application were short of healthy pods), then behaves normally."""
        with self.lock:
            if (namespace, name) not in self.pdbs:
                raise KeyError(f"no PodDisruptionBudget {namespace}/{name}")
            self._blocked[(namespace, name)] = self.now() + timedelta(seconds=seconds)

    def node_stays_down(self, name: str) -> None:
        """After its next reboot the node never reports Ready again."""
        with self.lock:
            self._stays_down.add(name)

    def reboot_node(self, name: str, seconds: float) -> None:
        """The node goes NotReady now and Ready again ``seconds`` later."""
        with self.lock:
            node = self.nodes[name]
            _set_condition(node, "Ready", False, self.now(), "KubeletNotReady")
            self._rv(node)
            self.node_log.append((self.now(), name, "reboot"))
            if name not in self._stays_down:
                self._later(seconds, lambda: self._node_ready(name))

    def _node_ready(self, name: str) -> None:
        node = self.nodes[name]
        _set_condition(node, "Ready", True, self.now(), "KubeletReady")
        self._rv(node)
        self.node_log.append((self.now(), name, "ready"))

    # ------------------------------------------------------------------ reading

    def pods_on(self, node: str) -> list[Obj]:
        with self.lock:
            self.tick()
            return [p for p in self.pods.values() if p["spec"].get("nodeName") == node]

    def pod(self, namespace: str, name: str) -> Obj | None:
        with self.lock:
            self.tick()
            return self.pods.get((namespace, name))

    def cordoned(self, node: str) -> bool:
        with self.lock:
            return bool(self.nodes[node]["spec"].get("unschedulable"))

    def owner_kind(self, pod: Mapping[str, Any]) -> str | None:
        ref = _controller(pod)
        return str(ref["kind"]) if ref else None

    # ------------------------------------------------------------------ pods

    def _pod_object(
        self,
        namespace: str,
        name: str,
        node: str | None,
        labels: Mapping[str, str],
        cpu: str,
        owner: Obj | None,
        *,
        ready: bool,
    ) -> Obj:
        now = self.now()
        container = {"name": "main", "image": "app", "resources": {"requests": {"cpu": cpu}}}
        spec: Obj = {"containers": [container]}
        if node:
            spec["nodeName"] = node
        metadata: Obj = {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "labels": dict(labels),
            "annotations": {},
            "creationTimestamp": _stamp(now),
        }
        if owner is not None:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner["kind"],
                    "name": owner["name"],
                    "uid": owner["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
            if owner["anti_affinity"]:
                spec["affinity"] = {
                    "podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "labelSelector": {"matchLabels": dict(owner["labels"])},
                                "topologyKey": "kubernetes.io/hostname",
                            }
                        ]
                    }
                }
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": spec,
            "status": {"phase": "Running" if ready else "Pending", "conditions": []},
        }
        _set_condition(pod, "Ready", ready, now)
        self._rv(pod)
        return pod

    def _create_pod(
        self, owner: Obj, *, node: str | None, ready: bool, name: str | None = None
    ) -> Obj:
        if name is None:
            name = f"{owner['name']}-{next(self._names):05x}"
        pod = self._pod_object(
            owner["namespace"], name, node, owner["labels"], owner["cpu"], owner, ready=ready
        )
        if owner.get("volumes"):
            pod["spec"]["volumes"] = copy.deepcopy(owner["volumes"])
        if owner.get("tolerations"):
            pod["spec"]["tolerations"] = copy.deepcopy(owner["tolerations"])
        if owner.get("node_selector"):
            pod["spec"]["nodeSelector"] = dict(owner["node_selector"])
        self.pods[(owner["namespace"], name)] = pod
        return pod

    def healthy(self, pod: Mapping[str, Any]) -> bool:
        return not pod["metadata"].get("deletionTimestamp") and _ready(pod)

    def terminate(self, pod: Obj) -> None:
        """Start deleting a pod: it is gone after the grace period, and its
        controller replaces it."""
        if pod["metadata"].get("deletionTimestamp"):
            return
        now = self.now()
        pod["metadata"]["deletionTimestamp"] = _stamp(now + timedelta(seconds=self.grace_seconds))
        pod["metadata"]["deletionGracePeriodSeconds"] = int(self.grace_seconds)
        _set_condition(pod, "Ready", False, now, "Terminating")
        self._rv(pod)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        uid = pod["metadata"]["uid"]
        ref = _controller(pod)
        owner = self._owners.get(ref["uid"]) if ref else None

        def gone() -> None:
            current = self.pods.get(key)
            if current is not None and current["metadata"]["uid"] == uid:
                del self.pods[key]
            if owner is not None and owner["kind"] == "StatefulSet":
                self._later(self.controller_seconds, lambda: self._replace(owner, key[1]))

        self._later(self.grace_seconds, gone)
        if owner is not None and owner["kind"] == "ReplicaSet":
            self._later(self.controller_seconds, lambda: self._replace(owner, None))

    def _replace(self, owner: Obj, name: str | None) -> None:
        pod = self._create_pod(owner, node=None, ready=False, name=name)
        self._schedule(pod)

    def _schedule(self, pod: Obj) -> None:
        """Bind a pending pod as kube-scheduler would (its default profile, see
        :mod:`fenix_core.kube_scheduling`). Filters: the node is schedulable
        and Ready, the pod tolerates its NoSchedule / NoExecute taints, its
        labels match the pod's ``nodeSelector``, the pod's required
        anti-affinity is kept, and its CPU and memory requests fit in what the
        node's pods leave of its allocatable. Scores: TaintToleration
        (untolerated PreferNoSchedule taints), LeastAllocated and
        BalancedAllocation; the first name among equals. Try again later when
        no node is left."""
        if (pod["metadata"]["namespace"], pod["metadata"]["name"]) not in self.pods:
            return
        tolerations = pod["spec"].get("tolerations") or ()
        wanted = requests_of(pod["spec"])
        feasible: list[Candidate] = []
        for name, node in sorted(self.nodes.items()):
            if node["spec"].get("unschedulable") or not _ready(node):
                continue
            taints = node["spec"].get("taints") or ()
            if any(
                t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(t, tolerations)
                for t in taints
            ):
                continue
            if not _node_selected(pod, node):
                continue
            here = [p for p in self.pods.values() if p["spec"].get("nodeName") == name]
            if self._repelled(pod, here):
                continue
            cpu_m, memory = _allocatable(node)
            used = sum((requests_of(p["spec"]) for p in _running(here)), Requests())
            if used.cpu_m + wanted.cpu_m > cpu_m or used.memory + wanted.memory > memory:
                continue  # NodeResourcesFit's filter
            prefer_not = sum(
                1
                for t in taints
                if t.get("effect") == "PreferNoSchedule" and not tolerates(t, tolerations)
            )
            feasible.append(Candidate(name, cpu_m, memory, used, prefer_not))
        chosen = best_node(wanted, feasible)
        if chosen is None:
            self._later(self.controller_seconds, lambda: self._schedule(pod))
            return
        pod["spec"]["nodeName"] = chosen
        self._rv(pod)
        uid = pod["metadata"]["uid"]

        def started() -> None:
            if pod["metadata"]["uid"] == uid and not pod["metadata"].get("deletionTimestamp"):
                pod["status"]["phase"] = "Running"
                _set_condition(pod, "Ready", True, self.now())
                self._rv(pod)

        self._later(self.startup_seconds, started)

    @staticmethod
    def _repelled(pod: Mapping[str, Any], neighbours: Iterable[Mapping[str, Any]]) -> bool:
        affinity = pod["spec"].get("affinity", {}).get("podAntiAffinity", {})
        for term in affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or ():
            if term.get("topologyKey") != "kubernetes.io/hostname":
                continue
            for other in neighbours:
                if other["metadata"]["namespace"] == pod["metadata"]["namespace"] and (
                    selector_matches(term.get("labelSelector"), other["metadata"]["labels"])
                ):
                    return True
        return False

    def delete_pod(self, namespace: str, name: str) -> Obj:
        with self.lock:
            self.tick()
            pod = self._get_pod(namespace, name)
            self.deletions.append((self.now(), namespace, name))
            self.terminate(pod)
            return pod

    def _get_pod(self, namespace: str, name: str) -> Obj:
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        return pod

    # ------------------------------------------------------------------ budgets

    def budget_status(self, pdb: Mapping[str, Any]) -> Obj:
        """The status the disruption controller would report now."""
        namespace = pdb["metadata"]["namespace"]
        selected = [
            p
            for p in self.pods.values()
            if p["metadata"]["namespace"] == namespace
            and selector_matches(pdb["spec"].get("selector"), p["metadata"].get("labels") or {})
        ]
        owners: set[str] = set()
        expected = 0
        for pod in selected:
            ref = _controller(pod)
            owner = self._owners.get(ref["uid"]) if ref else None
            if owner is None:
                expected += 1
            elif owner["uid"] not in owners:
                owners.add(owner["uid"])
                expected += int(owner["replicas"])
        healthy = sum(1 for p in selected if self.healthy(p))
        desired = desired_healthy(pdb["spec"], expected)
        allowed = max(0, healthy - desired)
        until = self._blocked.get((namespace, pdb["metadata"]["name"]))
        if until is not None and self.now() < until:
            desired, allowed = max(desired, healthy), 0
        return {
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "disruptionsAllowed": allowed,
            "expectedPods": expected,
            "observedGeneration": 1,
        }

    def pdb_with_status(self, pdb: Mapping[str, Any]) -> Obj:
        shown = copy.deepcopy(dict(pdb))
        shown["status"] = self.budget_status(pdb)
        return shown

    def evict(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """The eviction subresource: grant (terminate the pod) or raise ApiError."""
        with self.lock:
            self.tick()
            pod = self.pods.get((namespace, name))
            if pod is None:
                self._log(namespace, name, None, 404, False)
                raise ApiError(404, "NotFound", f'pods "{name}" not found')
            uid = ((body.get("deleteOptions") or {}).get("preconditions") or {}).get("uid")
            if uid and uid != pod["metadata"]["uid"]:
                self._log(namespace, name, pod, 409, self.healthy(pod))
                raise ApiError(
                    409,
                    "Conflict",
                    f"Precondition failed: UID in precondition: {uid}, "
                    f"UID in object meta: {pod['metadata']['uid']}",
                )
            self._evict(namespace, name, pod)

    def _evict(self, namespace: str, name: str, pod: Obj) -> None:
        healthy = self.healthy(pod)
        if "kubernetes.io/config.mirror" in pod["metadata"].get("annotations", {}):
            # The real apiserver would delete the mirror pod and the kubelet would
            # post it again at once, the static pod never stopping: an eviction
            # that disrupts nothing it promises to. kubectl drain never tries
            # ("mirror pods cannot be deleted through the API server"); the fake
            # refuses, so that a test sees a driver that does.
            self._log(namespace, name, pod, 400, healthy)
            raise ApiError(
                400,
                "BadRequest",
                f"pod {namespace}/{name} is the mirror of a static pod: it is the "
                "kubelet's, and cannot be evicted through the API",
            )
        if pod["metadata"].get("deletionTimestamp") or pod["status"].get("phase") != "Running":
            # Terminating, pending or finished: evicted without budget checks.
            self._log(namespace, name, pod, 201, healthy)
            self.terminate(pod)
            return
        labels = pod["metadata"].get("labels") or {}
        budgets = [
            b
            for (ns, _), b in sorted(self.pdbs.items())
            if ns == namespace and selector_matches(b["spec"].get("selector"), labels)
        ]
        if len(budgets) > 1:
            self._log(namespace, name, pod, 500, healthy)
            raise ApiError(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction "
                "subresource does not support.",
            )
        if not budgets:
            self._log(namespace, name, pod, 201, healthy)
            self.terminate(pod)
            return
        pdb = budgets[0]
        status = self.budget_status(pdb)
        if healthy:
            granted = status["disruptionsAllowed"] > 0
        else:
            policy = pdb["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
            granted = policy == "AlwaysAllow" or (
                status["currentHealthy"] >= status["desiredHealthy"]
            )
        code = 201 if granted else 429
        self._log(namespace, name, pod, code, healthy, pdb, status)
        if not granted:
            pdb_name = pdb["metadata"]["name"]
            raise ApiError(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                [
                    {
                        "reason": "DisruptionBudget",
                        "message": f"The disruption budget {pdb_name} needs "
                        f"{status['desiredHealthy']} healthy pods and has "
                        f"{status['currentHealthy']} currently",
                    }
                ],
            )
        self.terminate(pod)

    def _log(
        self,
        namespace: str,
        name: str,
        pod: Mapping[str, Any] | None,
        code: int,
        healthy: bool,
        pdb: Mapping[str, Any] | None = None,
        status: Mapping[str, int] | None = None,
    ) -> None:
        record = EvictionRecord(
            time=self.now(),
            namespace=namespace,
            pod=name,
            node=pod["spec"].get("nodeName") if pod else None,
            code=code,
            pod_was_healthy=healthy,
        )
        if pdb is not None and status is not None:
            current = status["currentHealthy"]
            record = attrs.evolve(
                record,
                budget=f"{pdb['metadata']['namespace']}/{pdb['metadata']['name']}",
                spec=copy.deepcopy(dict(pdb["spec"])),
                expected_pods=status["expectedPods"],
                current_healthy=current,
                desired_healthy=status["desiredHealthy"],
                disruptions_allowed=status["disruptionsAllowed"],
                healthy_after=current - 1 if (healthy and code == 201) else current,
            )
        self.evictions.append(record)

    def budget_violations(self) -> list[EvictionRecord]:
        """Granted evictions that left a budget with fewer healthy pods than it
        requires, recomputed from each record's spec and counts."""
        bad = []
        for record in self.evictions:
            if record.code != 201 or record.budget is None or not record.pod_was_healthy:
                continue
            needed = desired_healthy(record.spec, record.expected_pods)
            if record.healthy_after < needed:
                bad.append(record)
        return bad

    # ------------------------------------------------------------------ nodes

    def node_changed(self, name: str, before: Mapping[str, Any]) -> None:
        """Record cordon / uncordon after a patch of the node's spec."""
        node = self.nodes[name]
        was, now = bool(before.get("unschedulable")), bool(node["spec"].get("unschedulable"))
        if was != now:
            self.node_log.append((self.now(), name, "cordon" if now else "uncordon"))
        self._rv(node)

    def add_event(self, namespace: str, event: Obj) -> Obj:
        with self.lock:
            stored = copy.deepcopy(event)
            meta = stored.setdefault("metadata", {})
            meta["namespace"] = namespace
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise ApiError(422, "Invalid", "Event: metadata.name: Required value")
                meta["name"] = f"{meta['generateName']}{next(self._names):05x}"
            if any(
                e["metadata"]["namespace"] == namespace and e["metadata"]["name"] == meta["name"]
                for e in self.events
            ):
                raise ApiError(409, "AlreadyExists", f'events "{meta["name"]}" already exists')
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _stamp(self.now())
            stored.setdefault("apiVersion", "v1")
            stored.setdefault("kind", "Event")
            self._rv(stored)
            self.events.append(stored)
            return stored
