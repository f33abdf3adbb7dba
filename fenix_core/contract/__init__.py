"""The workflow contract (issue 18): everything a workflow author sees.
Pure types, no I/O; imports only model, states, errors and clock."""

from .context import HostAdmission, SessionContext
from .errors import ContractError
from .events import ProjectReply, ReplyOutcome, TimerFired
from .ops import (
    DisableHost,
    EnableHost,
    HostUp,
    Inventory,
    ListHosts,
    Locate,
    Move,
    Operation,
    OpKind,
    OpRef,
    OpResult,
    OpStatus,
    RunAction,
    Watch,
)
from .state import ComponentState
from .views import (
    CapacityView,
    HostsView,
    HostView,
    InstancesView,
    InstanceView,
    ProjectsView,
    ProjectView,
    SessionInfo,
)
from .workflow import HOOKS, Workflow

__all__ = [
    "HOOKS",
    "CapacityView",
    "ComponentState",
    "ContractError",
    "DisableHost",
    "EnableHost",
    "HostAdmission",
    "HostUp",
    "HostView",
    "HostsView",
    "InstanceView",
    "InstancesView",
    "Inventory",
    "ListHosts",
    "Locate",
    "Move",
    "OpKind",
    "OpRef",
    "OpResult",
    "OpStatus",
    "Operation",
    "ProjectReply",
    "ProjectView",
    "ProjectsView",
    "ReplyOutcome",
    "RunAction",
    "SessionContext",
    "SessionInfo",
    "TimerFired",
    "Watch",
    "Workflow",
]
