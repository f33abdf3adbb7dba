"""fenix-core: rolling infrastructure maintenance with zero application downtime.

An admin asks for a maintenance session over a set of hosts; the engine
empties each host by talking to the application managers of the projects
whose instances run there, runs the admin's action plug-ins on the empty host,
tells infrastructure services when the host is in and out of maintenance, and
moves on until every host is done. Clouds, actions and workflows are plug-ins.
"""

from __future__ import annotations

from .engine import Engine
from .model import ActionSpec, SessionRequest
from .plugins.hookspecs import hookimpl
from .sim.plan_preview import preview

# The composition root: the preview runs an Engine of its own, so the engine
# module cannot import it; every import of fenix_core (and of its modules)
# runs this first.
Engine.default_previewer = preview

__all__ = ["ActionSpec", "Engine", "SessionRequest", "hookimpl"]
__version__ = "0.1.0"
