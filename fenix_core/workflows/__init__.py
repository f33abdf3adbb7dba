"""Workflows: the rolling (Fenix default) workflow, and the base class to write others."""

from .base import Workflow

__all__ = ["Workflow"]
