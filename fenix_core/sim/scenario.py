"""Scenario files: a simulated cloud, its application managers and a session, in YAML.

:func:`load_scenario` turns YAML text into a validated, frozen
:class:`Scenario`; it is pure (no engine, no cloud, no I/O besides parsing the
text). Bad input raises :class:`~fenix_core.errors.InvalidInput` whose
``field`` is the path of the offending value, e.g. ``hosts[3].vcpus``.
:mod:`fenix_core.sim.simulation` builds and runs what a scenario describes.

Lists of hosts and instances may use generators so that large scenarios stay
short: an entry with ``count: N`` stands for N entries whose string fields
have ``{i}`` replaced by 0 … N-1 (``first`` shifts the start). The file's
shape is declared once in ``fenix_core.sim.scenario_schema`` (``fenix schema``
prints it as JSON Schema); docs/cli.md describes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import yaml
from pydantic import BaseModel

from ..constraints import GroupConstraints, InstanceConstraints
from ..errors import FieldError, InvalidInput
from ..kube_scheduling import ClusterScheduling
from ..model import (
    DEFAULT_REPLY_WINDOWS,
    SessionRequest,
    _check_bool,
    _int,
    _seconds,
    _str,
    parse_time,
)
from ..placement_rules import PlacementRule
from ..schema import validate
from ..states import InstanceAction
from .scenario_schema import (
    SESSION_FIELDS,
    ActionEntry,
    FaultsSection,
    GroupEntry,
    HostEntry,
    InstanceEntry,
    ManagerEntry,
    MigrationFaultEntry,
    Migrations,
    PlacementEntry,
    ScenarioSchema,
)

__all__ = [
    "ANSWERED_STATES",
    "ActionPlan",
    "Faults",
    "HostSpec",
    "InstanceSpec",
    "ManagerSpec",
    "MigrationFault",
    "Scenario",
    "SessionOptions",
    "load_scenario",
    "load_scenario_file",
]

#: The notification states a manager answers, which ``nack`` / ``silent`` may name.
ANSWERED_STATES = tuple(DEFAULT_REPLY_WINDOWS)

_MAX_COUNT = 100_000
_HOST_TYPES = ("compute", "controller")


@attrs.frozen
class HostSpec:
    """A simulated host (``hosts`` entry)."""

    name: str
    type: str = "compute"
    vcpus: int = 8
    #: label -> value, or values when the host is in several domains of the key
    labels: Mapping[str, str | tuple[str, ...]] = attrs.field(factory=dict)
    #: False: out of service when the scenario starts (no instance is moved onto it).
    enabled: bool = True


@attrs.frozen
class InstanceSpec:
    """A simulated instance (``instances`` entry) and its constraints."""

    id: str
    project: str
    host: str
    vcpus: int = 1
    group: str | None = None
    live_migratable: bool = True
    constraints: InstanceConstraints | None = None


@attrs.frozen
class ManagerSpec:
    """How one project's application manager answers (see ScriptedManager)."""

    project: str
    action: str = InstanceAction.LIVE_MIGRATE.value
    actions: Mapping[str, str] = attrs.field(factory=dict)
    nack: tuple[str, ...] = ()
    silent: tuple[str, ...] = ()
    delay: float = 0.0
    scale_in: int = 0


@attrs.frozen
class ActionPlan:
    """An action of the session and how long it takes where.

    The duration on a host is the first that applies of: ``by_label`` (a
    ``key=value`` label of the host), ``by_host_type``, ``seconds``.
    """

    plugin: str
    type: str
    seconds: float = 600.0
    by_host_type: Mapping[str, float] = attrs.field(factory=dict)
    by_label: Mapping[str, float] = attrs.field(factory=dict)
    order: int = 0
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    fail_on: tuple[str, ...] = ()

    def seconds_on(self, host: HostSpec | None) -> float:
        if host is None:
            return self.seconds
        for key, value in host.labels.items():
            for one in (value,) if isinstance(value, str) else value:
                label = f"{key}={one}"
                if label in self.by_label:
                    return self.by_label[label]
        return self.by_host_type.get(host.type, self.seconds)


@attrs.frozen
class MigrationFault:
    """The next ``times`` migrations of ``instance`` fail with ``error``."""

    instance: str
    times: int = 1
    error: str = "no valid host"


@attrs.frozen
class Faults:
    """What goes wrong in the simulation."""

    failed_migrations: tuple[MigrationFault, ...] = ()
    hosts_stay_down: tuple[str, ...] = ()


@attrs.frozen
class SessionOptions:
    """The session request (validated by :class:`~fenix_core.model.SessionRequest`)
    plus ``maintenance_in``, seconds after the scenario's start."""

    request: SessionRequest
    maintenance_in: float | None = None


@attrs.frozen
class Scenario:
    """A validated scenario: cloud, groups, managers, actions, faults, session."""

    name: str
    start: datetime
    hosts: tuple[HostSpec, ...]
    instances: tuple[InstanceSpec, ...]
    groups: tuple[GroupConstraints, ...]
    managers: tuple[ManagerSpec, ...]
    actions: tuple[ActionPlan, ...]
    migration_seconds: float
    live_migration_seconds: float
    faults: Faults
    session: SessionOptions
    #: server-group rules the simulated cloud's scheduler enforces on every move
    placement: tuple[PlacementRule, ...] = ()
    #: what the cloud's own scheduler decides on (a Kubernetes snapshot), None: Nova's way
    scheduler: ClusterScheduling | None = None

    def host(self, name: str) -> HostSpec:
        return next(h for h in self.hosts if h.name == name)

    def group_of(self, instance: InstanceSpec) -> str:
        """The group an instance belongs to: its own, or its project's implicit group."""
        return instance.group or f"project:{instance.project}"

    def without_faults(self, *, answer_at_once: bool = False) -> Scenario:
        """The same scenario with no faults (and managers answering at once)."""
        managers = self.managers
        if answer_at_once:
            managers = tuple(attrs.evolve(m, nack=(), silent=(), delay=0.0) for m in managers)
        return attrs.evolve(
            self,
            faults=Faults(),
            managers=managers,
            actions=tuple(attrs.evolve(a, fail_on=()) for a in self.actions),
        )


# --------------------------------------------------------------------------- reading


def _fields(shape: type[BaseModel]) -> tuple[str, ...]:
    """The fields a section may have: its declaration's (generators' count and
    first are consumed before an entry is read)."""
    return tuple(name for name in shape.model_fields if name not in ("count", "first"))


class _Reader:
    """Typed access to one YAML mapping, with the path of every value for errors."""

    def __init__(self, data: object, path: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise InvalidInput(path or "scenario", f"expected a mapping, got {_kind(data)}")
        self.data: Mapping[str, Any] = data
        self.path = path
        for key in data:
            if key not in known:
                raise InvalidInput(
                    self.at(str(key)), f"unknown field; expected one of {', '.join(known)}"
                )

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise InvalidInput(self.at(key), "missing")
        return _str(value, self.at(key))

    def opt_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def integer(self, key: str, default: int, *, minimum: int = 0, maximum: int = 10**6) -> int:
        return _int(self.raw(key, default), self.at(key), minimum=minimum, maximum=maximum)

    def seconds(self, key: str, default: float, *, zero: bool = True) -> float:
        return _duration(self.raw(key, default), self.at(key), zero=zero)

    def flag(self, key: str, default: bool) -> bool:
        return _check_bool(self.raw(key, default), self.at(key))

    def items(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidInput(self.at(key), f"expected a list, got {_kind(value)}")
        return value

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise InvalidInput(self.at(key), f"expected a mapping, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str):
                raise InvalidInput(self.at(key), f"keys must be strings, got {k!r}")
        return value

    def states(self, key: str) -> tuple[str, ...]:
        """A state, a list of states, or true (all answered states)."""
        value = self.data.get(key)
        if value is None or value is False:
            return ()
        if value is True:
            return ANSWERED_STATES
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise InvalidInput(self.at(key), "expected a state, a list of states or true")
        for index, state in enumerate(items):
            if state not in ANSWERED_STATES:
                raise InvalidInput(
                    f"{self.at(key)}[{index}]",
                    f"must be one of {', '.join(ANSWERED_STATES)}, got {state!r}",
                )
        return tuple(items)


def _kind(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "nothing" if value is None else type(value).__name__


def _duration(value: object, field: str, *, zero: bool = True) -> float:
    if zero and value == 0 and not isinstance(value, bool):
        return 0.0
    return _seconds(value, field)


def _expand(items: list[Any], path: str, name_key: str) -> list[tuple[str, dict[str, Any], int]]:
    """Expand generator entries (``count``) into (path, entry, position in its
    generator) triples."""
    out: list[tuple[str, dict[str, Any], int]] = []
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(where, f"expected a mapping, got {_kind(item)}")
        entry = dict(item)
        if "count" not in entry:
            if "first" in entry:
                raise InvalidInput(f"{where}.first", "only with count")
            out.append((where, entry, 0))
            continue
        count = _int(entry.pop("count"), f"{where}.count", minimum=1, maximum=_MAX_COUNT)
        first = _int(entry.pop("first", 0), f"{where}.first", maximum=10**9)
        pattern = entry.get(name_key)
        if not isinstance(pattern, str) or "{i}" not in pattern:
            raise InvalidInput(
                f"{where}.{name_key}", "with count, must be a pattern containing {i}"
            )
        for position, i in enumerate(range(first, first + count)):
            out.append((where, _substitute(entry, i), position))
    return out


def _substitute(entry: Mapping[str, Any], i: int) -> dict[str, Any]:
    return {k: v.replace("{i}", str(i)) if isinstance(v, str) else v for k, v in entry.items()}


def _label_value(value: object, where: str) -> str:
    if not isinstance(value, str | int | float | bool):
        raise InvalidInput(where, f"expected a value, got {_kind(value)}")
    return str(value)


def _hosts(items: list[Any]) -> tuple[HostSpec, ...]:
    hosts: dict[str, HostSpec] = {}
    for where, entry, _ in _expand(items, "hosts", "name"):
        r = _Reader(entry, where, _fields(HostEntry))
        host_type = r.text("type", "compute")
        if host_type not in _HOST_TYPES:
            raise InvalidInput(r.at("type"), f"must be compute or controller, got {host_type!r}")
        labels: dict[str, str | tuple[str, ...]] = {}
        for key, value in r.mapping("labels").items():
            where = f"{r.at('labels')}.{key}"
            if isinstance(value, list):
                labels[key] = tuple(_label_value(v, f"{where}[{k}]") for k, v in enumerate(value))
            else:
                labels[key] = _label_value(value, where)
        spec = HostSpec(
            r.text("name"),
            host_type,
            r.integer("vcpus", 8, maximum=100_000),
            labels,
            r.flag("enabled", True),
        )
        if spec.name in hosts:
            raise InvalidInput(r.at("name"), f"host {spec.name!r} is defined twice")
        hosts[spec.name] = spec
    if not hosts:
        raise InvalidInput("hosts", "a scenario needs at least one host")
    return tuple(hosts.values())


def _instances(items: list[Any], hosts: Mapping[str, HostSpec]) -> tuple[InstanceSpec, ...]:
    known = _fields(InstanceEntry)
    instances: dict[str, InstanceSpec] = {}
    for where, entry, position in _expand(items, "instances", "id"):
        r = _Reader(entry, where, known)
        if r.has("host") == r.has("hosts"):
            raise InvalidInput(r.at("host"), "give either host or hosts (a list, round-robin)")
        if r.has("hosts"):
            spread = r.items("hosts")
            if not spread:
                raise InvalidInput(r.at("hosts"), "must not be empty")
            pick = position % len(spread)
            host = _str(spread[pick], f"{r.at('hosts')}[{pick}]")
        else:
            host = r.text("host")
        if host not in hosts:
            raise InvalidInput(r.at("host"), f"no host {host!r} in hosts")
        iid = r.text("id")
        if iid in instances:
            raise InvalidInput(r.at("id"), f"instance {iid!r} is defined twice")
        project = r.text("project")
        group = r.opt_text("group")
        constraints = None
        if r.has("constraints"):
            raw = {**r.mapping("constraints"), "instance_id": iid, "project_id": project}
            raw.setdefault("group_id", group)
            constraints = _prefixed(r.at("constraints"), InstanceConstraints.from_dict, raw)
        instances[iid] = InstanceSpec(
            id=iid,
            project=project,
            host=host,
            vcpus=r.integer("vcpus", 1, maximum=100_000),
            group=group,
            live_migratable=r.flag("live_migratable", True),
            constraints=constraints,
        )
    return tuple(instances.values())


def _prefixed(path: str, build: Any, data: Any) -> Any:
    """Run ``build(data)``; an InvalidInput it raises gets ``path`` in front of its field."""
    try:
        return build(data)
    except InvalidInput as exc:
        raise InvalidInput.from_errors(
            [FieldError(f"{path}.{e.field}", e.message) for e in exc.errors]
        ) from None


def _groups(items: list[Any], instances: tuple[InstanceSpec, ...]) -> tuple[GroupConstraints, ...]:
    groups: dict[str, GroupConstraints] = {}
    for index, item in enumerate(items):
        where = f"groups[{index}]"
        r = _Reader(item, where, _fields(GroupEntry))
        group_id = r.text("id")
        if group_id in groups:
            raise InvalidInput(r.at("id"), f"group {group_id!r} is defined twice")
        raw = {k: v for k, v in r.data.items() if k not in ("id", "project")}
        raw.update(group_id=group_id, project_id=r.text("project"))
        groups[group_id] = _prefixed(where, GroupConstraints.from_dict, raw)
    for index, inst in enumerate(instances):
        if inst.group is None:
            continue
        group = groups.get(inst.group)
        if group is None:
            raise InvalidInput(f"instances[{index}].group", f"no group {inst.group!r} in groups")
        if group.project_id != inst.project:
            raise InvalidInput(
                f"instances[{index}].group",
                f"group {inst.group!r} belongs to project {group.project_id!r}, "
                f"not {inst.project!r}",
            )
    return tuple(groups.values())


def _managers(data: Mapping[str, Any]) -> tuple[ManagerSpec, ...]:
    managers = []
    known = _fields(ManagerEntry)
    for project, item in data.items():
        r = _Reader(item if item is not None else {}, f"managers.{project}", known)
        actions = {k: _action(v, f"{r.at('actions')}.{k}") for k, v in r.mapping("actions").items()}
        managers.append(
            ManagerSpec(
                project=project,
                action=_action(r.raw("action", InstanceAction.LIVE_MIGRATE.value), r.at("action")),
                actions=actions,
                nack=r.states("nack"),
                silent=r.states("silent"),
                delay=r.seconds("delay", 0.0),
                scale_in=r.integer("scale_in", 0, maximum=_MAX_COUNT),
            )
        )
    return tuple(managers)


def _action(value: object, field: str) -> str:
    choices = ("MIGRATE", "LIVE_MIGRATE", "OWN_ACTION")
    if value not in choices:
        raise InvalidInput(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _actions(items: list[Any], hosts: Mapping[str, HostSpec]) -> tuple[ActionPlan, ...]:
    known = _fields(ActionEntry)
    plans = []
    for index, item in enumerate(items):
        r = _Reader(item, f"actions[{index}]", known)
        by_type = {
            k: _duration(v, f"{r.at('by_host_type')}.{k}")
            for k, v in r.mapping("by_host_type").items()
        }
        for host_type in by_type:
            if host_type not in _HOST_TYPES:
                raise InvalidInput(f"{r.at('by_host_type')}.{host_type}", "unknown host type")
        by_label = {}
        for label, value in r.mapping("by_label").items():
            if "=" not in label:
                raise InvalidInput(f"{r.at('by_label')}.{label}", "expected key=value")
            by_label[label] = _duration(value, f"{r.at('by_label')}.{label}")
        fail_on = tuple(
            _str(h, f"{r.at('fail_on')}[{i}]") for i, h in enumerate(r.items("fail_on"))
        )
        for i, host in enumerate(fail_on):
            if host not in hosts:
                raise InvalidInput(f"{r.at('fail_on')}[{i}]", f"no host {host!r} in hosts")
        plans.append(
            ActionPlan(
                plugin=r.text("plugin"),
                type=r.text("type", "host"),
                seconds=r.seconds("seconds", 600.0),
                by_host_type=by_type,
                by_label=by_label,
                order=r.integer("order", 0, minimum=-(10**6)),
                metadata=dict(r.mapping("metadata")),
                fail_on=fail_on,
            )
        )
    names = [p.plugin for p in plans]
    for index, name in enumerate(names):
        if names.index(name) != index:
            raise InvalidInput(
                f"actions[{index}].plugin", f"{name!r} is listed twice; use one entry per plug-in"
            )
    return tuple(plans)


def _scheduler(
    data: object, hosts: Mapping[str, HostSpec], instance_ids: set[str]
) -> ClusterScheduling | None:
    if data is None:
        return None
    found = ClusterScheduling.from_dict(data)
    for name in found.nodes:
        if name not in hosts:
            raise InvalidInput(f"scheduler.nodes.{name}", f"no host {name!r} in hosts")
    for pid in found.pods:
        if pid not in instance_ids:
            raise InvalidInput(f"scheduler.pods.{pid}", f"no instance {pid!r} in instances")
    return found


def _placement(items: list[Any], instance_ids: set[str]) -> tuple[PlacementRule, ...]:
    rules: dict[str, PlacementRule] = {}
    for index, item in enumerate(items):
        where = f"placement[{index}]"
        _Reader(item, where, _fields(PlacementEntry))
        rule = _prefixed(where, PlacementRule.from_dict, item)
        if rule.group_id in rules:
            raise InvalidInput(f"{where}.group_id", f"group {rule.group_id!r} is defined twice")
        for position, member in enumerate(rule.members):
            if member not in instance_ids:
                raise InvalidInput(
                    f"{where}.members[{position}]", f"no instance {member!r} in instances"
                )
        rules[rule.group_id] = rule
    return tuple(rules.values())


def _faults(data: object, scenario_hosts: Mapping[str, HostSpec], instance_ids: set[str]) -> Faults:
    r = _Reader(data if data is not None else {}, "faults", _fields(FaultsSection))
    failed = []
    for index, item in enumerate(r.items("failed_migrations")):
        f = _Reader(item, f"faults.failed_migrations[{index}]", _fields(MigrationFaultEntry))
        instance = f.text("instance")
        if instance not in instance_ids:
            raise InvalidInput(f.at("instance"), f"no instance {instance!r} in instances")
        failed.append(
            MigrationFault(
                instance,
                f.integer("times", 1, minimum=1, maximum=100),
                f.text("error", "no valid host"),
            )
        )
    down = []
    for index, host in enumerate(r.items("hosts_stay_down")):
        field = f"faults.hosts_stay_down[{index}]"
        if _str(host, field) not in scenario_hosts:
            raise InvalidInput(field, f"no host {host!r} in hosts")
        down.append(host)
    return Faults(tuple(failed), tuple(down))


def _session(
    data: object, hosts: Mapping[str, HostSpec], actions: tuple[ActionPlan, ...]
) -> SessionOptions:
    r = _Reader(data if data is not None else {}, "session", SESSION_FIELDS)
    for index, host in enumerate(r.items("hosts")):
        if host not in hosts:
            raise InvalidInput(f"session.hosts[{index}]", f"no host {host!r} in hosts")
    request_fields = {k: v for k, v in r.data.items() if k != "maintenance_in"}
    request_fields["actions"] = [
        {"plugin": a.plugin, "type": a.type, "order": a.order, "metadata": dict(a.metadata)}
        for a in actions
    ]
    request = _prefixed("session", SessionRequest.from_dict, request_fields)
    maintenance_in = r.seconds("maintenance_in", 0.0) if r.has("maintenance_in") else None
    return SessionOptions(request, maintenance_in)


def parse_scenario(data: object) -> Scenario:
    """Validate a scenario already parsed from YAML or JSON into plain data."""
    validate(ScenarioSchema, data, what="scenario")
    r = _Reader(data, "", _fields(ScenarioSchema))
    hosts = _hosts(r.items("hosts"))
    by_name = {h.name: h for h in hosts}
    instances = _instances(r.items("instances"), by_name)
    groups = _groups(r.items("groups"), instances)
    managers = _managers(r.mapping("managers"))
    actions = _actions(r.items("actions"), by_name)
    m = _Reader(r.raw("migrations", {}), "migrations", _fields(Migrations))
    start = parse_time(r.raw("start", "2026-01-01T00:00:00+00:00"), "start")
    assert start is not None
    return Scenario(
        name=r.text("name", "scenario"),
        start=start,
        hosts=hosts,
        instances=instances,
        groups=groups,
        managers=managers,
        actions=actions,
        migration_seconds=m.seconds("seconds", 30.0),
        live_migration_seconds=m.seconds("live_seconds", 20.0),
        faults=_faults(r.raw("faults"), by_name, {i.id for i in instances}),
        session=_session(r.raw("session"), by_name, actions),
        placement=_placement(r.items("placement"), {i.id for i in instances}),
        scheduler=_scheduler(r.raw("scheduler"), by_name, {i.id for i in instances}),
    )


def load_scenario(text: str) -> Scenario:
    """Parse and validate a YAML scenario (``yaml.safe_load``: no Python objects)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput("scenario", f"not valid YAML{where}: {problem}") from None
    return parse_scenario(data)


def load_scenario_file(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    return load_scenario(Path(path).read_text(encoding="utf-8"))
