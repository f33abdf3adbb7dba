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
  members on the host), never a refusal;
* ``host-types``: the members may go to hosts of the types ``host_types``
  (their placement classes) instead of their own host's type only: a
  Kubernetes pod that tolerates the control-plane taint may land on workers
  and control-plane nodes alike (the Kubernetes driver's rules
  ``kube-scheduler:<types>``); Nova's server groups never widen a class.

These are not ETSI group constraints: they limit where an instance goes, not
how many members are impacted at once (see docs/constraints.md). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import InvalidInput
from .model import _as_mapping, _int, _str, _unknown_keys

__all__ = ["HARD_POLICIES", "HOST_TYPES", "POLICIES", "HostLimits", "PlacementRule", "host_limits"]

#: Nova's server-group policies.
POLICIES = ("anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity")
HARD_POLICIES = ("anti-affinity", "affinity")
#: The members' placement classes (host types), when not only their host's.
HOST_TYPES = "host-types"
_ALL_POLICIES = (*POLICIES, HOST_TYPES)
_TYPES = ("compute", "controller")


def _policy(value: object, field: str) -> None:
    if value not in _ALL_POLICIES:
        raise InvalidInput(field, f"must be one of {', '.join(_ALL_POLICIES)}, got {value!r}")


def _host_types(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput("host_types", f"expected a list of host types, got {value!r}")
    found = tuple(value)
    for item in found:
        if item not in _TYPES:
            raise InvalidInput("host_types", f"must be compute or controller, got {item!r}")
    return tuple(sorted(set(found)))


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
    #: ``host-types`` only: the host types the members may go to
    host_types: tuple[str, ...] = attrs.field(default=(), converter=_host_types)

    _FIELDS = ("group_id", "policy", "members", "max_per_host", "name", "host_types")

    def __attrs_post_init__(self) -> None:
        if self.policy == HOST_TYPES and not self.host_types:
            raise InvalidInput("host_types", "a host-types rule names at least one host type")
        if self.policy != HOST_TYPES and self.host_types:
            raise InvalidInput("host_types", f"only a {HOST_TYPES} rule has host types")

    @classmethod
    def from_dict(cls, data: object) -> PlacementRule:
        mapping = _as_mapping(data, "placement rule")
        _unknown_keys(mapping, cls._FIELDS)
        for name in ("group_id", "policy", "members"):
            if mapping.get(name) is None:
                raise InvalidInput(name, "missing")
        return cls(**{k: v for k, v in mapping.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "group_id": self.group_id,
            "policy": self.policy,
            "members": list(self.members),
            "max_per_host": self.max_per_host,
            "name": self.name,
        }
        if self.host_types:
            out["host_types"] = list(self.host_types)
        return out

    def label(self) -> str:
        if self.policy == HOST_TYPES:
            return f"placement rule {self.group_id} (to {' or '.join(self.host_types)} hosts)"
        return f"{self.policy} server group {self.group_id}" + (
            f" ({self.name})" if self.name and self.name != self.group_id else ""
        )


@attrs.frozen
class HostLimits:
    """Where one instance may go under its rules.

    ``avoid``: hosts a hard rule forbids; ``only``: the hosts it must go to
    (None: any); ``penalty``: soft preference per host (lower is better);
    ``stuck``: the affinity rule that leaves it no host at all; ``types``:
    the host types it may go to (None: its own host's type, the default
    placement class).
    """

    avoid: frozenset[str] = frozenset()
    only: frozenset[str] | None = None
    penalty: Mapping[str, int] = attrs.field(factory=dict)
    rules: tuple[PlacementRule, ...] = ()
    stuck: PlacementRule | None = None
    types: frozenset[str] | None = None

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
    types: frozenset[str] | None = None
    for rule in rules:
        if instance_id not in rule.members:
            continue
        mine.append(rule)
        if rule.policy == HOST_TYPES:
            found = frozenset(rule.host_types)
            types = found if types is None else types & found
            continue
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
        types=types,
    )
