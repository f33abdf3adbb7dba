"""The decommission workflow on the contract: retire hosts for good through
the rolling sequence.

Every host of the request's ``hosts`` is emptied as the rolling workflow
empties a host (``PLANNED_MAINTENANCE`` with ``"host_returns": false`` in
the metadata), gets its ``host`` / type actions, and ends DECOMMISSIONED:
left disabled; nothing is placed on it meanwhile. The other hosts of the
cloud are the targets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from ..errors import InvalidInput
from ..model import SessionRequest
from .rolling import RollingWorkflow

__all__ = ["DecommissionWorkflow"]


class DecommissionWorkflow(RollingWorkflow):
    """Rolling semantics; every host in scope is decommissioned."""

    name: ClassVar[str] = "decommission"

    @classmethod
    def validate_request(cls, request: SessionRequest, action_names: Iterable[str]) -> None:
        super().validate_request(request, action_names)
        if not request.hosts:
            raise InvalidInput("hosts", "name the hosts to decommission")

    @classmethod
    def retiring(cls, request: SessionRequest) -> frozenset[str]:
        return frozenset(request.hosts) | frozenset(request.decommission_hosts)
