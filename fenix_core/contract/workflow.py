"""``Workflow``: the hooks the engine calls; a workflow keeps no state of its own."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

from ..model import ACTION_TYPES, SessionRequest, check_request_actions
from .context import SessionContext
from .errors import ContractError
from .events import ProjectReply, ReplyOutcome, TimerFired
from .ops import OpResult
from .state import ComponentState

__all__ = ["HOOKS", "Workflow"]

#: The methods the engine calls. A subclass method named ``on_*`` that is
#: not one of them (``on_replies``) would never be called: refused.
HOOKS = frozenset(
    {
        "validate_request",
        "retiring",
        "start",
        "advance",
        "on_reply",
        "on_operation",
        "on_timer",
        "on_retry",
    }
)


class Workflow(ABC):
    name: ClassVar[str]
    action_types: ClassVar[tuple[str, ...]] = ACTION_TYPES
    requires_instance_actions: ClassVar[bool] = True
    #: The workflow's own persisted state, if it keeps any.
    state: ClassVar[type[ComponentState] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in vars(cls):
            if attr.startswith("on_") and attr not in HOOKS:
                hooks = ", ".join(sorted(h for h in HOOKS if h.startswith("on_")))
                raise ContractError(
                    f"{cls.__name__}.{attr}", f"is no workflow hook (the hooks: {hooks})"
                )

    @classmethod
    def validate_request(cls, request: SessionRequest, action_names: Iterable[str]) -> None:
        """Raise InvalidInput for a request this workflow cannot run."""
        check_request_actions(request, cls.action_types, action_names)

    @classmethod
    def retiring(cls, request: SessionRequest) -> frozenset[str]:
        """Hosts this session decommissions (emptied, then left out of service)."""
        return frozenset(request.decommission_hosts)

    @abstractmethod
    def start(self, ctx: SessionContext) -> None: ...

    @abstractmethod
    def advance(self, ctx: SessionContext) -> None: ...

    def on_reply(self, ctx: SessionContext, reply: ProjectReply) -> ReplyOutcome:
        return ReplyOutcome(accepted=True)

    def on_operation(self, ctx: SessionContext, result: OpResult) -> None:
        return None

    def on_timer(self, ctx: SessionContext, timer: TimerFired) -> None:
        return None

    def on_retry(self, ctx: SessionContext) -> None:
        """The admin retried a failed session: reset what the workflow keeps."""
        return
