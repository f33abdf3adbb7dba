"""Disruption budgets: caps given as a count or a percent of the session's
hosts, and limits on how many topology domains (zones, aggregates, racks) are
in maintenance at once.

Pure values and functions; :mod:`fenix_core.controls` asks them at each
admission with the facts the session knows (how many hosts it has, the labels
of the hosts in maintenance and of the candidate).

A percent is turned into a number of hosts as Kubernetes Deployments and
Cluster API MachineDeployments document for ``maxUnavailable``: rounded down.
Since a maintenance session has no surge capacity to make progress with, a
cap that rounds down to 0 counts as 1 (the same fence-post rule kubectl's
rolling updater applies when both of its limits resolve to 0): a session is
never stalled by its own percentage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import attrs

from .errors import InvalidInput

__all__ = [
    "Cap",
    "Labels",
    "Percent",
    "TopologyCap",
    "cap_text",
    "capped_labels",
    "check_labels",
    "describe_cap",
    "domains",
    "parse_cap",
    "resolve_cap",
    "topology_refusal",
    "widest_host",
]

#: A host's topology labels: label -> its value, or its values when the host
#: belongs to several domains of one key (an OpenStack host in two aggregates).
Labels = Mapping[str, str | tuple[str, ...]]

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@attrs.frozen
class Percent:
    """A share of the session's hosts, 0 < value <= 100."""

    value: float

    def __str__(self) -> str:
        return f"{self.value:g}%"


#: A cap on a number of hosts: a count, or a percent of the session's hosts.
Cap = int | Percent


def parse_cap(value: object, field: str) -> Cap | None:
    """A count (1 ... 1000000) or a percent text like ``"10%"`` (above 0, at
    most 100); None stays None."""
    if value is None:
        return None
    if isinstance(value, Percent):
        return value
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match is None:
            raise InvalidInput(
                field, f"expected a whole number or a percent like '10%', got {value!r}"
            )
        share = float(match.group(1))
        if not 0 < share <= 100:
            raise InvalidInput(field, f"a percent must be above 0% and at most 100%, got {value!r}")
        return Percent(share)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**6:
        raise InvalidInput(
            field,
            f"must be a whole number from 1 to 1000000 or a percent like '10%', got {value!r}",
        )
    return value


def cap_text(cap: Cap | None) -> int | str | None:
    """The dict form of a cap (a count, or ``"10%"``)."""
    return str(cap) if isinstance(cap, Percent) else cap


def resolve_cap(cap: Cap, hosts: int) -> int:
    """The number of hosts ``cap`` allows out of ``hosts``: a percent rounded
    down, and never below 1 (see the module docstring)."""
    if isinstance(cap, Percent):
        return max(1, math.floor(hosts * cap.value / 100 + 1e-9))
    return cap


def describe_cap(cap: Cap, hosts: int) -> str:
    """``"2"`` or ``"2 (10% of 25 hosts, rounded down)"``, for reasons shown to the admin."""
    if not isinstance(cap, Percent):
        return str(cap)
    allowed = resolve_cap(cap, hosts)
    exact = hosts * cap.value / 100
    how = "at least 1" if exact < 1 else "rounded down"
    return f"{allowed} ({cap} of {hosts} host(s), {how})"


@attrs.frozen
class TopologyCap:
    """At most ``max`` domains of the label ``key`` (zones, aggregates, racks)
    with a host in maintenance at once."""

    key: str
    max: int

    @classmethod
    def from_dict(cls, data: object, field: str) -> TopologyCap:
        if not isinstance(data, Mapping):
            raise InvalidInput(field, f"expected an object, got {type(data).__name__}")
        extra = sorted(str(k) for k in set(data) - {"key", "max"})
        if extra:
            raise InvalidInput(f"{field}.{extra[0]}", "unknown field")
        key = data.get("key")
        if not isinstance(key, str) or not key.strip():
            raise InvalidInput(f"{field}.key", "required: the label that names the domain")
        limit = data.get("max")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10**6:
            raise InvalidInput(
                f"{field}.max", f"must be a whole number from 1 to 1000000, got {limit!r}"
            )
        return cls(key=key, max=limit)

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "max": self.max}


def check_labels(value: object, field: str) -> dict[str, str | tuple[str, ...]]:
    """Host labels: string keys, each a string or a list of strings."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(field, f"expected an object of labels, got {type(value).__name__}")
    out: dict[str, str | tuple[str, ...]] = {}
    for key, raw in value.items():
        if not isinstance(key, str) or not key.strip():
            raise InvalidInput(field, f"label names must be non-empty strings, got {key!r}")
        if isinstance(raw, str):
            out[key] = raw
        elif isinstance(raw, list | tuple) and all(isinstance(v, str) for v in raw):
            out[key] = tuple(raw)
        else:
            raise InvalidInput(
                f"{field}.{key}", f"expected a string or a list of strings, got {raw!r}"
            )
    return out


def domains(labels: Labels, key: str) -> frozenset[str]:
    """The domains of ``key`` a host with ``labels`` is in (none without the label)."""
    value = labels.get(key)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset((value,))
    return frozenset(value)


def topology_refusal(
    caps: Sequence[TopologyCap], candidate: Labels, busy: Iterable[Labels]
) -> str | None:
    """Why a host with ``candidate`` labels may not start while hosts with
    ``busy`` labels are in maintenance, or None if every cap allows it. A host
    whose domains are all open already is always allowed; a host without the
    label is not limited by that cap (as Kubernetes topology spread ignores
    nodes without the topology key)."""
    busy = list(busy)
    for cap in caps:
        mine = domains(candidate, cap.key)
        open_now = frozenset().union(*(domains(b, cap.key) for b in busy))
        if mine <= open_now:
            continue
        if len(open_now | mine) > cap.max:
            names = ", ".join(sorted(open_now)) or "none"
            return (
                f"{cap.key} {', '.join(sorted(mine - open_now))} would be one {cap.key} too many: "
                f"at most {cap.max} in maintenance at once (open: {names})"
            )
    return None


def widest_host(
    caps: Sequence[TopologyCap], labels: Mapping[str, Labels]
) -> tuple[int, str, str] | None:
    """The first cap some host can never fit on its own (it is in more domains
    of the key than the cap allows), as (index of the cap, host, message);
    None if every host fits."""
    for index, cap in enumerate(caps):
        for host, host_labels in sorted(labels.items()):
            count = len(domains(host_labels, cap.key))
            if count > cap.max:
                return (
                    index,
                    host,
                    f"host {host} is in {count} domains of {cap.key!r}, more than max {cap.max}: "
                    "it could never start",
                )
    return None


def capped_labels(
    caps: Sequence[TopologyCap], labels: Mapping[str, Labels]
) -> dict[str, dict[str, str | list[str]]]:
    """Per host, only the labels ``caps`` name, in a JSON-friendly form (what a
    session keeps); hosts without any of them are left out."""
    keys = {c.key for c in caps}
    out: dict[str, dict[str, str | list[str]]] = {}
    for host, host_labels in labels.items():
        kept = {
            k: v if isinstance(v, str) else sorted(v) for k, v in host_labels.items() if k in keys
        }
        if kept:
            out[host] = kept
    return out
