"""fenix_core.rest: a Fenix v1 compatible REST service over the Engine, with
webhook delivery of notifications (``pip install 'fenix-core[rest]'``).

::

    from fenix_core.rest import FenixService, TokenAuthenticator

    with FenixService(engine, TokenAuthenticator(["admin-token"], {"tok": "proj"}),
                      port=12347) as service:
        ...   # service.url, service.outbox, service.sender

Pieces, for embedding in a service of your own: :func:`create_app` (the
ASGI app), :class:`WebhookOutbox` (queues notifications in the engine's
database), :class:`WebhookSender` (POSTs them), the :class:`Authenticator`
protocol. See docs/rest.md.
"""

from __future__ import annotations

from .app import create_app
from .auth import Authenticator, Identity, TokenAuthenticator
from .sender import WebhookSender
from .service import FenixService
from .webhooks import WebhookOutbox, WebhookTarget

__all__ = [
    "Authenticator",
    "FenixService",
    "Identity",
    "TokenAuthenticator",
    "WebhookOutbox",
    "WebhookSender",
    "WebhookTarget",
    "create_app",
]
