"""Where kube-scheduler puts a pod among the nodes that can take it (pure).

The plan of a Kubernetes cluster has to predict where each replacement pod
lands: the workflow does not choose (an eviction names no target), the
scheduler does. This module is that choice, as kube-scheduler's default
profile makes it (pkg/scheduler/framework/plugins in kubernetes/kubernetes),
for the plug-ins whose inputs a maintenance session changes:

* TaintToleration (score weight 3): each node scores its count of
  ``PreferNoSchedule`` taints the pod does not tolerate, normalized in
  reverse (``100 - 100 * count // highest count``; 100 for all when no node
  has one): the ``fenix-core/queued`` taint on the nodes a session still has
  to maintain steers replacements to the others;
* NodeResourcesFit, LeastAllocated strategy (weight 1): per resource (CPU
  and memory, weight 1 each) ``(allocatable - requested) * 100 //
  allocatable`` with the requests of the node's pods plus this one, counted
  with the scheduler's defaults for a container that requests nothing
  (100 millicores, 200 MiB: ``GetNonzeroRequests``), then averaged;
* NodeResourcesBalancedAllocation (weight 1): ``(1 - std) * 100`` of the
  requested fractions of CPU and memory (real requests, capped at 1), for
  two resources ``std = |cpu - memory| / 2``.

The highest sum wins. kube-scheduler breaks a tie at random (reservoir
sampling in ``selectHost``); here the first name wins, so the fake apiserver
and the plan agree on one answer. Not modelled, because a session does not
change their inputs: NodeAffinity and InterPodAffinity preferences,
PodTopologySpread (its system default constraints spread a set's pods over
nodes), ImageLocality. The filters (taints a pod does not tolerate, cordoned
nodes, room, required anti-affinity) are the caller's: only nodes that pass
them are scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .errors import InvalidInput

__all__ = [
    "BALANCED_WEIGHT",
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_MILLI_CPU_REQUEST",
    "FIT_WEIGHT",
    "MAX_NODE_SCORE",
    "QUEUED_TAINT_KEY",
    "TAINT_WEIGHT",
    "Candidate",
    "ClusterScheduling",
    "NodeInputs",
    "PodInputs",
    "Requests",
    "best_node",
    "lasting_taints",
    "pod_requests",
    "tolerates",
]

MAX_NODE_SCORE = 100
#: The default profile's score weights (kubescheduler.config.k8s.io/v1).
TAINT_WEIGHT = 3
FIT_WEIGHT = 1
BALANCED_WEIGHT = 1
#: The key of the ``PreferNoSchedule`` taint the Kubernetes driver puts on
#: the nodes a session still has to maintain (its value: the session id).
QUEUED_TAINT_KEY = "fenix-core/queued"
#: What the scores count for a container without a CPU / memory request.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024


@attrs.frozen
class Requests:
    """A pod's (or a node's pods') requests: ``cpu_m`` millicores and
    ``memory`` bytes as the filters count them, and ``scored_*`` as the
    LeastAllocated score counts them (defaults for what is not requested)."""

    cpu_m: int = 0
    memory: int = 0
    scored_cpu_m: int = 0
    scored_memory: int = 0

    def __add__(self, other: Requests) -> Requests:
        return Requests(
            self.cpu_m + other.cpu_m,
            self.memory + other.memory,
            self.scored_cpu_m + other.scored_cpu_m,
            self.scored_memory + other.scored_memory,
        )

    def __sub__(self, other: Requests) -> Requests:
        return Requests(
            self.cpu_m - other.cpu_m,
            self.memory - other.memory,
            self.scored_cpu_m - other.scored_cpu_m,
            self.scored_memory - other.scored_memory,
        )


def pod_requests(
    containers: Iterable[Mapping[str, int | None]],
    init_containers: Iterable[Mapping[str, int | None]] = (),
) -> Requests:
    """A pod's requests from its containers' (``{"cpu": millicores or None,
    "memory": bytes or None}``, None: not requested): the containers' sum, or
    the largest init container's if that is more, per resource."""

    def one(c: Mapping[str, int | None]) -> Requests:
        cpu, memory = c.get("cpu"), c.get("memory")
        return Requests(
            cpu or 0,
            memory or 0,
            DEFAULT_MILLI_CPU_REQUEST if cpu is None else cpu,
            DEFAULT_MEMORY_REQUEST if memory is None else memory,
        )

    total = sum((one(c) for c in containers), Requests())
    for init in (one(c) for c in init_containers):
        total = Requests(
            max(total.cpu_m, init.cpu_m),
            max(total.memory, init.memory),
            max(total.scored_cpu_m, init.scored_cpu_m),
            max(total.scored_memory, init.scored_memory),
        )
    return total


@attrs.frozen
class Candidate:
    """A node that passed the filters: what it can give, what its pods ask
    now (without the pod being placed), and its ``PreferNoSchedule`` taints
    the pod does not tolerate."""

    name: str
    cpu_m: int
    memory: int
    requested: Requests
    prefer_no_schedule: int = 0


def _least_allocated(requested: int, allocatable: int) -> int:
    if requested > allocatable:
        return 0
    return (allocatable - requested) * MAX_NODE_SCORE // allocatable


def _fit_score(node: Candidate, pod: Requests) -> int:
    scores = [
        _least_allocated(used + mine, total)
        for used, mine, total in (
            (node.requested.scored_cpu_m, pod.scored_cpu_m, node.cpu_m),
            (node.requested.scored_memory, pod.scored_memory, node.memory),
        )
        if total > 0
    ]
    return sum(scores) // len(scores) if scores else 0


def _balanced_score(node: Candidate, pod: Requests) -> int:
    fractions = [
        min(1.0, (used + mine) / total)
        for used, mine, total in (
            (node.requested.cpu_m, pod.cpu_m, node.cpu_m),
            (node.requested.memory, pod.memory, node.memory),
        )
        if total > 0
    ]
    std = abs(fractions[0] - fractions[1]) / 2 if len(fractions) == 2 else 0.0
    return int((1 - std) * MAX_NODE_SCORE)


def best_node(pod: Requests, candidates: Sequence[Candidate]) -> str | None:
    """The candidate with the highest weighted score (the first name among
    equals); None when there is none."""
    if not candidates:
        return None
    most_taints = max(c.prefer_no_schedule for c in candidates)

    def score(c: Candidate) -> int:
        taint = MAX_NODE_SCORE
        if most_taints:
            taint = MAX_NODE_SCORE - MAX_NODE_SCORE * c.prefer_no_schedule // most_taints
        return (
            TAINT_WEIGHT * taint
            + FIT_WEIGHT * _fit_score(c, pod)
            + BALANCED_WEIGHT * _balanced_score(c, pod)
        )

    return min(candidates, key=lambda c: (-score(c), c.name)).name


# --------------------------------------------------------------------------- a plan's inputs


#: Keys of taints that come and go with a node's condition or a session
#: (node.kubernetes.io/unschedulable with a cordon, not-ready ...; the
#: steering taint): not part of where a pod may ever go.
_PASSING_TAINTS = ("node.kubernetes.io/", "fenix-core/")


def tolerates(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    """Whether one of the pod's tolerations (JSON form) matches the taint: an
    empty key with ``Exists`` matches every taint, an empty effect every
    effect; ``Equal`` (the default) also compares the value."""
    for tol in tolerations:
        effect = tol.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = tol.get("key") or ""
        if tol.get("operator", "Equal") == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def lasting_taints(taints: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], ...]:
    """The node's NoSchedule / NoExecute taints that say where pods may ever
    go (a dedicated or control-plane node's), as ``{key, value, effect}``."""
    return tuple(
        {k: str(t[k]) for k in ("key", "value", "effect") if t.get(k) is not None}
        for t in taints
        if t.get("effect") in ("NoSchedule", "NoExecute")
        and not str(t.get("key", "")).startswith(_PASSING_TAINTS)
    )


def _whole(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(field, f"must be a whole number >= 0, got {value!r}")
    return value


@attrs.frozen
class NodeInputs:
    """A node as the scheduler sees it: its allocatable CPU (millicores) and
    memory (bytes), what the pods that never move (DaemonSet pods, static
    pods) request there, and its lasting NoSchedule / NoExecute taints."""

    cpu_m: int
    memory: int
    stays: Requests = Requests()
    taints: tuple[Mapping[str, str], ...] = ()


@attrs.frozen
class PodInputs:
    """A pod (an instance) as the scheduler sees it: its requests, its
    tolerations and its ``nodeSelector``."""

    requests: Requests
    tolerations: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = attrs.field(factory=dict)

    def may_run_on(self, node: NodeInputs, labels: Mapping[str, Any]) -> bool:
        """The filters that do not change during a session: it tolerates the
        node's lasting taints, and the node's labels match its nodeSelector."""
        if any(not tolerates(t, self.tolerations) for t in node.taints):
            return False
        return all(labels.get(k) == v for k, v in self.node_selector.items())

    def steered(self, taint_key: str) -> bool:
        """Whether a ``PreferNoSchedule`` taint ``taint_key`` counts against a
        node for this pod (it does not tolerate it)."""
        return not tolerates({"key": taint_key, "effect": "PreferNoSchedule"}, self.tolerations)


_REQUEST_KEYS = ("cpu_m", "memory", "scored_cpu_m", "scored_memory")


def _mapping(data: object, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidInput(where, f"expected a mapping, got {data!r}")
    return data


def _known(data: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}", "unknown field")


def _requests(data: object, where: str) -> Requests:
    found = _mapping(data, where)
    _known(found, _REQUEST_KEYS, where)
    return Requests(**{k: _whole(found.get(k, 0), f"{where}.{k}") for k in _REQUEST_KEYS})


def _maps(data: object, where: str, kinds: Any = str) -> tuple[dict[str, Any], ...]:
    """A list of flat mappings whose values are of ``kinds``."""
    if not isinstance(data, list):
        raise InvalidInput(where, f"expected a list, got {data!r}")
    out = []
    for index, item in enumerate(data):
        entry = _mapping(item, f"{where}[{index}]")
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise InvalidInput(f"{where}[{index}].{key}", f"unexpected value {value!r}")
        out.append(dict(entry))
    return tuple(out)


@attrs.frozen
class ClusterScheduling:
    """What a plan needs to place replacement pods as kube-scheduler does:
    per node and per pod (instance id) their inputs. A cluster snapshot's
    ``scheduler`` section (``kind: kubernetes``)."""

    nodes: Mapping[str, NodeInputs]
    pods: Mapping[str, PodInputs]

    def to_dict(self) -> dict[str, Any]:
        nodes: dict[str, Any] = {}
        for name, n in self.nodes.items():
            nodes[name] = {"cpu_m": n.cpu_m, "memory": n.memory, "stays": attrs.asdict(n.stays)}
            if n.taints:
                nodes[name]["taints"] = [dict(t) for t in n.taints]
        pods: dict[str, Any] = {}
        for pid, p in self.pods.items():
            pods[pid] = {"requests": attrs.asdict(p.requests)}
            if p.tolerations:
                pods[pid]["tolerations"] = [dict(t) for t in p.tolerations]
            if p.node_selector:
                pods[pid]["node_selector"] = dict(p.node_selector)
        return {"kind": "kubernetes", "nodes": nodes, "pods": pods}

    @classmethod
    def from_dict(cls, data: object, where: str = "scheduler") -> ClusterScheduling:
        found = _mapping(data, where)
        _known(found, ("kind", "nodes", "pods"), where)
        if found.get("kind") != "kubernetes":
            raise InvalidInput(f"{where}.kind", f"must be kubernetes, got {found.get('kind')!r}")
        nodes: dict[str, NodeInputs] = {}
        for name, node in _mapping(found.get("nodes") or {}, f"{where}.nodes").items():
            at = f"{where}.nodes.{name}"
            entry = _mapping(node, at)
            _known(entry, ("cpu_m", "memory", "stays", "taints"), at)
            nodes[str(name)] = NodeInputs(
                _whole(entry.get("cpu_m"), f"{at}.cpu_m"),
                _whole(entry.get("memory"), f"{at}.memory"),
                _requests(entry.get("stays", {}), f"{at}.stays"),
                _maps(entry.get("taints", []), f"{at}.taints"),
            )
        pods: dict[str, PodInputs] = {}
        for pid, pod in _mapping(found.get("pods") or {}, f"{where}.pods").items():
            at = f"{where}.pods.{pid}"
            entry = _mapping(pod, at)
            _known(entry, ("requests", "tolerations", "node_selector"), at)
            selector = _mapping(entry.get("node_selector", {}), f"{at}.node_selector")
            for key, value in selector.items():
                if not isinstance(value, str):
                    raise InvalidInput(
                        f"{at}.node_selector.{key}", f"expected a string, got {value!r}"
                    )
            pods[str(pid)] = PodInputs(
                _requests(entry.get("requests", {}), f"{at}.requests"),
                _maps(entry.get("tolerations", []), f"{at}.tolerations", (str, int)),
                dict(selector),
            )
        return cls(nodes, pods)
