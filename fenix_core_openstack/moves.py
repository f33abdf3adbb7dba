"""Move handles and the durable record of a move in the cloud.

A handle names what to poll: the server, the action, the host it left and
the highest migration id the server had before (so that polling looks at
this move's migration record only, never an older one).

The engine's idempotency key must survive a crash of the engine process
between "the migration was requested" and "the handle was committed". Nova
keeps nothing of ours on a migration record, so the key lives on the server
itself, set *before* the migration is requested:

* a server tag ``fenix-move-<hash of the key>``: Nova can list servers by tag
  across projects (``GET /servers/detail?all_tenants&tags=``), which is how
  :meth:`~fenix_core_openstack.OpenStackDriver.find_move` finds the server
  from the key alone;
* a server metadata item of the same name holding the handle.

Both are removed when the move ends. Tags and metadata are visible to the
server's project (documented in docs/openstack.md).
"""

from __future__ import annotations

import hashlib

import attrs

from fenix_core.errors import CloudError

__all__ = ["ACTIONS", "MoveHandle", "key_tag"]

#: fenix instance action -> Nova migration_type of its migration record.
ACTIONS = {"LIVE_MIGRATE": "live-migration", "MIGRATE": "migration"}
_PREFIX = "fenix-move-"
_VERSION = "v1"


def key_tag(key: str) -> str:
    """The server tag (and metadata key) recording the move with this key.

    Nova tags are at most 60 characters and the key is the engine's, of any
    length: a hash keeps it short (43 characters) and free of ``/`` and ``,``.
    """
    return _PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]


@attrs.frozen
class MoveHandle:
    """What :meth:`poll_move` needs to follow one move."""

    action: str
    server_id: str
    source: str
    after: int  # the server's highest migration id before this move

    def encode(self) -> str:
        return " ".join((_VERSION, self.action, str(self.after), self.server_id, self.source))

    @classmethod
    def decode(cls, text: str) -> MoveHandle:
        parts = text.split(" ")
        if len(parts) != 5 or parts[0] != _VERSION or parts[1] not in ACTIONS:
            raise CloudError(f"not a handle of the OpenStack driver: {text!r}")
        _, action, after, server_id, source = parts
        return cls(action=action, server_id=server_id, source=source, after=int(after))

    @property
    def migration_type(self) -> str:
        return ACTIONS[self.action]
