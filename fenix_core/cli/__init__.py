"""The ``fenix`` command line: simulate and plan scenarios, look at real sessions.

Needs the ``cli`` extra (click, rich, PyYAML); ``--timeline`` also needs the
``plot`` extra (matplotlib).
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
