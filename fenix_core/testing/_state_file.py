"""Writing a test double's state file so that a crash never leaves half of it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["file_version", "write_json_atomically"]


def write_json_atomically(path: Path, state: Any) -> None:
    """Write ``state`` as JSON to ``path``: a reader (another process, after a
    kill -9) sees either the old file or the new one, never a torn write."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def file_version(path: Path | None) -> tuple[int, int] | None:
    """What identifies one written version of the file: every write replaces
    the file, so another process's write shows as a new inode or mtime."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)
