"""The built-in workflows, written on the workflow contract
(:mod:`fenix_core.contract`; see docs/plugins.md)."""

from .constrained import ConstrainedState, ConstrainedWorkflow
from .decommission import DecommissionWorkflow
from .rolling import RollingState, RollingWorkflow

__all__ = [
    "ConstrainedState",
    "ConstrainedWorkflow",
    "DecommissionWorkflow",
    "RollingState",
    "RollingWorkflow",
]
