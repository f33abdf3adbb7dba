"""A fake OpenStack (Keystone, Nova, Placement) for testing maintenance
workflows through the real openstacksdk, on the engine's clock.

See :class:`FakeOpenStack` and docs/openstack.md ("Testing with the fake").
"""

from __future__ import annotations

from fenix_core.testing import CloudEvent

from .fake import ADMIN_PASSWORD, ADMIN_USER, MEMBER_PASSWORD, MEMBER_USER, FakeOpenStack

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "MEMBER_PASSWORD",
    "MEMBER_USER",
    "CloudEvent",
    "FakeOpenStack",
]
