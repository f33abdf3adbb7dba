"""Workflows written on the contract (:mod:`fenix_core.contract`), beside
today's until the core redesign's cut-over replaces those (issue 18)."""

from .decommission import DecommissionWorkflow
from .rolling import RollingState, RollingWorkflow

__all__ = ["DecommissionWorkflow", "RollingState", "RollingWorkflow"]
