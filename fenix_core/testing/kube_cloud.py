"""``KubeScheduledCloud``: a simulated cloud whose scheduler is kube-scheduler's.

On Kubernetes the workflow does not choose where a moved instance goes: an
eviction names no target, and the replacement pod lands where kube-scheduler
puts it. A plan from a cluster snapshot runs on this cloud so that each move
lands there too: the target the workflow asked for is ignored, and the
instance goes to the node :func:`fenix_core.kube_scheduling.best_node` picks
among those that pass the filters (enabled, i.e. not cordoned; the pod
tolerates the node's lasting taints and matches its ``nodeSelector``; the
server-group rules of :class:`~fenix_core.testing.PlacedCloud`; room for the
pod's CPU and memory requests next to what the node's pods, those that stay
and the instances there or on their way, request). The scores count the
``fenix-core/queued`` ``PreferNoSchedule`` taint on the nodes a session still
has to maintain, as the Kubernetes driver puts it: this cloud is a
:class:`~fenix_core.hookspecs.HostQueue` too, and keeps the queued set the
engine sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import TargetRefused
from ..kube_scheduling import (
    DEFAULT_MEMORY_REQUEST,
    QUEUED_TAINT_KEY,
    Candidate,
    ClusterScheduling,
    NodeInputs,
    PodInputs,
    Requests,
    best_node,
)
from ..placement_rules import HostLimits, host_limits
from .placed_cloud import PlacedCloud

__all__ = ["KubeScheduledCloud"]


class KubeScheduledCloud(PlacedCloud):
    """``KubeScheduledCloud(scheduling=ClusterScheduling(...), **PlacedCloud options)``."""

    def __init__(self, *args: Any, scheduling: ClusterScheduling, **kwargs: Any) -> None:
        self.scheduling = scheduling  # before the indexes are built
        super().__init__(*args, **kwargs)
        self._queued: dict[str, set[str]] = {}  # session id -> its queued hosts

    # ------------------------------------------------------------------ indexes

    def _clear_indexes(self) -> None:
        super()._clear_indexes()
        # What the instances on each host, and those on their way there, request.
        self._requested: dict[str, Requests] = {}

    def _count(self, host: str, instance_id: str, sign: int) -> None:
        here = self._requested.get(host, Requests())
        mine = self._pod(instance_id).requests
        self._requested[host] = here + mine if sign > 0 else here - mine

    def _place(self, instance_id: str, host: str) -> None:
        super()._place(instance_id, host)
        self._count(host, instance_id, +1)

    def _unplace(self, instance_id: str) -> None:
        host = self._instances[instance_id]["host"]
        super()._unplace(instance_id)
        self._count(host, instance_id, -1)

    def _heading(self, handle: str, sign: int) -> None:
        super()._heading(handle, sign)
        migration = self._migrations[handle]
        self._count(str(migration["target"]), migration["instance_id"], sign)

    # ------------------------------------------------------------------ steering

    def mark_queued(self, session_id: str, hosts: Sequence[str]) -> None:
        """The hosts session ``session_id`` still has to maintain (tainted)."""
        self._queued[session_id] = set(hosts)

    def host_queued(self, session_id: str, host: str, queued: bool) -> None:
        hosts = self._queued.setdefault(session_id, set())
        if queued:
            hosts.add(host)
        else:
            hosts.discard(host)

    def queued(self) -> set[str]:
        """The hosts any session still has to maintain."""
        return set().union(*self._queued.values()) if self._queued else set()

    # ------------------------------------------------------------------ moves

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        """Move the instance where kube-scheduler would put its replacement
        (``target`` is not the workflow's to choose)."""
        self._settle()
        if self._move_by_key(key) is None and instance_id in self._instances:
            target = self._scheduled(instance_id)
        return super().start_move(instance_id, action, target, key)

    def _node(self, name: str) -> NodeInputs:
        found = self.scheduling.nodes.get(name)
        return found if found is not None else NodeInputs(1000 * self.host_capacity(name), 0)

    def _pod(self, instance_id: str) -> PodInputs:
        found = self.scheduling.pods.get(instance_id)
        if found is not None:
            return found
        cpu_m = 1000 * self.size_of(instance_id)
        return PodInputs(Requests(cpu_m, 0, cpu_m, DEFAULT_MEMORY_REQUEST))

    def _scheduled(self, instance_id: str) -> str:
        pod = self._pod(instance_id)
        wanted = pod.requests
        source = self._instances[instance_id]["host"]
        limits = (
            host_limits(instance_id, self.placement, self._occupied())
            if self.placement
            else HostLimits()
        )
        queued = self.queued() if pod.steered(QUEUED_TAINT_KEY) else set()
        size = self.size_of(instance_id)
        candidates = []
        for name, host in sorted(self._hosts.items()):
            node = self._node(name)
            if (
                name == source
                or not host["enabled"]
                or not pod.may_run_on(node, host["labels"])
                or not limits.allows(name)
                or self.free_vcpus(name) < size
            ):
                continue
            used = node.stays + self._requested.get(name, Requests())
            if used.cpu_m + wanted.cpu_m > node.cpu_m or used.memory + wanted.memory > node.memory:
                continue
            candidates.append(
                Candidate(name, node.cpu_m, node.memory, used, 1 if name in queued else 0)
            )
        chosen = best_node(wanted, candidates)
        if chosen is None:
            raise TargetRefused(
                f"no valid node for {instance_id}: none passes kube-scheduler's filters",
                instance_id=instance_id,
            )
        return chosen
