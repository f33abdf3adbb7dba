"""Workflows written on the contract (:mod:`fenix_core.contract`), beside
today's until the core redesign's cut-over replaces those (issue 18)."""

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
