"""The indexes of a working set, kept in step by its setters so
that no decision scans the fleet: hosts by state and type, instances by
host, project, (project, host) and state, projects awaiting a reply with
O(1) counts, and free vCPUs per host in buckets per placement class.

Pure bookkeeping over names and ids; the working set calls these on every
change of an indexed field and nowhere else."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from itertools import count
from typing import Any, Final, TypeVar
from weakref import ref

__all__ = ["CapacityIndex", "HostIndex", "InstanceIndex", "Loan", "ProjectIndex", "multimap_move"]

#: An instance in this state takes no room on its host.
ABSENT_STATES: Final = frozenset({"GONE"})
#: An instance in this state holds room on its move's target too.
MOVING_STATE: Final = "IN_ACTION"
#: An instance in one of these states is no longer the session's work.
OUT_OF_SCOPE_STATES: Final = frozenset({"GONE", "OUT_OF_SCOPE"})


K = TypeVar("K")

#: Where every index of this process takes the number of its latest change
#: (``changed``): one sequence, so no two states of any indexes share a
#: number. A session loaded again (stepped by another process, or a broken
#: step dropped) builds new indexes, which take numbers never taken before:
#: a reader that kept a number sees a change, never an old number again.
_CHANGES = count(1)
#: Where each capacity index's change log takes the number of its first
#: entry (times ``_LOG_SPAN``): no two indexes of this process share a mark,
#: so a mark of an index built before a load is unknown to the next one.
_LOG_EPOCHS = count(1)
_LOG_SPAN: Final = 1 << 40
#: The capacity change log keeps at least this many of its latest entries.
LOG_KEEP: Final = 8192


def multimap_add(index: dict[K, set[str]], key: K, item: str) -> None:
    members = index.get(key)
    if members is None:  # not setdefault: it made a set at every call
        index[key] = {item}
    else:
        members.add(item)


def multimap_remove(index: dict[K, set[str]], key: K, item: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(item)
        if not members:
            del index[key]


def multimap_move(index: dict[K, set[str]], old: K, new: K, item: str) -> None:
    """:func:`multimap_remove` from ``old`` then :func:`multimap_add` to
    ``new``, written out (every change of an instance's state or host: a
    few times a move)."""
    if old == new:
        return
    members = index.get(old)
    if members is not None:
        members.discard(item)
        if not members:
            del index[old]
    members = index.get(new)
    if members is None:
        index[new] = {item}
    else:
        members.add(item)


def tuplemap_add(index: dict[K, tuple[str, ...]], key: K, item: str) -> None:
    """Add ``item`` to the members of ``key`` kept as a tuple: for a multimap
    with about one member per key and a key per instance. A set is an object
    the garbage collector walks at each full collection; a tuple of strings
    is untracked by it at its first look."""
    members = index.get(key)
    index[key] = (item,) if members is None else (*members, item)


def tuplemap_remove(index: dict[K, tuple[str, ...]], key: K, item: str) -> None:
    members = index.get(key)
    if members is None or item not in members:
        return
    if len(members) == 1:
        del index[key]
    else:
        index[key] = tuple(m for m in members if m != item)


class Loan:
    """What a reader of a lent list holds for as long as it reads the list
    (a generator keeps it in its frame): the list is copied at a change only
    while its loan is alive."""

    __slots__ = ("__weakref__",)


class HostIndex:
    """Host names by state and by type, and per state, and per (state, type),
    in position order (kept sorted as hosts change state: no sort when a
    workflow asks, and a count of one type is a list's length). A list in
    position order handed to a reader (:meth:`ordered_names`) is copied at
    its next change instead of changed while that reader is alive, so the
    reader keeps it as it was without a copy of most of the fleet at each
    decision, nor at each change after a reader done with it."""

    __slots__ = (
        "_lent",
        "by_state",
        "by_type",
        "changed",
        "ordered",
        "ordered_of_type",
        "rank",
        "type_of",
    )

    def __init__(self) -> None:
        #: The number of the latest change of a host's state (``_CHANGES``).
        self.changed = next(_CHANGES)
        self.by_state: dict[str, set[str]] = {}
        self.by_type: dict[str, set[str]] = {}
        self.ordered: dict[str, list[str]] = {}
        self.ordered_of_type: dict[tuple[str, str], list[str]] = {}
        #: (position, name) per host: the lists' sort key, read through the
        #: dict's own lookup (no Python call per comparison of a bisection).
        self.rank: dict[str, tuple[int, str]] = {}
        self.type_of: dict[str, str] = {}
        # Per list in ``ordered`` or ``ordered_of_type`` a reader may hold
        # (by its key): whether that reader is still alive.
        self._lent: dict[Any, Callable[[], object]] = {}

    def add(self, name: str, state: str, type_: str, position: int = 0) -> None:
        self.changed = next(_CHANGES)
        multimap_add(self.by_state, state, name)
        multimap_add(self.by_type, type_, name)
        self.rank[name] = (position, name)
        self.type_of[name] = type_
        rank = self.rank.__getitem__
        insort(_lendable(self.ordered, state, self._lent), name, key=rank)
        insort(_lendable(self.ordered_of_type, (state, type_), self._lent), name, key=rank)

    def restate(self, name: str, old: str, new: str) -> None:
        if old == new:
            return
        self.changed = next(_CHANGES)
        multimap_move(self.by_state, old, new, name)
        type_, rank, lent = self.type_of[name], self.rank.__getitem__, self._lent
        _move_sorted(self.ordered, old, new, name, lent, rank)
        _move_sorted(self.ordered_of_type, (old, type_), (new, type_), name, lent, rank)

    def in_state(self, *states: str, type_: str | None = None) -> set[str]:
        found: set[str] = set()
        if type_ is None:
            for state in states:
                found |= self.by_state.get(state, set())
        else:
            for state in states:
                found.update(self.ordered_of_type.get((state, type_), ()))
        return found

    def in_order(self, state: str) -> list[str]:
        """The hosts in ``state`` by position (then name): a new list."""
        return list(self.ordered.get(state, ()))

    def ordered_names(
        self, state: str, type_: str | None = None, reader: object = None
    ) -> Sequence[str]:
        """The hosts in ``state`` (of ``type_`` if given) by position (then
        name) without a copy: later changes do not show in it; not to be
        changed by the caller. With ``reader``, the list is kept as it was
        only while ``reader`` is alive (it must hold the list no longer than
        itself): a later change finds it dead and changes the list in place."""
        key: str | tuple[str, str] = state if type_ is None else (state, type_)
        names = (
            self.ordered.get(state) if type_ is None else self.ordered_of_type.get((state, type_))
        )
        if names is None:
            return ()
        _lend(self._lent, key, reader)
        return names

    def count(self, *states: str) -> int:
        return sum(len(self.by_state.get(state, ())) for state in states)


class InstanceIndex:
    """Instance ids by host, by project, by (project, host) and by state, and
    per host how many of its instances are still the session's work; the
    session's hosts (those made known by :meth:`know_host`) that have none
    are kept as a set (``vacant``): an empty host is found without a look at
    every busy one."""

    __slots__ = (
        "_known", "_sorted_on", "by_host", "by_project", "by_project_host", "by_state",
        "changed", "in_scope_on", "vacant",
    )  # fmt: skip

    def __init__(self) -> None:
        #: The number of the latest change of an instance's state or host
        #: (``_CHANGES``).
        self.changed = next(_CHANGES)
        self.by_host: dict[str, set[str]] = {}
        self.by_project: dict[str, set[str]] = {}
        # One key per (project, host) pair, mostly of one instance: tuples,
        # not sets (see ``tuplemap_add``).
        self.by_project_host: dict[tuple[str, str], tuple[str, ...]] = {}
        self.by_state: dict[str, set[str]] = {}
        self.in_scope_on: dict[str, int] = {}
        # Host -> its instance ids sorted, until an instance arrives or leaves:
        # a drain reads the host it empties several times a step, and sorted
        # it each time.
        self._sorted_on: dict[str, list[str]] = {}
        self._known: set[str] = set()
        self.vacant: set[str] = set()

    def know_host(self, host: str) -> None:
        """``host`` is one of the session's: kept in ``vacant`` while none of
        its instances is the session's work."""
        self.changed = next(_CHANGES)
        self._known.add(host)
        if host not in self.in_scope_on:
            self.vacant.add(host)

    def add(self, instance_id: str, project: str, host: str, state: str) -> None:
        self.changed = next(_CHANGES)
        multimap_add(self.by_host, host, instance_id)
        multimap_add(self.by_project, project, instance_id)
        tuplemap_add(self.by_project_host, (project, host), instance_id)
        multimap_add(self.by_state, state, instance_id)
        self._scope(host, state, 1)
        self._sorted_on.pop(host, None)

    def rehost(self, instance_id: str, project: str, old: str, new: str) -> None:
        self.changed = next(_CHANGES)
        multimap_move(self.by_host, old, new, instance_id)
        if old != new:
            tuplemap_remove(self.by_project_host, (project, old), instance_id)
            tuplemap_add(self.by_project_host, (project, new), instance_id)
        self._sorted_on.pop(old, None)
        self._sorted_on.pop(new, None)

    def sorted_on(self, host: str) -> list[str]:
        """The ids of the instances on ``host``, sorted (do not change the list)."""
        found = self._sorted_on.get(host)
        if found is None:
            found = self._sorted_on[host] = sorted(self.by_host.get(host, ()))
        return found

    def restate(self, instance_id: str, old: str, new: str) -> None:
        self.changed = next(_CHANGES)
        multimap_move(self.by_state, old, new, instance_id)

    def rescope(self, old: tuple[str, str], new: tuple[str, str]) -> None:
        """An instance went from (host, state) ``old`` to ``new``."""
        if old == new:
            return
        if old[0] == new[0] and (old[1] in OUT_OF_SCOPE_STATES) == (new[1] in OUT_OF_SCOPE_STATES):
            return  # the same host, in scope before and after (or neither): no count changes
        self._scope(*old, -1)
        self._scope(*new, 1)

    def _scope(self, host: str, state: str, sign: int) -> None:
        if state in OUT_OF_SCOPE_STATES:
            return
        count = self.in_scope_on.get(host, 0) + sign
        if count:
            self.in_scope_on[host] = count
            self.vacant.discard(host)
        else:
            del self.in_scope_on[host]
            if host in self._known:
                self.vacant.add(host)


class ProjectIndex:
    """Projects awaiting a reply, by the state they were asked about, with
    the total kept as a counter."""

    __slots__ = ("awaiting", "awaiting_total")

    def __init__(self) -> None:
        self.awaiting: dict[str | None, set[str]] = {}
        self.awaiting_total = 0

    def update(
        self, project: str, old: tuple[bool, str | None], new: tuple[bool, str | None]
    ) -> None:
        """``old``/``new``: (awaiting, state) before and after a change."""
        if old == new:
            return
        if old[0]:
            multimap_remove(self.awaiting, old[1], project)
            self.awaiting_total -= 1
        if new[0]:
            multimap_add(self.awaiting, new[1], project)
            self.awaiting_total += 1

    def awaiting_count(self, state: str | None = None) -> int:
        if state is None:
            return self.awaiting_total
        return len(self.awaiting.get(state, ()))


class CapacityIndex:
    """Free vCPUs per host (its vCPUs minus the instances on it and the moves
    in flight towards it), and per placement class (the host type) the hosts
    bucketed by free vCPUs, so the most free hosts are found without a scan.
    A host with unknown capacity (vcpus <= 0) has no free figure. Each
    bucket is also kept as a name-sorted list (``ordered``): a bucket can
    hold most of a large fleet, and sorting it at each look made every
    placement cost grow with the fleet. A list handed to a reader
    (:meth:`level`) is copied at its next change instead of changed, as
    :class:`HostIndex` does: a placement reads a few hosts of it, and copied
    all of them at each look. The enabled hosts of each bucket are kept
    name-sorted too, all of them (``enabled``) and per host state
    (``in_state``), so that :meth:`room` answers in a few bisections per
    bucket what walking the most free hosts one by one answered (a walk of
    up to a hundred hosts per decision of the constrained workflow). Those
    two are made at their first reading and kept from then on: a workflow
    that never asks for the room (the rolling one) does not keep them at
    each move.

    Which hosts changed, not only that some did: once a reader asks for a
    mark (:meth:`change_mark`), every writer of a host's vCPUs, state,
    enabled flag or of what instances take on it appends the host's name to
    ``log`` (where it takes a new ``changed``), and :meth:`changed_since`
    answers from it."""

    __slots__ = (
        "_enabled", "_in_state", "_lent", "buckets", "changed", "is_enabled", "log",
        "log_start", "ordered", "reserved", "state_of", "type_of", "used", "vcpus",
    )  # fmt: skip

    def __init__(self) -> None:
        #: The number of the latest change of a host's free vCPUs, enabled
        #: flag or state, or of what an instance takes (``_CHANGES``).
        self.changed = next(_CHANGES)
        self.vcpus: dict[str, int] = {}
        self.type_of: dict[str, str] = {}
        self.used: dict[str, int] = {}
        self.reserved: dict[str, int] = {}
        self.buckets: dict[str, dict[int, set[str]]] = {}
        self.ordered: dict[str, dict[int, list[str]]] = {}
        self.state_of: dict[str, str] = {}
        self.is_enabled: dict[str, bool] = {}
        # ``enabled`` and ``in_state``, once read (None: not kept yet).
        self._enabled: dict[str, dict[int, list[str]]] | None = None
        self._in_state: dict[str, dict[int, dict[str, list[str]]]] | None = None
        # Per placement class, per free vCPUs whose list in ``ordered`` a
        # reader may hold: whether that reader is still alive.
        self._lent: dict[str, dict[int, Callable[[], object]]] = {}
        #: The hosts changed, in order, once a mark was asked for (None
        #: before: a session no one asks costs no log), and the mark of its
        #: first entry.
        self.log: list[str] | None = None
        self.log_start = 0

    @property
    def enabled(self) -> dict[str, dict[int, list[str]]]:
        """Per placement class, per free vCPUs: the enabled hosts, by name."""
        if self._enabled is None:
            self._stand_all()
        assert self._enabled is not None
        return self._enabled

    @property
    def in_state(self) -> dict[str, dict[int, dict[str, list[str]]]]:
        """Per placement class, per free vCPUs, per host state: the enabled
        hosts, by name."""
        if self._in_state is None:
            self._stand_all()
        assert self._in_state is not None
        return self._in_state

    def _stand_all(self) -> None:
        """Make ``enabled`` and ``in_state`` from the buckets (their
        name-sorted lists, so each list made is sorted); kept from then on
        by every change (:meth:`_stand`, :meth:`_unstand`, :meth:`_refile`)."""
        enabled: dict[str, dict[int, list[str]]] = {}
        in_state: dict[str, dict[int, dict[str, list[str]]]] = {}
        for type_, levels in self.ordered.items():
            for free, names in levels.items():
                for name in names:
                    if self.is_enabled[name]:
                        enabled.setdefault(type_, {}).setdefault(free, []).append(name)
                        by_state = in_state.setdefault(type_, {}).setdefault(free, {})
                        by_state.setdefault(self.state_of[name], []).append(name)
        self._enabled, self._in_state = enabled, in_state

    def change_mark(self) -> int:
        """A mark of the capacity as it is now, for :meth:`changed_since`
        (the log starts at the first one; it keeps at least the last
        :data:`LOG_KEEP` entries)."""
        log = self.log
        if log is None:
            log = self.log = []
            self.log_start = next(_LOG_EPOCHS) * _LOG_SPAN
        elif len(log) > 2 * LOG_KEEP:
            drop = len(log) - LOG_KEEP
            del log[:drop]
            self.log_start += drop
        return self.log_start + len(log)

    def changed_since(self, mark: int) -> set[str] | None:
        """The hosts whose free vCPUs, vCPUs, state or enabled flag changed
        since ``mark`` (a few more, perhaps: changed and changed back, or
        only what instances take changed hands); None when not known: the
        mark is older than the log keeps, or another index's (this one built
        since: the session loaded again)."""
        log = self.log
        start = self.log_start
        if log is None or not start <= mark <= start + len(log):
            return None
        return set(log[mark - start :])

    def add_host(self, name: str, type_: str, vcpus: int, state: str, enabled: bool) -> None:
        self.changed = next(_CHANGES)
        if self.log is not None:
            self.log.append(name)
        self.vcpus[name] = vcpus
        self.type_of[name] = type_
        self.used.setdefault(name, 0)
        self.reserved.setdefault(name, 0)
        self.state_of[name] = state
        self.is_enabled[name] = enabled
        self._file(name)

    def restand(self, name: str, state: str, enabled: bool) -> None:
        """A host's state or enabled flag changed (it moves between the
        per-state lists of its bucket, not between buckets)."""
        if self.state_of[name] == state and self.is_enabled[name] == enabled:
            return
        self.changed = next(_CHANGES)
        if self.log is not None:
            self.log.append(name)
        free = self.free(name)
        if free is None or name not in self.buckets.get(self.type_of[name], {}).get(free, ()):
            self.state_of[name] = state
            self.is_enabled[name] = enabled
            return
        self._unstand(name, free)
        self.state_of[name] = state
        self.is_enabled[name] = enabled
        self._stand(name, free)

    def free(self, host: str) -> int | None:
        vcpus = self.vcpus.get(host)
        if vcpus is None or vcpus <= 0:
            return None
        return vcpus - self.used.get(host, 0) - self.reserved.get(host, 0)

    def adjust(self, host: str, *, used: int = 0, reserved: int = 0) -> None:
        """Change what an instance takes on ``host`` (a host the session may
        not list: instances can sit on hosts outside it)."""
        if not used and not reserved:
            return
        self.changed = next(_CHANGES)
        if self.log is not None:
            self.log.append(host)
        if used + reserved == 0 and host in self.vcpus:
            # Room changes hands (reserved -> used): free, and so the
            # buckets, stay as they are.
            self.used[host] = self.used.get(host, 0) + used
            self.reserved[host] = self.reserved.get(host, 0) + reserved
            return
        old = self.free(host)
        self.used[host] = self.used.get(host, 0) + used
        self.reserved[host] = self.reserved.get(host, 0) + reserved
        if old is not None:  # (None: unknown capacity, filed nowhere, before and after)
            self._refile(host, old, old - used - reserved)

    def most_free(self, placement_class: str) -> Iterator[str]:
        """Hosts of the class, most free first, then by name."""
        ordered = self.ordered.get(placement_class, {})
        loan = Loan()
        for free in sorted(ordered, reverse=True):
            yield from self.level(placement_class, free, loan)

    def level(self, placement_class: str, free: int, reader: object = None) -> Sequence[str]:
        """The hosts of the class with ``free`` vCPUs free, by name, without
        a copy: later changes do not show in it; not to be changed by the
        caller. With ``reader`` (a :class:`Loan` the caller holds while it
        reads the list), the list is kept as it was only while ``reader`` is
        alive: the move a target search chose changes it in place."""
        names = self.ordered.get(placement_class, {}).get(free)
        if names is None:
            return ()
        _lend(self._lent.setdefault(placement_class, {}), free, reader)
        return names

    def _writable(self, placement_class: str, free: int) -> list[str]:
        return _lendable(
            self.ordered.setdefault(placement_class, {}),
            free,
            self._lent.setdefault(placement_class, {}),
        )

    def room(
        self,
        placement_class: str,
        first: int,
        states: Collection[str],
        exclude: Collection[str] = (),
        least: int = 1,
    ) -> int:
        """The free vCPUs (at least 0 each) of the hosts in one of ``states``
        among the first ``first`` enabled hosts of the class with at least
        ``least`` (and at least one) free, most free first then by name, the
        hosts in ``exclude`` passed over (they take no position). A few
        bisections per bucket: the last bucket reached is cut at its
        ``positions``-th name, and each state's list counted up to that
        name."""
        enabled = self.enabled.get(placement_class)
        if not enabled or first <= 0:
            return 0
        least = max(1, least)
        in_state = self.in_state[placement_class]
        # The excluded hosts this class holds, by bucket, each with its state.
        skipped: dict[int, list[str]] = {}
        for name in exclude:
            free = self.free(name)
            if (
                free is not None
                and free >= least
                and self.is_enabled.get(name)
                and self.type_of[name] == placement_class
            ):
                skipped.setdefault(free, []).append(name)
        positions = first
        room = 0
        for free in sorted(enabled, reverse=True):
            if free < least or positions <= 0:
                break
            names = enabled[free]
            passed: Sequence[str] = sorted(skipped[free]) if free in skipped else ()
            last: str | None = None  # the bucket's last name counted (None: all)
            if len(names) - len(passed) <= positions:
                positions -= len(names) - len(passed)
            else:
                # The name at the cut: the positions-th of the names not passed over.
                cut = positions - 1
                for name in passed:
                    if bisect_left(names, name) <= cut:
                        cut += 1
                last = names[cut]
                positions = 0
            taken = _in_states(in_state[free], states, last)
            if passed:
                taken -= sum(
                    1 for n in passed if (last is None or n <= last) and self.state_of[n] in states
                )
            room += free * taken
        return room

    def _refile(self, host: str, old: int, new: int) -> None:
        """``_unfile`` at ``old`` free vCPUs then ``_file`` at ``new``, in one
        pass (each move changes the free vCPUs of two hosts: its target's
        when it starts, its source's when it ends)."""
        type_ = self.type_of[host]
        buckets = self.buckets.get(type_, {})
        members = buckets.get(old)
        if members is None or host not in members:
            self._file(host)  # not filed at ``old``: what _unfile passes over
            return
        members.discard(host)
        if not members:
            del buckets[old]
        multimap_add(buckets, new, host)
        _move_sorted(self.ordered[type_], old, new, host, self._lent.setdefault(type_, {}))
        if self._enabled is not None and self._in_state is not None and self.is_enabled[host]:
            enabled = self._enabled[type_]
            _remove_sorted(enabled, old, host)
            insort(enabled.setdefault(new, []), host)
            by_state, state = self._in_state[type_], self.state_of[host]
            _remove_sorted(by_state[old], state, host)
            if not by_state[old]:
                del by_state[old]
            insort(by_state.setdefault(new, {}).setdefault(state, []), host)

    def _file(self, host: str) -> None:
        self.changed = next(_CHANGES)
        if self.log is not None:
            self.log.append(host)
        free = self.free(host)
        if free is not None:
            type_ = self.type_of[host]
            members = self.buckets.setdefault(type_, {}).setdefault(free, set())
            if host not in members:
                members.add(host)
                insort(self._writable(type_, free), host)
                self._stand(host, free)

    def _unfile(self, host: str) -> None:
        self.changed = next(_CHANGES)
        if self.log is not None:
            self.log.append(host)
        free = self.free(host)
        if free is not None:
            type_ = self.type_of[host]
            members = self.buckets[type_].get(free)
            if members is None or host not in members:
                return
            multimap_remove(self.buckets[type_], free, host)
            names = self._writable(type_, free)
            del names[bisect_left(names, host)]
            if not names:
                del self.ordered[type_][free]
            self._unstand(host, free)

    def _stand(self, host: str, free: int) -> None:
        """File a filed host in its bucket's enabled and per-state lists
        (the lists :meth:`room` counts; a state change touches only these,
        not the bucket's list a reader may hold), once they are kept."""
        if self._enabled is not None and self._in_state is not None and self.is_enabled[host]:
            type_ = self.type_of[host]
            insort(self._enabled.setdefault(type_, {}).setdefault(free, []), host)
            by_state = self._in_state.setdefault(type_, {}).setdefault(free, {})
            insort(by_state.setdefault(self.state_of[host], []), host)

    def _unstand(self, host: str, free: int) -> None:
        if self._enabled is not None and self._in_state is not None and self.is_enabled[host]:
            type_ = self.type_of[host]
            _remove_sorted(self._enabled[type_], free, host)
            by_state = self._in_state[type_]
            _remove_sorted(by_state[free], self.state_of[host], host)
            if not by_state[free]:
                del by_state[free]


def _held() -> object:
    return True


#: A list lent with no reader to watch: held until its next change.
_HELD: Final[Callable[[], object]] = _held


def _lend(lent: dict[Any, Callable[[], object]], key: object, reader: object) -> None:
    """Record that the list at ``key`` is lent to ``reader`` (None: to no
    one to watch, held until its next change)."""
    held = lent.get(key)
    if reader is None or (held is not None and held() is not None):
        # Lent for good, or to two readers at once: copied at the next change.
        lent[key] = _HELD
    else:
        lent[key] = ref(reader)


def _lendable(
    lists: dict[K, list[str]], key: K, lent: dict[Any, Callable[[], object]]
) -> list[str]:
    """``lists[key]`` to change in place (made if missing): a copy when a
    reader it was lent to (``lent[key]``) is still alive, which then keeps
    it as it was."""
    names = lists.get(key)
    if names is None:
        names = lists[key] = []
    else:
        held = lent.pop(key, None)
        if held is not None and held() is not None:
            names = lists[key] = names.copy()
    return names


def _move_sorted(
    lists: dict[K, list[str]],
    old: K,
    new: K,
    name: str,
    lent: dict[Any, Callable[[], object]],
    rank: Callable[[str], Any] | None = None,
) -> None:
    """Move ``name`` from the sorted list ``lists[old]`` (dropped once empty)
    to ``lists[new]``, each copied first if a reader still holds it
    (:func:`_lendable`); sorted by ``rank`` if given, else by name."""
    before = _lendable(lists, old, lent)
    del before[bisect_left(before, name if rank is None else rank(name), key=rank)]
    if not before:
        del lists[old]
    insort(_lendable(lists, new, lent), name, key=rank)


def _in_states(by_state: Mapping[str, list[str]], states: Collection[str], last: str | None) -> int:
    """How many names the name-sorted lists of ``states`` in ``by_state``
    hold (up to ``last`` when one is given). A loop, not a sum over a
    generator: :meth:`CapacityIndex.room` counts a few buckets per placement
    decision, each for a few states."""
    taken = 0
    for state in states:
        names = by_state.get(state)
        if names:
            taken += len(names) if last is None else bisect_right(names, last)
    return taken


def _remove_sorted(lists: dict[K, list[str]], key: K, name: str) -> None:
    """Take ``name`` out of the sorted list ``lists[key]`` (dropped once empty)."""
    names = lists[key]
    del names[bisect_left(names, name)]
    if not names:
        del lists[key]
