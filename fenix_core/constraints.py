"""ETSI instance and instance-group constraints (NFV-IFA 005/006/007 style).

Managers set them through
:meth:`~fenix_core.engine.Engine.set_group_constraints` and
:meth:`~fenix_core.engine.Engine.set_instance_constraints` at any time, also
while a session runs; the constrained workflow reads the current values at
each decision. Cloud drivers may offer defaults (OpenStack anti-affinity
server groups, Kubernetes PodDisruptionBudgets) through
:class:`~fenix_core.hookspecs.ConstraintSource`; constraints set through the
API win over them, group by group and instance by instance.

Both classes accept the Fenix JSON field names through ``from_dict`` and
validate every field, raising :class:`~fenix_core.errors.InvalidInput` that
names it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .errors import InvalidInput
from .model import _as_mapping, _check_bool, _int, _str, _unknown_keys
from .placement_rules import PlacementRule

__all__ = [
    "COLD_MIGRATION_INTERRUPTION",
    "DEFAULT_GROUP",
    "MIGRATION_TYPES",
    "MIGRATION_TYPE_ALIASES",
    "CloudConstraints",
    "ConstraintSet",
    "GroupConstraints",
    "InstanceConstraints",
    "implicit_group_id",
    "merge_cloud_dicts",
    "move_action",
]

#: ``migration_type`` values: how an instance may be moved off its host.
MIGRATION_TYPES = ("LIVE_MIGRATE", "MIGRATE", "OWN_ACTION", "EVICT")
#: Names older clients send (the OPNFV Doctor VNFM, early Fenix) for the same
#: ``migration_type``; stored under the name they stand for.
MIGRATION_TYPE_ALIASES = {"MIGRATION": "MIGRATE", "LIVE_MIGRATION": "LIVE_MIGRATE"}

_MAX_SECONDS = 10 * 365 * 24 * 3600


def _canonical_migration_type(value: Any) -> Any:
    return MIGRATION_TYPE_ALIASES.get(value, value) if isinstance(value, str) else value


def _opt_seconds(value: object, field: str) -> int | None:
    if value is None:
        return None
    return _int(value, field, minimum=0, maximum=_MAX_SECONDS)


def _opt_str(value: object, field: str) -> str | None:
    if value is None:
        return None
    return _str(value, field)


def _whole_seconds(value: object, field: str) -> int:
    return _int(value, field, minimum=0, maximum=_MAX_SECONDS)


def _text(value: object, field: str) -> str:
    return _str(value, field, empty=True)


def _count(value: object, field: str) -> int:
    return _int(value, field, minimum=0, maximum=10_000)


def _positive(value: object, field: str) -> int:
    return _int(value, field, minimum=1, maximum=10**6)


def _check(field: str, check: Any) -> Any:
    """An attrs validator running ``check(value, field)``, which raises InvalidInput."""

    def validator(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
        check(value, field)

    return validator


def _fields(
    data: object, what: str, known: tuple[str, ...], required: tuple[str, ...]
) -> dict[str, Any]:
    """The keyword arguments of a Fenix-style dict: known fields only, the
    required ones present; a null optional field means its default."""
    mapping = _as_mapping(data, what)
    _unknown_keys(mapping, known)
    for name in required:
        if mapping.get(name) is None:
            raise InvalidInput(name, "missing")
    return {k: v for k, v in mapping.items() if v is not None}


def implicit_group_id(project_id: str) -> str:
    """The id of the group that a project's unconstrained instances form."""
    return f"project:{project_id}"


@attrs.frozen
class GroupConstraints:
    """Rules for a group of instances of one project (a VNF component, a tier).

    * ``max_impacted_members``: at most this many members are impacted at once.
      A member is impacted from the start of its move (or its manager's own
      action) until ``recovery_time`` after the move ended; members still
      running on a host that is being emptied are not (they are untouched
      until their own move starts, which waits for the group's budget);
    * ``recovery_time``: seconds after a member's move completed before it
      counts as unimpacted again;
    * ``anti_affinity_group``: no two members on one host, including targets;
    * ``max_instances_per_host``: at most this many members on one host
      (0: no limit);
    * ``resource_mitigation``: the project accepts reduced resources meanwhile.
    """

    group_id: str = attrs.field(validator=lambda _i, _a, v: _str(v, "group_id"))
    project_id: str = attrs.field(validator=lambda _i, _a, v: _str(v, "project_id"))
    group_name: str = attrs.field(default="", validator=_check("group_name", _text))
    anti_affinity_group: bool = attrs.field(
        default=False, validator=lambda _i, _a, v: _check_bool(v, "anti_affinity_group")
    )
    max_instances_per_host: int = attrs.field(
        default=0, validator=_check("max_instances_per_host", _count)
    )
    max_impacted_members: int = attrs.field(
        default=1, validator=_check("max_impacted_members", _positive)
    )
    recovery_time: int = attrs.field(default=0, validator=_check("recovery_time", _whole_seconds))
    resource_mitigation: bool = attrs.field(
        default=False, validator=lambda _i, _a, v: _check_bool(v, "resource_mitigation")
    )

    _FIELDS = (
        "group_id",
        "project_id",
        "group_name",
        "anti_affinity_group",
        "max_instances_per_host",
        "max_impacted_members",
        "recovery_time",
        "resource_mitigation",
    )

    @classmethod
    def from_dict(cls, data: object) -> GroupConstraints:
        """Build from a Fenix-style dict; unknown or mistyped fields raise InvalidInput."""
        if isinstance(data, GroupConstraints):
            return data
        return cls(**_fields(data, "group", cls._FIELDS, ("group_id", "project_id")))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._FIELDS}


@attrs.frozen
class InstanceConstraints:
    """Rules for one instance.

    * ``group_id``: the group it belongs to (``None``: the project's implicit
      group, see :data:`DEFAULT_GROUP`);
    * ``migration_type``: how it may be moved (``None``: as the cloud prefers);
    * ``max_interruption_time``: seconds of interruption it tolerates; a
      cold migration is only chosen when the cloud's estimate fits;
    * ``lead_time``: seconds of notice the project needs before actions start;
    * ``resource_mitigation``: as for groups.
    """

    instance_id: str = attrs.field(validator=lambda _i, _a, v: _str(v, "instance_id"))
    project_id: str = attrs.field(validator=lambda _i, _a, v: _str(v, "project_id"))
    group_id: str | None = attrs.field(default=None, validator=_check("group_id", _opt_str))
    instance_name: str = attrs.field(
        default="", validator=lambda _i, _a, v: _str(v, "instance_name", empty=True)
    )
    max_interruption_time: int | None = attrs.field(
        default=None, validator=lambda _i, _a, v: _opt_seconds(v, "max_interruption_time")
    )
    migration_type: str | None = attrs.field(default=None, converter=_canonical_migration_type)
    resource_mitigation: bool = attrs.field(
        default=False, validator=lambda _i, _a, v: _check_bool(v, "resource_mitigation")
    )
    lead_time: int = attrs.field(default=0, validator=_check("lead_time", _whole_seconds))

    @migration_type.validator
    def _check_migration_type(self, _attr: attrs.Attribute[Any], value: object) -> None:
        if value is not None and value not in MIGRATION_TYPES:
            raise InvalidInput(
                "migration_type",
                f"must be one of {', '.join(MIGRATION_TYPES)} "
                f"(or {', '.join(MIGRATION_TYPE_ALIASES)}), got {value!r}",
            )

    _FIELDS = (
        "instance_id",
        "project_id",
        "group_id",
        "instance_name",
        "max_interruption_time",
        "migration_type",
        "resource_mitigation",
        "lead_time",
    )

    @classmethod
    def from_dict(cls, data: object) -> InstanceConstraints:
        """Build from a Fenix-style dict; unknown or mistyped fields raise InvalidInput."""
        if isinstance(data, InstanceConstraints):
            return data
        return cls(**_fields(data, "instance", cls._FIELDS, ("instance_id", "project_id")))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._FIELDS}


#: The rules of a project's implicit group (its unconstrained instances):
#: one impacted at a time, as Fenix's default workflow did.
DEFAULT_GROUP: Mapping[str, Any] = {
    "max_impacted_members": 1,
    "recovery_time": 0,
    "anti_affinity_group": False,
    "max_instances_per_host": 0,
}


@attrs.frozen
class CloudConstraints:
    """Constraints a cloud derives from its own objects (see ConstraintSource).

    ``groups`` are default group constraints; ``members`` maps instance ids to
    the id of one of those groups. API-set constraints win: an instance with
    its own :class:`InstanceConstraints` keeps its group, and a group id set
    through the API replaces the cloud's group of that id.

    ``placement`` are the rules the cloud's scheduler enforces on every move
    (server groups of every policy, see :mod:`fenix_core.placement_rules`):
    the rolling workflow keeps them when it picks a target, and nothing set
    through the API relaxes them, since the cloud would refuse the move anyway.
    """

    groups: tuple[GroupConstraints, ...] = ()
    members: Mapping[str, str] = attrs.field(factory=dict)
    placement: tuple[PlacementRule, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CloudConstraints:
        """Read back what a session stored (``operations.cloud_constraints_dict``)."""
        if not data:
            return cls()
        return cls(
            groups=tuple(GroupConstraints.from_dict(g) for g in data.get("groups", ())),
            members=dict(data.get("members", {})),
            placement=tuple(PlacementRule.from_dict(r) for r in data.get("placement", ())),
        )


#: How a ConstraintSet keys the constraints set through the API:
#: ``(project_id, group_id)`` / ``(project_id, instance_id)``.
Key = tuple[str, str]


@attrs.frozen
class ConstraintSet:
    """The constraints in force at one decision, resolved per instance.

    ``groups`` / ``instances`` are those set through the API, keyed by
    ``(project_id, group_id)`` / ``(project_id, instance_id)``: an instance
    only gets the constraints stored under the project the cloud reports for
    it, so a row another project wrote for it is ignored. ``cloud`` holds the
    cloud's defaults for the session (its groups name their owner; an API
    group whose id is another project's cloud group is ignored);
    ``default_group`` the rules of a project's implicit group. Pure: workflows
    and the planner read it, nothing writes through it.
    """

    groups: Mapping[Key, GroupConstraints] = attrs.field(factory=dict)
    instances: Mapping[Key, InstanceConstraints] = attrs.field(factory=dict)
    cloud: CloudConstraints = attrs.field(factory=CloudConstraints)
    default_group: Mapping[str, Any] = DEFAULT_GROUP
    _cloud_groups: dict[str, GroupConstraints] = attrs.field(init=False, factory=dict)
    _implicit: dict[str, GroupConstraints] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._cloud_groups.update({g.group_id: g for g in self.cloud.groups})

    @classmethod
    def of(
        cls,
        groups: Iterable[GroupConstraints] = (),
        instances: Iterable[InstanceConstraints] = (),
        **rest: Any,
    ) -> ConstraintSet:
        """Build from plain sequences of constraints (keyed by their project)."""
        return cls(
            groups={(g.project_id, g.group_id): g for g in groups},
            instances={(i.project_id, i.instance_id): i for i in instances},
            **rest,
        )

    def instance(self, instance_id: str, project_id: str) -> InstanceConstraints | None:
        """The instance's own constraints, as its project (per the cloud) set them."""
        return self.instances.get((project_id, instance_id))

    def group_id_of(self, instance_id: str, project_id: str) -> str:
        """The id of the group whose rules apply to the instance."""
        return self._resolve(instance_id, project_id)[1].group_id

    def group_key_of(self, instance_id: str, project_id: str) -> str:
        """A key of the instance's group that no other project's group shares
        (API group ids are per project); :meth:`group_by_key` reads it back."""
        return self._resolve(instance_id, project_id)[0]

    def group_by_key(self, key: str) -> GroupConstraints:
        """The rules of a group named by :meth:`group_key_of` (a group deleted
        since falls back to the default rules)."""
        if key.startswith("["):
            project_id, group_id = json.loads(key)
            found = self._own_group(group_id, project_id)
            return found[1] if found is not None else self._default(key, project_id)
        if key.startswith(_IMPLICIT_PREFIX):
            return self._default(key, key.removeprefix(_IMPLICIT_PREFIX))
        return self._cloud_groups.get(key) or self._default(key, key)

    def group(self, group_id: str, project_id: str) -> GroupConstraints:
        """The rules of ``group_id`` for ``project_id`` (an implicit or unknown
        group gets the default rules)."""
        found = self._member_of(group_id, project_id) or self._own_group(group_id, project_id)
        return found[1] if found is not None else self._default(group_id, project_id)

    def group_of(self, instance_id: str, project_id: str) -> GroupConstraints:
        return self._resolve(instance_id, project_id)[1]

    def foreign_instances(self, listed: Iterable[tuple[str, str]]) -> list[InstanceConstraints]:
        """Stored instance constraints that the cloud contradicts: for each
        ``(instance_id, project_id)`` the cloud listed, the rows of other
        projects (ignored by every lookup; the engine reports them)."""
        owner = dict(listed)
        return [
            c
            for (project_id, instance_id), c in sorted(self.instances.items())
            if instance_id in owner and owner[instance_id] != project_id
        ]

    def foreign_groups(self) -> list[GroupConstraints]:
        """Stored groups whose id is another project's group in the cloud (ignored)."""
        return [
            g
            for (project_id, group_id), g in sorted(self.groups.items())
            if (cloud := self._cloud_groups.get(group_id)) is not None
            and cloud.project_id != project_id
        ]

    # ------------------------------------------------------------------ resolution

    def _resolve(self, instance_id: str, project_id: str) -> tuple[str, GroupConstraints]:
        own = self.instances.get((project_id, instance_id))
        if own is not None:
            found = self._own_group(own.group_id, project_id) if own.group_id else None
        else:
            cloud_group = self.cloud.members.get(instance_id)
            found = self._member_of(cloud_group, project_id) if cloud_group else None
        if found is not None:
            return found
        implicit = implicit_group_id(project_id)
        return implicit, self._default(implicit, project_id)

    def _own_group(self, group_id: str, project_id: str) -> tuple[str, GroupConstraints] | None:
        """The project's own group of that id: its API group, else its cloud group;
        nothing when the cloud says the id is another project's group."""
        cloud = self._cloud_groups.get(group_id)
        if cloud is not None and cloud.project_id != project_id:
            return None
        api = self.groups.get((project_id, group_id))
        if api is not None:
            return json.dumps([project_id, group_id]), api
        if cloud is not None:
            return group_id, cloud
        return None

    def _member_of(self, group_id: str, project_id: str) -> tuple[str, GroupConstraints] | None:
        """The group the cloud put an instance in: the cloud's rules, or those
        its owner set through the API for that id."""
        cloud = self._cloud_groups.get(group_id)
        if cloud is None:
            return None
        if cloud.project_id == project_id:
            return self._own_group(group_id, project_id)
        return group_id, cloud

    def _default(self, group_id: str, project_id: str) -> GroupConstraints:
        implicit = self._implicit.get(group_id)
        if implicit is None:
            implicit = GroupConstraints(
                group_id=group_id,
                project_id=project_id,
                group_name=f"unconstrained instances of {project_id}",
                **dict(self.default_group),
            )
            self._implicit[group_id] = implicit
        return implicit


_IMPLICIT_PREFIX = implicit_group_id("")


def merge_cloud_dicts(known: Mapping[str, Any] | None, found: Mapping[str, Any]) -> dict[str, Any]:
    """The cloud's constraints a session knows (``known``, the stored dict
    form) with what a listing found folded in: groups and placement rules by
    id, memberships by instance (a listing of some hosts only knows their
    instances). Pure."""
    known = known or {"groups": [], "members": {}}
    groups = {g["group_id"]: g for g in known.get("groups", [])}
    groups.update({g["group_id"]: g for g in found.get("groups", [])})
    members = {**known.get("members", {}), **found.get("members", {})}
    placement = {r["group_id"]: r for r in known.get("placement", [])}
    placement.update({r["group_id"]: r for r in found.get("placement", [])})
    return {
        "groups": sorted(groups.values(), key=lambda g: g["group_id"]),
        "members": members,
        "placement": sorted(placement.values(), key=lambda r: r["group_id"]),
    }


#: Seconds a cold migration interrupts an instance (used against
#: ``max_interruption_time``; a live migration is taken as uninterrupted).
COLD_MIGRATION_INTERRUPTION = 60.0


def move_action(
    own: InstanceConstraints | None,
    allowed: Sequence[str],
    *,
    live_migratable: bool,
    managed: bool,
) -> str | None:
    """How the constrained workflow moves an instance: its ``migration_type``,
    else live if it can, else cold if its ``max_interruption_time`` allows,
    else its manager's own action; None: none of those (the engine's default
    action). ``allowed``: the cloud driver's actions."""
    own_action = "OWN_ACTION"
    wanted = own.migration_type if own is not None else None
    if wanted == own_action and managed:
        return wanted
    if (
        wanted in allowed
        and wanted != own_action  # only a manager can do that
        and (wanted != "LIVE_MIGRATE" or live_migratable)
    ):
        return str(wanted)
    if "LIVE_MIGRATE" in allowed and live_migratable:
        return "LIVE_MIGRATE"
    limit = own.max_interruption_time if own is not None else None
    if "MIGRATE" in allowed and (
        limit is None or limit >= COLD_MIGRATION_INTERRUPTION or not managed
    ):
        return "MIGRATE"
    if managed:
        return own_action
    return None
