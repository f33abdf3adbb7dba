"""The draining hosts' instances still to leave them, kept with the counts
(:class:`_Draining`) and brought up to date from the change log.

The draining hosts' instances still to leave (``_Draining``: those a
placement holds back, the draining loads of an opening decision) are kept
with the counts and brought up to date from the instances the context's
change log names (``ctx.instances.changed_since``), built anew when it
cannot say; so are the moves in flight, which a decision reads once."""

from __future__ import annotations

from collections.abc import (
    Callable,
    Container,
    Iterable,
    Mapping,
)

import attrs

from ... import planner
from ...contract import (
    HostView,
    InstanceView,
    SessionContext,
)
from ...states import (
    HostState,
    InstanceAction,
    InstanceState,
)
from .state import (
    _GROUP_OF,
    _MEMBER_STATES,
    _STILL_TO_MOVE,
    _VCPUS,
    _count_down,
)


@attrs.frozen(eq=False)
class _HeldOn:
    """A draining host's instances the engine still has to move
    (:attr:`_Draining.held`) as a placement reads them: their views and
    members in id order, their ids, those of them that moved before, their
    vcpus, their groups (in the order they first come) and the one of least
    (vCPUs, id), the only one of the host :func:`~.targeting._window_sample`
    can take."""

    views: tuple[InstanceView, ...]
    members: tuple[planner.Member, ...]
    ids: frozenset[str]
    moved: frozenset[str]
    vcpus: int
    groups: dict[str, None]
    least: InstanceView

    @classmethod
    def of(
        cls,
        on: Mapping[str, InstanceView],
        held: Container[str],
        members: Callable[[Iterable[InstanceView]], list[planner.Member]],
    ) -> _HeldOn | None:
        """The instances ``on`` a host that are ``held``; None if none is."""
        views = tuple(on[i] for i in sorted(on) if i in held)
        if not views:
            return None
        made = tuple(members(views))
        fewest = min(v.vcpus for v in views)
        return cls(
            views,
            made,
            frozenset(v.instance_id for v in views),
            frozenset(v.instance_id for v in views if v.moves),
            sum(map(_VCPUS, made)),
            dict.fromkeys(map(_GROUP_OF, made)),
            # (The views are in id order: the first with the fewest vCPUs.)
            next(v for v in views if v.vcpus == fewest),
        )


@attrs.define(slots=True)
class _Draining:
    """The draining hosts' instances still to leave them (their members:
    :data:`_MEMBER_STATES`), and the instances moving now (on any host), kept with the counts
    between decisions and brought up to date
    from the instances changed since ``mark``
    (``ctx.instances.changed_since``) and the hosts that started or stopped
    draining since ``hosts_changes`` (``ctx.hosts.changes()``): each changed
    instance is taken from where it was kept and put where it is now (a
    host that started draining is read whole). Built anew when the log
    cannot say (the session loaded again, a mark older than it keeps):
    never trusted past what the log names."""

    mark: int
    hosts_changes: int
    #: Draining host -> its instances still to leave, by id.
    on: dict[str, dict[str, InstanceView]] = attrs.field(factory=dict)
    #: Instance -> the draining host it is kept under.
    where: dict[str, str] = attrs.field(factory=dict)
    #: Those of them the engine still has to move (``_STILL_TO_MOVE``, not
    #: their manager's own action): what a placement holds back.
    held: dict[str, InstanceView] = attrs.field(factory=dict)
    #: Draining host -> its load for the planner, built when first asked.
    loads: dict[str, planner.HostLoad] = attrs.field(factory=dict)
    #: Draining host -> its ``held`` instances as a placement reads them
    #: (:meth:`held_by_host`), for the hosts with any; the hosts whose
    #: instances changed since (read again when next asked).
    held_on: dict[str, _HeldOn] = attrs.field(factory=dict)
    held_changed: set[str] = attrs.field(factory=set)
    #: Per group, how many of ``held_on``'s hosts hold members of it, and
    #: those of these groups with a per-host limit.
    held_groups: dict[str, int] = attrs.field(factory=dict)
    held_limited: set[str] = attrs.field(factory=set)
    #: Draining host -> its view and chosen list (:meth:`chosen_on`) when
    #: the pump last found it disabled, in flight and each of those
    #: startable, and them by id (:meth:`startable`).
    steady: dict[str, tuple[HostView, list[InstanceView], dict[str, InstanceView]]] = attrs.field(
        factory=dict
    )
    #: Draining host -> its instances whose action is chosen, by id, and
    #: those of them in id order while none changed (:meth:`chosen_on`),
    #: for the hosts with any; the hosts whose list is to be sorted again.
    chosen: dict[str, dict[str, InstanceView]] = attrs.field(factory=dict)
    chosen_sorted: dict[str, list[InstanceView]] = attrs.field(factory=dict)
    chosen_changed: set[str] = attrs.field(factory=set)
    #: Draining host -> one of those lists, and its instances by id if each
    #: may start whenever its host may (:meth:`startable`), else None.
    chosen_plain: dict[str, tuple[list[InstanceView], dict[str, InstanceView] | None]] = (
        attrs.field(factory=dict)
    )
    #: Draining host -> one of those lists and its members (:meth:`members_of`).
    chosen_members: dict[str, tuple[list[InstanceView], list[planner.Member]]] = attrs.field(
        factory=dict
    )
    #: The instances moving now (IN_ACTION, on any host), by id, and in id
    #: order while none changed (:meth:`in_action`).
    moving: dict[str, InstanceView] = attrs.field(factory=dict)
    moving_sorted: list[InstanceView] | None = None
    #: Per group, how many of ``moving`` (built when first asked:
    #: :meth:`moving_per_group`), the group each was counted in, and the
    #: ids whose entry in ``moving`` changed since.
    moving_count: dict[str, int] | None = None
    moving_group: dict[str, str] = attrs.field(factory=dict)
    moving_changed: set[str] = attrs.field(factory=set)
    #: Of ``moving``, those bound for another host, by target and id, the
    #: target each is counted under, and per target those in id order
    #: while none changed (:meth:`arrivals`); the targets changed since.
    arriving: dict[str, dict[str, InstanceView]] = attrs.field(factory=dict)
    bound_for: dict[str, str] = attrs.field(factory=dict)
    arriving_sorted: dict[str, list[InstanceView]] = attrs.field(factory=dict)
    arriving_changed: set[str] = attrs.field(factory=set)

    @classmethod
    def read(cls, ctx: SessionContext) -> _Draining:
        kept = cls(ctx.instances.change_mark(), ctx.hosts.changes())
        for host in ctx.hosts.in_state(HostState.DRAINING):
            kept.read_host(ctx, host.name)
        kept.moving = {i.instance_id: i for i in ctx.instances.in_state(InstanceState.IN_ACTION)}
        for instance_id, view in kept.moving.items():
            kept._bound(instance_id, view)
        return kept

    def brought_up_to_date(self, ctx: SessionContext) -> _Draining:
        """This, up to date with the views (or built anew)."""
        changed = ctx.instances.changed_since(self.mark)
        if changed is None:
            return _Draining.read(ctx)
        hosts_changes = ctx.hosts.changes()
        if not changed and hosts_changes == self.hosts_changes:
            return self
        self.mark = ctx.instances.change_mark()
        on, where, held, loads = self.on, self.where, self.held, self.loads
        # Each changed instance taken out first, from the host it was kept
        # under (before a host that started draining is read whole: one may
        # have left a draining host for it), then put where it is now.
        get, moving = ctx.instances.get, self.moving
        views: list[InstanceView] = []
        for instance_id in changed:
            view = get(instance_id)
            if view is not None:
                views.append(view)
            if view is not None and view.state == InstanceState.IN_ACTION:
                moving[instance_id] = view
                self.moving_sorted = None
                self.moving_changed.add(instance_id)
                self._bound(instance_id, view)
            elif moving.pop(instance_id, None) is not None:
                self.moving_sorted = None
                self.moving_changed.add(instance_id)
                self._bound(instance_id, None)
            was = where.pop(instance_id, None)
            if was is not None:
                del on[was][instance_id]
                held.pop(instance_id, None)
                loads.pop(was, None)
                self.held_changed.add(was)
                chosen = self.chosen.get(was)
                if chosen is not None and chosen.pop(instance_id, None) is not None:
                    self.chosen_changed.add(was)
        if hosts_changes != self.hosts_changes:
            self.hosts_changes = hosts_changes
            names = {h.name for h in ctx.hosts.in_state(HostState.DRAINING)}
            for gone in on.keys() - names:
                for instance_id in on.pop(gone):
                    del where[instance_id]
                    held.pop(instance_id, None)
                loads.pop(gone, None)
                self.held_changed.add(gone)
                self.chosen.pop(gone, None)
                self.chosen_changed.add(gone)
                self.chosen_plain.pop(gone, None)
                self.chosen_members.pop(gone, None)
            for new in names - on.keys():
                self.read_host(ctx, new)
        for view in views:
            if view.host in on:
                self._add(view)
        return self

    def read_host(self, ctx: SessionContext, host: str) -> None:
        """A host that started draining: its instances read whole."""
        self.on[host] = {}
        self.held_changed.add(host)
        self.chosen.pop(host, None)
        self.chosen_changed.add(host)
        for inst in ctx.instances.on(host):
            self._add(inst)

    def _add(self, inst: InstanceView) -> None:
        if inst.state not in _MEMBER_STATES:
            return
        host, instance_id = inst.host, inst.instance_id
        self.on[host][instance_id] = inst
        self.where[instance_id] = host
        self.loads.pop(host, None)
        self.held_changed.add(host)
        if inst.state in _STILL_TO_MOVE and inst.action != InstanceAction.OWN_ACTION:
            self.held[instance_id] = inst
        if inst.state == InstanceState.ACTION_CHOSEN:
            self.chosen.setdefault(host, {})[instance_id] = inst
            self.chosen_changed.add(host)

    def held_by_host(
        self,
        members: Callable[[Iterable[InstanceView]], list[planner.Member]],
        limited: Callable[[str], bool],
    ) -> dict[str, _HeldOn]:
        """Draining host -> its ``held`` instances (:class:`_HeldOn`, their
        ``members`` made by ``members``), for the hosts with any (a copy):
        those of the hosts whose instances changed read again, the others'
        kept; ``held_groups`` and ``held_limited`` (by ``limited``, fixed
        per group for the counts this is kept with) brought up to date
        with them."""
        kept, groups, with_limit = self.held_on, self.held_groups, self.held_limited
        for host in self.held_changed:
            insts = self.on.get(host)
            found = _HeldOn.of(insts, self.held, members) if insts else None
            was = kept.pop(host, None) if found is None else kept.get(host)
            if was is not None:
                for g in was.groups:
                    _count_down(groups, g)
                    if g not in groups:
                        with_limit.discard(g)
            if found is not None:
                kept[host] = found
                for g in found.groups:
                    n = groups.get(g, 0)
                    groups[g] = n + 1
                    if not n and limited(g):
                        with_limit.add(g)
        self.held_changed.clear()
        return dict(kept)

    def _bound(self, instance_id: str, view: InstanceView | None) -> None:
        """A moving instance changed (``view``) or stopped moving (None):
        taken from the target it was counted under, put under its own."""
        was = self.bound_for.pop(instance_id, None)
        if was is not None:
            del self.arriving[was][instance_id]
            self.arriving_changed.add(was)
        if view is not None and view.target is not None and view.target != view.host:
            self.bound_for[instance_id] = view.target
            self.arriving.setdefault(view.target, {})[instance_id] = view
            self.arriving_changed.add(view.target)

    def arrivals(self) -> dict[str, list[InstanceView]]:
        """Target -> the instances moving there now, id order (a copy; the
        lists not to be changed by the caller): those of the targets that
        changed sorted again, the others' kept."""
        return _sorted_again(self.arriving_sorted, self.arriving, self.arriving_changed)

    def in_action(self) -> list[InstanceView]:
        """The instances moving now, id order (not to be changed by the caller)."""
        found = self.moving_sorted
        if found is None:
            moving = self.moving
            found = self.moving_sorted = [moving[i] for i in sorted(moving)]
        return found

    def moving_per_group(self, group_of: Callable[[InstanceView], str]) -> dict[str, int]:
        """Per group, its instances moving now (not to be changed by the
        caller): counted once, then brought up to date from the instances
        whose move started or ended since (an instance's group is fixed for
        the counts this is kept with)."""
        count = self.moving_count
        if count is None:
            count = self.moving_count = {}
            self.moving_group.clear()
            changed: Iterable[str] = self.moving
        else:
            changed = self.moving_changed
        where = self.moving_group
        for instance_id in changed:
            old = where.pop(instance_id, None)
            if old is not None:
                _count_down(count, old)
            view = self.moving.get(instance_id)
            if view is not None:
                g = where[instance_id] = group_of(view)
                count[g] = count.get(g, 0) + 1
        self.moving_changed.clear()
        return count

    def chosen_on(self) -> dict[str, list[InstanceView]]:
        """Draining host -> its instances whose action is chosen, id order
        (a copy; the lists not to be changed by the caller): those of the
        hosts whose chosen changed sorted again, the others' kept."""
        return _sorted_again(self.chosen_sorted, self.chosen, self.chosen_changed)

    def members_of(
        self,
        lists: Iterable[tuple[str | None, list[InstanceView]]],
        members: Callable[[Iterable[InstanceView]], list[planner.Member]],
    ) -> list[planner.Member]:
        """The members (made by ``members``) of the instances of ``lists``,
        in their order: of a host's :meth:`chosen_on` list (named by its
        host) made once per list (a list is kept while none of its instances
        changed, and an instance's member is fixed for the counts this is
        kept with), of the others (host None) made now."""
        out: list[planner.Member] = []
        kept = self.chosen_members
        for host, insts in lists:
            if host is None:
                out.extend(members(insts))
                continue
            found = kept.get(host)
            if found is None or found[0] is not insts:
                found = kept[host] = (insts, members(insts))
            out.extend(found[1])
        return out

    def startable(self, host: str, chosen: list[InstanceView]) -> dict[str, InstanceView] | None:
        """``chosen`` (:meth:`chosen_on`'s list of ``host``) by id when none
        of them has a lead time or is its manager's own action (each may
        then start as soon as its host may), else None: worked out once per
        list (a list is kept while none of its instances changed)."""
        found = self.chosen_plain.get(host)
        if found is not None and found[0] is chosen:
            return found[1]
        plain = all(i.not_before is None and i.action != InstanceAction.OWN_ACTION for i in chosen)
        by_id = {i.instance_id: i for i in chosen} if plain else None
        self.chosen_plain[host] = (chosen, by_id)
        return by_id


def _sorted_again(
    kept: dict[str, list[InstanceView]],
    by_key: dict[str, dict[str, InstanceView]],
    changed: set[str],
) -> dict[str, list[InstanceView]]:
    """A copy of ``kept`` (key -> its instances of ``by_key`` in id order)
    with the keys in ``changed`` sorted again, those left empty dropped from
    both; ``changed`` is emptied."""
    for key in changed:
        insts = by_key.get(key)
        if insts:
            kept[key] = [insts[i] for i in sorted(insts)]
        else:
            kept.pop(key, None)
            by_key.pop(key, None)
    changed.clear()
    return dict(kept)
