"""The preview of a session awaiting approval: its request simulated over the
cloud as the engine just read it.

The cloud's hosts, instances and constraints become a scenario
(``fenix_core.sim.snapshot.scenario_from_cloud``), which
:func:`fenix_core.sim.simulation.plan` runs on simulated time with every manager
answering at once. Each action of the request is assumed to take
:data:`fenix_core.controls.ACTION_SECONDS`, unless ``controls.host_seconds`` declares how long a
host takes (then shared among the actions). Touches nothing real: the
simulation has its own in-memory engine and cloud. The ``fenix_core``
package makes :func:`preview` the engines' default previewer
(``Engine.default_previewer``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from ..constraints import CloudConstraints, GroupConstraints, InstanceConstraints
from ..controls import ACTION_SECONDS
from ..errors import FenixError
from ..model import Host, Instance, SessionRequest
from .scenario_schema import SESSION_FIELDS

__all__ = ["ACTION_SECONDS", "preview"]


def preview(
    request: SessionRequest,
    *,
    scope: Sequence[str],
    hosts: Sequence[Host],
    instances: Sequence[Instance],
    cloud: CloudConstraints | None,
    groups: Iterable[GroupConstraints],
    instance_constraints: Iterable[InstanceConstraints],
    now: datetime,
) -> dict[str, Any]:
    """The plan (``Plan.to_dict()``) of ``request`` over ``scope``; when the
    request cannot be simulated (a workflow, gate or action only the real
    engine has) ``{"unavailable": why}``. A :class:`~fenix_core.approval.Previewer`."""
    try:
        # Imported here: scenarios need PyYAML, an extra (fenix-core[cli]).
        from .simulation import plan
        from .snapshot import CloudSnapshot, scenario_from_cloud
    except ImportError as exc:
        return {"unavailable": f"the preview needs {exc.name} (pip install 'fenix-core[cli]')"}

    listed = {h.name for h in hosts}
    snapshot = CloudSnapshot(
        tuple(hosts),
        tuple(i for i in instances if i.host in listed),
        cloud or CloudConstraints(),
    )
    fields = request.to_dict()
    session: dict[str, Any] = {
        k: v for k, v in fields.items() if k in SESSION_FIELDS and v not in (None, [], {})
    }
    session["hosts"] = list(scope)
    session["decommission_hosts"] = [h for h in request.decommission_hosts if h in listed]
    if request.maintenance_at is not None and request.maintenance_at > now:
        session["maintenance_in"] = (request.maintenance_at - now).total_seconds()
    each = (
        request.controls.host_seconds / max(1, len(request.actions))
        if request.controls.host_seconds
        else ACTION_SECONDS
    )
    actions = [{**a.to_dict(), "seconds": each} for a in request.actions]
    try:
        scenario = scenario_from_cloud(
            snapshot,
            groups,
            instance_constraints,
            name="approval preview",
            start=now,
            session=session,
            actions=actions,
        )
        return plan(scenario).to_dict()
    except FenixError as exc:
        return {"unavailable": str(exc)}
