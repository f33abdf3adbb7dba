"""A request's hosts checked against the cloud at ``create_session``: the
scope, ``add_hosts`` and the hosts to retire (whether the hosts that stay
can hold what the retired hosts run is :func:`fenix_core.planner.capacity_shortfall`).
Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import InvalidInput
from .model import Host, SessionRequest

__all__ = ["check_request"]


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
