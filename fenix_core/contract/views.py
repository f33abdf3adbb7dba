"""Read-only views a workflow sees: frozen records and the indexed
collections that hand them out (answers in proportion to their size)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from datetime import datetime
from typing import Protocol

import attrs

from ..placement_rules import HostLimits
from ..states import HostState, InstanceState, SessionState

#: Host states in which a host's work has ended whatever its times say.
_WORK_ENDED = frozenset({HostState.SKIPPED, HostState.REMOVED})

__all__ = [
    "CapacityView",
    "HostView",
    "HostsView",
    "InstanceView",
    "InstancesView",
    "ProjectView",
    "ProjectsView",
    "SessionInfo",
]


@attrs.frozen
class HostView:
    name: str
    type: str
    state: HostState
    vcpus: int
    enabled: bool
    position: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    #: The workflow's own progress on this host (``SessionContext.set_host_stage``),
    #: kept on the host's record: what a workflow running several hosts at
    #: once remembers per host without a list in its state.
    stage: int = 0

    @property
    def in_flight(self) -> bool:
        """Admitted and its work not ended (not finished, skipped or
        removed): ``SessionContext.admit`` answers every such host alike,
        admitted unless the session is paused."""
        return (
            self.started_at is not None
            and self.finished_at is None
            and self.state not in _WORK_ENDED
        )


@attrs.frozen
class InstanceView:
    instance_id: str
    project_id: str
    host: str
    vcpus: int
    state: InstanceState
    live_migratable: bool = True
    action: str | None = None
    #: How many times the instance moved host in this session (the engine counts).
    moves: int = 0
    #: While a Move with a target runs (IN_ACTION): that target, where the
    #: cloud already counts the instance.
    target: str | None = None
    #: The workflow's plan for the instance (``SessionContext.set_instance_plan``),
    #: kept on its record: the question round it was asked in, not to move
    #: before (a lead time), impacted until (a group's recovery time).
    wave: int | None = None
    not_before: datetime | None = None
    impacted_until: datetime | None = None


@attrs.frozen
class ProjectView:
    project_id: str
    managed: bool
    state: str | None  # the last state sent or answered
    awaiting: str | None  # the state it has not answered yet


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class SessionInfo:
    session_id: str
    workflow: str
    state: SessionState
    reason: str | None
    percent_done: int
    #: How the cloud driver can move instances off a host (InstanceAction
    #: values, the driver's order); empty: not known, every action.
    allowed_actions: tuple[str, ...] = attrs.field(default=(), converter=_names)


class HostsView(Protocol):
    def get(self, name: str) -> HostView | None: ...
    def in_state(self, *states: HostState, type: str | None = None) -> Collection[HostView]:
        """The hosts in any of ``states`` (of ``type`` if given), position order."""

    def without_instances(self, *states: HostState) -> Collection[HostView]:
        """The hosts in any of ``states`` that no instance still in the
        session's scope is on (every instance there GONE or OUT_OF_SCOPE),
        position order: what a workflow maintains without draining, found
        without looking at each host's instances."""

    def changes(self) -> int:
        """A number that changes whenever a host's state does: equal to one
        read before, no host changed state since (see
        :meth:`InstancesView.changes`)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[HostView]: ...  # position order


class InstancesView(Protocol):
    def get(self, instance_id: str) -> InstanceView | None: ...
    def on(self, host: str) -> Collection[InstanceView]: ...
    def of(self, project_id: str) -> Collection[InstanceView]: ...
    def of_on(self, project_id: str, host: str) -> Collection[InstanceView]: ...
    def in_state(self, state: InstanceState) -> Collection[InstanceView]: ...
    def changes(self) -> int:
        """A number that changes whenever an instance's state or host does
        (or one is added): equal to one read before, none changed since, in
        this process or another. What a workflow keeps from one step to the
        next (say, the outcome of a decision that changed nothing) stays
        good while these numbers (with :meth:`HostsView.changes` and
        :meth:`CapacityView.changes`) stay equal. Only equality means
        anything: a session loaded again (another process stepped it)
        answers a number never answered before."""

    def change_mark(self) -> int:
        """A mark of the instances as they are now, for :meth:`changed_since`."""

    def changed_since(self, mark: int) -> Collection[str] | None:
        """The ids of the instances changed since ``mark`` (anything their
        views show, or added), read from :meth:`change_mark`: what a
        workflow keeps per instance is brought up to date from these alone.
        None when that is not known: ``mark`` is older than the log keeps,
        or from before the session was loaded again (another process
        stepped it, a crash): then build what was kept anew."""


class ProjectsView(Protocol):
    def get(self, project_id: str) -> ProjectView | None: ...
    def awaiting(self, state: str | None = None) -> Collection[ProjectView]: ...
    def awaiting_count(self, state: str | None = None) -> int: ...
    def managed(self) -> Collection[ProjectView]: ...


class CapacityView(Protocol):
    """Free vCPUs, and where an instance may go.

    ``targets`` yields the hosts ``instance_id`` may move to, best first:
    enabled hosts of its placement classes (its host's type, or the types a
    ``host-types`` placement rule gives it) with room for it,
    none its placement rules forbid (the cloud's server groups, with moves in
    flight counted where they arrive: ``placement_rules.host_limits``), none
    in ``exclude`` (targets the cloud refused earlier in this move); ordered
    by the soft rules' penalty, then the most free vCPUs, then name."""

    def free(self, host: str) -> int: ...
    def targets(self, instance_id: str, *, exclude: Collection[str] = ()) -> Iterator[str]: ...
    def most_free(self, placement_class: str) -> Iterator[tuple[str, int]]:
        """The enabled hosts of ``placement_class`` with known capacity and
        their free vCPUs, most free first, then by name: the room the fleet
        has, read from an index (a caller that stops early pays for few),
        no instance's rules applied."""

    def room(
        self,
        placement_class: str,
        first: int,
        states: Collection[HostState],
        *,
        exclude: Collection[str] = (),
        least: int = 1,
    ) -> int:
        """The free vCPUs (at least 0 each) of the hosts in one of ``states``
        among the first ``first`` of :meth:`most_free` ``(placement_class)``
        with at least ``least`` free, the hosts in ``exclude`` passed over
        (they take no position): what summing that walk gives, read from
        the index's counts per bucket (a few bisections, not a walk of
        ``first`` hosts). With ``least`` an instance's vCPUs, and its host in
        ``exclude``, the walk is the one ``targets`` makes for an instance
        without placement rules."""

    def changes(self) -> int:
        """A number that changes whenever a host's free vCPUs, enabled flag
        or state do, or what an instance takes: equal to one read before,
        none changed since (see :meth:`InstancesView.changes`)."""

    def change_mark(self) -> int:
        """A mark of the capacity as it is now, for :meth:`changed_since`."""

    def changed_since(self, mark: int) -> Collection[str] | None:
        """The names of the hosts whose free vCPUs, enabled flag, state, type
        or vCPUs changed since ``mark``, read from :meth:`change_mark` (a move
        in flight changes its target's free vCPUs: the target is named; a
        few more may be named, changed and changed back, or hosts outside
        the session): what a workflow keeps per host (a window of the most
        free hosts) is brought up to date from these alone. None when that
        is not known: ``mark`` is older than the log keeps, or from before
        the session was loaded again (another process stepped it, a crash):
        then build what was kept anew. Answering None always is correct,
        and saves nothing."""

    def limits(self, instance_id: str) -> HostLimits:
        """The placement rules' limits on the instance's next host (the ones
        ``targets`` applies): what a workflow names when no target is left,
        e.g. ``stuck``, an affinity group the cloud never splits."""
