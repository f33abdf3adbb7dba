"""A request's hosts checked against the cloud at ``create_session``: the
scope, ``add_hosts``, and whether the hosts that stay can hold what the
retired hosts run. Pure."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from . import planner
from .constraints import ConstraintSet
from .errors import InvalidInput
from .model import Host, Instance, SessionRequest

__all__ = ["capacity_shortfall", "check_request"]


def check_request(
    request: SessionRequest, retiring: Iterable[str], listed: Mapping[str, Host]
) -> list[str]:
    """Validate ``add_hosts`` / the retired hosts against the cloud; return the scope.

    Raises InvalidInput naming the field.
    """
    retired = set(retiring)
    adds = set(request.add_hosts)
    field = "decommission_hosts" if request.decommission_hosts else "hosts"
    for name in request.add_hosts:
        if name in request.hosts or name in retired:
            raise InvalidInput("add_hosts", f"host {name!r} is also to be maintained or retired")
        found = listed.get(name)
        if found is not None and found.type != "compute":
            raise InvalidInput("add_hosts", f"host {name!r} is a {found.type}, not a compute host")
    scope = list(request.hosts) if request.hosts else [n for n in listed if n not in adds]
    outside = sorted(retired - set(scope))
    if outside:
        raise InvalidInput(field, "to be retired but not among the hosts: " + ", ".join(outside))
    if retired and retired >= {n for n, h in listed.items() if h.type == "compute"}:
        raise InvalidInput(field, "retiring every compute host leaves nowhere for the instances")
    return scope


def capacity_shortfall(
    hosts: Iterable[Host],
    instances: Iterable[Instance],
    retiring: Iterable[str],
    constraints: ConstraintSet,
) -> str | None:
    """Why the compute hosts that stay cannot hold every instance once
    ``retiring`` are gone; None if they can (or a host's capacity is unknown).

    Pure. ``hosts``' ``enabled`` means in service (a host about to be enabled
    counts as in service): instances of retired hosts go only there, what runs
    on a host out of service stays where it is. Totals first; then a real
    placement of each instance of a retired host (largest first, as the
    workflows would place them) on the free vcpus of each host that stays,
    keeping the anti-affinity and per-host limits of its group.
    """
    retired = set(retiring)
    if not retired:
        return None
    computes = {h.name: h for h in hosts if h.type == "compute"}
    used: Counter[str] = Counter()
    groups_on: dict[str, Counter[str]] = defaultdict(Counter)
    moving: list[planner.Member] = []
    rules: dict[str, planner.GroupRule] = {}
    for inst in instances:
        if inst.host not in computes:
            continue
        # Group ids are per project: the key tells two projects' groups apart.
        key = constraints.group_key_of(inst.instance_id, inst.project_id)
        rules[key] = planner.GroupRule.of(constraints.group_by_key(key))
        used[inst.host] += inst.vcpus
        groups_on[inst.host][key] += 1
        if inst.host in retired:
            moving.append(planner.Member(inst.instance_id, inst.project_id, key, inst.vcpus))
    targets: list[planner.Target] = []
    capacity = 0
    for name, host in computes.items():
        here = used[name]
        if name in retired:
            continue
        if not host.enabled:
            capacity += here  # what runs there stays there; nothing is added
            continue
        if host.vcpus <= 0:
            return None  # a host of unknown capacity: cannot tell
        capacity += max(host.vcpus, here)
        targets.append(planner.Target(name, host.vcpus - here, True, groups_on[name]))
    gone = ", ".join(sorted(retired))
    load = sum(used.values())
    if load > capacity:
        return (
            f"retiring {gone} leaves {capacity} vcpus on the other compute hosts "
            f"for {load} vcpus of instances"
        )
    ordered = sorted(moving, key=lambda m: (-m.vcpus, m.instance_id))
    budgets = Counter(m.group_id for m in moving)
    _moves, blocked = planner.assign_moves(ordered, budgets, targets, rules)
    if not blocked:
        return None
    member = next(m for m in moving if m.instance_id == blocked[0].instance_id)
    largest = max((t.free or 0 for t in targets), default=0)
    if largest < member.vcpus:
        why = f"the most free on one host that stays is {max(0, largest)} vcpus"
    else:
        rule = rules[member.group_id]
        why = (
            f"the hosts with room already hold {rule.host_limit()} member(s) of its group "
            f"{rule.group_id}, the most it allows on one host"
        )
    return (
        f"retiring {gone} leaves no host with room for instance {member.instance_id} "
        f"({member.vcpus} vcpus): {why}"
    )
