"""``PlacedCloud``: a simulated cloud whose scheduler keeps server-group rules.

A :class:`~fenix_core.testing.SimulatedCloud` that does what Nova does with
server groups (see :mod:`fenix_core.placement_rules`):
a move whose target breaks a hard rule (``anti-affinity`` with its
``max_per_host``, ``affinity``) is refused with "no valid host" (TargetRefused,
as Nova answers HTTP 400), also when
the target was requested; without a requested target the scheduler picks the
allowed host with the most free vcpus. The rules are reported to the engine
as the cloud's placement rules (it is a
:class:`~fenix_core.hookspecs.ConstraintSource`), as the OpenStack driver
reports server groups, so that the rolling workflow plans around them.
Scenarios with a ``placement`` section run on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..constraints import CloudConstraints
from ..errors import TargetRefused
from ..model import Instance
from ..placement_rules import PlacementRule, host_limits
from .cloud import SimulatedCloud

__all__ = ["PlacedCloud"]


class PlacedCloud(SimulatedCloud):
    """``PlacedCloud(placement=[PlacementRule(...)], **SimulatedCloud options)``."""

    def __init__(self, *args: Any, placement: Iterable[PlacementRule] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.placement = tuple(placement)

    def cloud_constraints(self, instances: Sequence[Instance]) -> CloudConstraints:
        """The rules with a member among ``instances`` (as the OpenStack driver)."""
        ids = {i.instance_id for i in instances}
        return CloudConstraints(placement=tuple(r for r in self.placement if ids & set(r.members)))

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        self._settle()
        if self.placement and self._move_by_key(key) is None and instance_id in self._instances:
            where = self._occupied()
            limits = host_limits(instance_id, self.placement, where)
            if limits.stuck is not None:
                raise TargetRefused(
                    f"no valid host for {instance_id}: {limits.stuck.label()} keeps it where it is",
                    instance_id=instance_id,
                )
            if target is None:
                target = self._allowed_target(instance_id, limits.allows, limits.types)
                if target is None:
                    raise TargetRefused(
                        f"no valid host for {instance_id}: no enabled host with room "
                        "keeps its server groups' rules",
                        instance_id=instance_id,
                    )
            elif limits.types is not None and self._hosts.get(target, {}).get("type") not in (
                limits.types
            ):
                raise TargetRefused(
                    f"no valid host: {target} is not a {' or '.join(sorted(limits.types))} host, "
                    f"where {instance_id} may go",
                    instance_id=instance_id,
                    host=target,
                )
            elif not limits.allows(target):
                broken = next(
                    r
                    for r in limits.rules
                    if not host_limits(instance_id, [r], where).allows(target)
                )
                raise TargetRefused(
                    f"no valid host: {target} breaks the {broken.label()} of {instance_id}",
                    instance_id=instance_id,
                    host=target,
                )
        return super().start_move(instance_id, action, target, key)

    def _occupied(self) -> dict[str, set[str]]:
        """Each instance's host, plus the target of its move in flight."""
        where = {i: {str(d["host"])} for i, d in self._instances.items()}
        for instance_id, handle in self._running.items():
            if instance_id in where:
                where[instance_id].add(str(self._migrations[handle]["target"]))
        return where

    def _allowed_target(
        self, instance_id: str, allows: Any, types: frozenset[str] | None = None
    ) -> str | None:
        source = self._instances[instance_id]["host"]
        vcpus = int(self._instances[instance_id]["vcpus"])
        fits = [
            (self.free_vcpus(name), name)
            for name, host in self._hosts.items()
            if name != source
            and host["enabled"]
            and host["type"] in (types or ("compute",))
            and allows(name)
            and self.free_vcpus(name) >= vcpus
        ]
        return max(fits)[1] if fits else None
