"""NodeReboot: an action plug-in that reboots a fake node, for host actions in tests."""

from __future__ import annotations

from fenix_core.hookspecs import ActionContext
from fenix_core.model import OperationStatus
from fenix_core.testing import TimedAction

from .cluster import FakeCluster

__all__ = ["NodeReboot"]


class NodeReboot(TimedAction):
    """A ``host`` action named ``name`` that reboots the node in the fake cluster.

    The node goes NotReady when a run starts and Ready again ``seconds`` later
    (never, after :meth:`FakeCluster.node_stays_down`); the action itself is
    done after ``seconds``, and the engine's ``host_up`` check then waits for
    the node's Ready condition. ``runs`` lists (start time, node), as for
    :class:`~fenix_core.testing.TimedAction`.
    """

    def __init__(self, cluster: FakeCluster, name: str = "reboot", seconds: float = 60.0) -> None:
        super().__init__(name, seconds)
        self.cluster = cluster

    def start(self, context: ActionContext) -> OperationStatus:
        if context.key not in self._started and context.host is not None:
            self.cluster.reboot_node(context.host, self.seconds)
        return super().start(context)
