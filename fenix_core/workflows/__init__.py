"""The built-in workflows, written on the workflow contract
(:mod:`fenix_core.contract`; see docs/plugins.md)."""

from .v2 import ConstrainedWorkflow, DecommissionWorkflow, RollingWorkflow

__all__ = ["ConstrainedWorkflow", "DecommissionWorkflow", "RollingWorkflow"]
