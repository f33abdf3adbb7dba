"""What the constrained waves keep between steps (:class:`ConstrainedState`),
the stage flags of a host in the waves, the constants and the small helpers
every module of the package reads.

What it keeps: :class:`ConstrainedState` (constant size: the wave counter,
the cache stamp, how many recoveries started, the first wave's partial
host and the second moves it has left, and the moves being retried,
bounded by the groups' impact limits, not by the fleet), the
:class:`~fenix_core.workflows.rolling.RollingState` of the parts it
shares with the rolling workflow, and per host its stage
(``HostView.stage``), per instance its wave, lead time and recovery
(``InstanceView.wave`` / ``not_before`` / ``impacted_until``)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from operator import attrgetter
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, Self

import attrs

from ...contract import (
    ComponentState,
    HostView,
    SessionContext,
)
from ...states import (
    FINAL_SESSION_STATES,
    HostState,
    InstanceState,
    SessionState,
)
from ..rolling import (
    STAYS,
)

#: Seconds one move is expected to take (used to rank groups by work left).
_MOVE_ESTIMATE = 30.0
#: ``HostView.stage`` of a host in the waves: the index of its next stage in
#: the low bits, and flags.
_STAGE = 0xFFFF
WE_DISABLED = 1 << 16  # this session disabled it: enabled again at the end
BUSY = 1 << 17  # an operation of its current stage runs
DISABLING = 1 << 18  # its DisableHost (before the drain) runs
#: Opened in a first wave (second_moves.first_wave): its instances may land
#: on hosts still queued, and move twice.
FIRST_DRAINED = 1 << 19
_OPEN = (HostState.DRAINING, HostState.DRAINED, HostState.IN_MAINTENANCE)
#: The open hosts that run their stages.
_STAGED = (HostState.DRAINED, HostState.IN_MAINTENANCE)
_WAITING = (InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN)
_STILL_TO_MOVE = frozenset({InstanceState.PENDING, *_WAITING})
#: The states of an instance that its (pending or draining) host holds as a
#: member, one the host still has to see leave: not moving (IN_ACTION: it
#: counts where its move ends), not gone, and not out of the session's scope
#: (never moved: a host holding only those is empty, as for ``IN_SCOPE``).
#: The one rule for a host's load (``_Step.members_on``, ``_Draining``) and
#: for the pending hosts named per group (``_Counts.pending_hosts_of``): the
#: groups the kept weights put on a host are those of its load.
_MEMBER_STATES = frozenset(InstanceState) - {
    InstanceState.IN_ACTION,
    InstanceState.GONE,
    InstanceState.OUT_OF_SCOPE,
}
_FINAL = FINAL_SESSION_STATES
_ASKED = SessionState.PLANNED_MAINTENANCE.value
_VCPUS = attrgetter("vcpus")  # a member's vcpus (summed per draining host by a placement)


def _pairs(value: object) -> tuple[tuple[str, int, tuple[str, ...]], ...]:
    out = []
    for item in value if isinstance(value, list | tuple) else ():
        iid, attempts, refused = item
        out.append((str(iid), int(attempts), tuple(str(r) for r in refused)))
    return tuple(out)


@attrs.define(slots=True)
class ConstrainedState(ComponentState):
    """What the waves remember between steps (constant size)."""

    component: ClassVar[str] = "constrained"
    #: 2: ``recovering`` (the instances in recovery_time, a list growing
    #: with the fleet rewritten at each move's end) gave way to
    #: ``recoveries``; the instances' ``impacted_until`` say which they are.
    #: 3: ``partial`` and ``partial_twice`` (a first wave's partial last host).
    schema_version: ClassVar[int] = 3

    wave: int = 0  # the last question round
    #: Changes whenever the per-group counts change: a process whose cache
    #: has another stamp rebuilds it.
    stamp: int = 0
    #: Recoveries started (a move's end with a recovery_time): a process
    #: whose mirror of the instances in recovery (:class:`_Recovery`) was
    #: built at another count reads them again from the instances.
    recoveries: int = 0
    #: Moves that failed and wait for their retry: (instance, attempts, refused targets).
    retrying: tuple[tuple[str, int, tuple[str, ...]], ...] = attrs.field(
        default=(), converter=_pairs
    )
    wake: str | None = None  # when the waves wake up by themselves (ISO)
    #: Times the waves, stuck for room, waited for a host outside the session
    #: to come back into service (at most MAX_WAIT_ROUNDS).
    waited: int = 0
    #: Why the first wave has its size (second_moves.FirstWaveSize.why): said
    #: in the plan with each move of its instances onto a queued host.
    first_wave: str | None = None
    #: The first wave's partial last host (second_moves.FirstWave.partial),
    #: while some of its instances may still move twice: ``partial_twice``
    #: of them (a move of one onto a host still queued takes one).
    partial: str | None = None
    partial_twice: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any], version: int) -> Self:
        if version == 1:
            # A session saved by the release before: its instances'
            # ``impacted_until`` say which are in recovery.
            data = {k: v for k, v in data.items() if k != "recovering"}
            version = 2
        if version == 2:
            # Before partial first-wave hosts: none (every first drained
            # host's instances may move twice, as they were opened for).
            data = {**data, "partial": None, "partial_twice": 0}
            version = 3
        return super().from_json(data, version)


#: A target's members when no group has a per-host limit (none are counted).
_NONE: Mapping[str, int] = MappingProxyType({})
_GROUP_OF = attrgetter("group_id")  # a member's group (read for every member of a decision)
#: A host view's place in the fleet's order (a sort key read in C, no call per view).
_POSITION = attrgetter("position", "name")


def _count_down(count: dict[str, int], key: str) -> None:
    """One fewer of ``key`` in ``count`` (dropped at none)."""
    n = count[key] - 1
    if n:
        count[key] = n
    else:
        del count[key]


def _target_state(view: HostView, retiring: frozenset[str]) -> bool | None:
    """Whether an instance placed on ``view`` stays (True), moves again
    (False), or the host takes none (None); ``retiring``: the hosts the
    session decommissions."""
    if view.type != "compute" or not view.enabled or view.name in retiring:
        return None
    state = view.state
    if state in STAYS:
        return True
    if state == HostState.PENDING:
        return False
    return None


def _new_stamp() -> int:
    return random.getrandbits(48) or 1


def _wake_at(ctx: SessionContext, cst: ConstrainedState, when: datetime | None) -> None:
    """Wake the waves up at ``when`` (if sooner than they already wake)."""
    if when is None:
        return
    current = datetime.fromisoformat(cst.wake) if cst.wake is not None else None
    if current is not None and current <= when:
        return
    ctx.set_timer("waves", when)
    cst.wake = when.isoformat()


class Waves(Protocol):
    """What the package's modules call back on the workflow
    (:class:`~fenix_core.workflows.constrained.workflow.ConstrainedWorkflow`,
    reached as ``_Step.wf``): the rolling base's reads of the views and the
    stage kept with the idle open hosts."""

    def _set_stage(self, ctx: SessionContext, host: str, stage: int) -> None: ...

    def _retiring(self, ctx: SessionContext) -> frozenset[str]: ...

    def _in_scope_on(self, ctx: SessionContext, host: str) -> bool: ...

    def _used(self, ctx: SessionContext, host: str) -> int: ...
