"""Plug-ins: the hook specifications and the protocols a plug-in implements
(:mod:`.hookspecs`, imported by plug-ins as ``fenix_core.hookspecs``), the
plug-in manager (:mod:`.manager`) and the built-in gates (:mod:`.gates`).

Nothing here imports the engine, its core or the store: the core imports
this package, not the other way round (tests/test_layers.py)."""

from .manager import ENTRY_POINT_GROUP, Plugins

__all__ = ["ENTRY_POINT_GROUP", "Plugins"]
