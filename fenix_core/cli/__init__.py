"""The ``fenix`` command line: simulate and plan scenarios, look at and
control sessions.

Needs the ``cli`` extra (click, rich, PyYAML); ``--timeline`` also needs the
``plot`` extra (matplotlib). Installed without the ``cli`` extra, ``fenix``
says how to install it instead of failing with a traceback.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

#: The modules of the ``cli`` extra, by their import names.
CLI_EXTRA_MODULES = frozenset({"click", "rich", "yaml"})
INSTALL_HINT = "pip install 'fenix-core[cli]'"

try:
    from .main import main
except ImportError as exc:  # only without the cli extra: re-raise anything else
    if (exc.name or "").split(".")[0] not in CLI_EXTRA_MODULES:
        raise
    _missing = exc.name

    def main(*args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[misc]
        """Stand-in for the command when the ``cli`` extra is not installed."""
        print(
            f"fenix: the command line needs the 'cli' extra ({_missing} is not installed):\n"
            f"    {INSTALL_HINT}",
            file=sys.stderr,
        )
        sys.exit(2)


__all__ = ["main"]
