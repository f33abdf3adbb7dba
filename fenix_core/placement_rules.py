"""The cloud's placement rules: where its scheduler lets an instance go.

Clouds enforce some rules on every move, whatever the workflow: Nova runs
its server-group filters on a requested host too (from microversion 2.30,
unless forced), so a target that breaks them is refused. A driver reports
them through :class:`~fenix_core.hookspecs.ConstraintSource` as
:class:`PlacementRule` values in
:attr:`~fenix_core.constraints.CloudConstraints.placement`; the rolling
workflow keeps them when it picks a target (the constrained workflow keeps
anti-affinity through its ETSI group constraints):

* ``anti-affinity``: at most ``max_per_host`` members (default 1) on a host;
* ``affinity``: a member may only go to a host that holds a member of the
  group, its own host included (Nova's ServerGroupAffinityFilter), so a
  member never leaves the others and the engine cannot move it at all;
* ``soft-anti-affinity`` / ``soft-affinity``: preferences (fewest / most
  members on the host), never a refusal.

These are not ETSI group constraints: they limit where an instance goes, not
how many members are impacted at once (see docs/constraints.md). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import InvalidInput
from .model import _as_mapping, _int, _str, _unknown_keys

__all__ = ["HARD_POLICIES", "POLICIES", "HostLimits", "PlacementRule", "host_limits"]

POLICIES = ("anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity")
HARD_POLICIES = ("anti-affinity", "affinity")


def _policy(value: object, field: str) -> None:
    if value not in POLICIES:
        raise InvalidInput(field, f"must be one of {', '.join(POLICIES)}, got {value!r}")


def _members(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput("members", f"expected a list of instance ids, got {value!r}")
    return tuple(_str(m, "members") for m in value)


@attrs.frozen
class PlacementRule:
    """One server group as the cloud's scheduler applies it."""

    group_id: str = attrs.field(validator=lambda _i, _a, v: _str(v, "group_id"))
    policy: str = attrs.field(validator=lambda _i, _a, v: _policy(v, "policy"))
    members: tuple[str, ...] = attrs.field(converter=_members)
    max_per_host: int = attrs.field(
        default=1, validator=lambda _i, _a, v: _int(v, "max_per_host", minimum=1, maximum=10**6)
    )
    name: str = attrs.field(default="", validator=lambda _i, _a, v: _str(v, "name", empty=True))

    _FIELDS = ("group_id", "policy", "members", "max_per_host", "name")

    @classmethod
    def from_dict(cls, data: object) -> PlacementRule:
        mapping = _as_mapping(data, "placement rule")
        _unknown_keys(mapping, cls._FIELDS)
        for name in ("group_id", "policy", "members"):
            if mapping.get(name) is None:
                raise InvalidInput(name, "missing")
        return cls(**{k: v for k, v in mapping.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "policy": self.policy,
            "members": list(self.members),
            "max_per_host": self.max_per_host,
            "name": self.name,
        }

    def label(self) -> str:
        return f"{self.policy} server group {self.group_id}" + (
            f" ({self.name})" if self.name and self.name != self.group_id else ""
        )


@attrs.frozen
class HostLimits:
    """Where one instance may go under its rules.

    ``avoid``: hosts a hard rule forbids; ``only``: the hosts it must go to
    (None: any); ``penalty``: soft preference per host (lower is better);
    ``stuck``: the affinity rule that leaves it no host at all.
    """

    avoid: frozenset[str] = frozenset()
    only: frozenset[str] | None = None
    penalty: Mapping[str, int] = attrs.field(factory=dict)
    rules: tuple[PlacementRule, ...] = ()
    stuck: PlacementRule | None = None

    def allows(self, host: str) -> bool:
        return host not in self.avoid and (self.only is None or host in self.only)


def host_limits(
    instance_id: str,
    rules: Iterable[PlacementRule],
    where: Mapping[str, Iterable[str]],
) -> HostLimits:
    """The limits on ``instance_id``'s next host.

    ``where`` maps each instance to the hosts it occupies now: its host, and
    the target of a move in flight (the cloud counts an arrival as there).
    Members unknown to ``where`` are ignored.
    """
    own = set(where.get(instance_id, ()))
    avoid: set[str] = set()
    only: set[str] | None = None
    penalty: dict[str, int] = {}
    mine: list[PlacementRule] = []
    stuck: PlacementRule | None = None
    for rule in rules:
        if instance_id not in rule.members:
            continue
        mine.append(rule)
        counts: dict[str, int] = {}
        for member in rule.members:
            if member == instance_id:
                continue
            for host in set(where.get(member, ())):
                counts[host] = counts.get(host, 0) + 1
        if rule.policy == "anti-affinity":
            avoid |= {h for h, n in counts.items() if n >= rule.max_per_host}
        elif rule.policy == "affinity":
            allowed = set(counts) - own
            only = allowed if only is None else only & allowed
            if not allowed:
                stuck = rule
        else:
            sign = 1 if rule.policy == "soft-anti-affinity" else -1
            for host, n in counts.items():
                penalty[host] = penalty.get(host, 0) + sign * n
    return HostLimits(
        avoid=frozenset(avoid),
        only=None if only is None else frozenset(only),
        penalty=penalty,
        rules=tuple(mine),
        stuck=stuck,
    )
