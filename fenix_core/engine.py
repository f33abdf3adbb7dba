"""The Engine: the public API of fenix-core.

:class:`Engine` is the redesigned core (issue 18): a facade over the session
factory (validation and the initial rows), the stepper (one fenced
transaction per step), the lease keeper, the outbox and the constraint
service; see docs/internals.md.
"""

from __future__ import annotations

from .core.engine_v2 import CoreEngine

__all__ = ["Engine"]


class Engine(CoreEngine):
    """Runs maintenance sessions (see docs/user-guide.md)."""
