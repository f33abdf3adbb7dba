"""The hook specifications and the protocols a plug-in implements, under the
name plug-ins import (docs/plugins.md): the objects of
``fenix_core.plugins.hookspecs``, where they are defined."""

from .plugins.hookspecs import (
    PROJECT_NAME,
    Action,
    ActionContext,
    CloudDriver,
    ConstraintSource,
    Gate,
    GateContext,
    GateResult,
    HostGuard,
    HostQueue,
    HostQueueChanges,
    InstanceOwner,
    InstanceReadiness,
    MoveLookup,
    hookimpl,
    hookspec,
)

__all__ = [
    "PROJECT_NAME",
    "Action",
    "ActionContext",
    "CloudDriver",
    "ConstraintSource",
    "Gate",
    "GateContext",
    "GateResult",
    "HostGuard",
    "HostQueue",
    "HostQueueChanges",
    "InstanceOwner",
    "InstanceReadiness",
    "MoveLookup",
    "hookimpl",
    "hookspec",
]
