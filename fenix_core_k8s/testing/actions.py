"""NodeReboot: an action plug-in that reboots a fake node, for host actions in tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from fenix_core.clock import Clock
from fenix_core.hookspecs import Action, ActionContext, hookimpl
from fenix_core.model import OperationStatus

from .cluster import FakeCluster

__all__ = ["NodeReboot"]


class NodeReboot:
    """A ``host`` action named ``name`` that reboots the node in the fake cluster.

    The node goes NotReady at the start and Ready again ``seconds`` later
    (never, after :meth:`FakeCluster.node_stays_down`); the action itself is
    done after ``seconds``, and the engine's ``host_up`` check then waits for
    the node's Ready condition. ``runs`` lists (start time, node).
    """

    def __init__(self, cluster: FakeCluster, name: str = "reboot", seconds: float = 60.0) -> None:
        self.cluster = cluster
        self.name = name
        self.seconds = seconds
        self.runs: list[tuple[datetime, str | None]] = []
        self._started: dict[str, datetime] = {}

    @hookimpl
    def fenix_actions(self, clock: Clock) -> Sequence[Action]:
        return [self]

    def start(self, context: ActionContext) -> OperationStatus:
        if context.key not in self._started:
            self._started[context.key] = context.now
            self.runs.append((context.now, context.host))
            if context.host is not None:
                self.cluster.reboot_node(context.host, self.seconds)
        return self.poll(context)

    def poll(self, context: ActionContext) -> OperationStatus:
        due = self._started[context.key] + timedelta(seconds=self.seconds)
        if context.now >= due:
            return OperationStatus.done(context.host)
        return OperationStatus.running(retry_after=(due - context.now).total_seconds())
