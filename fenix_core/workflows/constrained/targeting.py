"""The targets offered to the planner: the window of the best hosts for the
instances a decision places, the room where instances stay, and every host
that takes instances (the dry runs').

The open hosts and their instances come from the context's indexes; the
targets offered to the planner are a window of the best hosts from
``ctx.capacity.targets`` (all of them when the window is larger than the
fleet, the sampled instance's own host included), the walk of an instance
without placement rules kept per placement class (:class:`~.walks._Walk`)
and patched for the hosts whose capacity changed
(``ctx.capacity.changed_since``), walked anew when it cannot say."""

from __future__ import annotations

from collections.abc import (
    Iterable,
    Sequence,
)
from itertools import islice

from ... import planner
from ...contract import (
    HostView,
    InstanceView,
    SessionContext,
)
from ..rolling import (
    STAYS,
)
from . import windows
from .caches import _Counts
from .reads import _Step
from .state import (
    _target_state,
)
from .walks import _FleetTargets, _Walk


def _fleet_targets(ctx: SessionContext, step: _Step) -> list[planner.Target]:
    """Every host an instance may be placed on now (:func:`_target_state`
    not None) as a target, in the hosts' order: what a dry run over the
    fleet places on. Kept with the counts (:class:`_FleetTargets`) and
    patched from the hosts whose capacity changed while no group has a
    per-host limit (a target then counts no member: it is its room and
    kind); built from every host otherwise (:func:`_all_targets`)."""
    if step.counts.any_limited:
        return _all_targets(ctx, step)
    retiring = step.wf._retiring(ctx)
    kept = step.counts.fleet_targets
    if kept is None or not kept.brought_up_to_date(ctx, step, retiring):
        kept = step.counts.fleet_targets = _FleetTargets.read(ctx, step, retiring)
    return kept.targets()


def _window_room(ctx: SessionContext, step: _Step) -> int:
    """At most the free vCPUs of the targets a decision to open hosts
    offers the planner (no instance under the cloud's placement rules):
    :func:`_window` takes the first :data:`TARGET_WINDOW` hosts
    of ``ctx.capacity.targets`` (most free first, then by name, the
    instance's own host and the retiring ones skipped) whatever their
    state, and a host opened now fits only where instances stay
    (:func:`~fenix_core.second_moves.opening_targets`). So: the room of
    the hosts where instances stay among the first TARGET_WINDOW + 1 of
    ``most_free`` (one more for the own host), as
    ``ctx.capacity.room`` counts it from the index. (Counting, of the
    hosts with the same free vCPUs, as many where instances stay as
    positions were left, whatever their names, let nine decisions in ten
    through at 300 hosts: each was built and turned down whole.)"""
    return ctx.capacity.room(
        "compute", windows.TARGET_WINDOW + 1, STAYS, exclude=step.wf._retiring(ctx)
    )


def _window(
    ctx: SessionContext, step: _Step, instances: Iterable[InstanceView]
) -> list[tuple[HostView, bool]]:
    """The hosts whose targets are offered to the planner (``step.targets``
    builds them, only when a decision needs them), and whether instances
    stay on each: for each kind of instance (its host's type and its
    vCPUs; an instance under the cloud's placement rules on its own), the
    best :data:`TARGET_WINDOW` hosts of ``ctx.capacity.targets`` that
    take instances, and the host of the instance standing for its kind
    when it has room for it (a target of the others of the kind, which
    ``ctx.capacity.targets`` leaves out)."""
    seen: dict[str, tuple[HostView, bool]] = {}
    kinds: set[tuple[str, int]] = set()
    retiring = step.wf._retiring(ctx)
    # The views read once: a window is up to TARGET_WINDOW hosts, built
    # a few times a step.
    host_view, targets, free = ctx.hosts.get, ctx.capacity.targets, ctx.capacity.free
    size = windows.TARGET_WINDOW
    walks: dict[str, _Walk] | None = None
    for inst in _window_sample(ctx, step, instances):
        host = host_view(inst.host)
        kind = (host.type if host is not None else "", inst.vcpus)
        own: tuple[str, ...] = ()
        if not step.ruled(inst.instance_id):
            if kind in kinds or any(k[0] == kind[0] and k[1] <= kind[1] for k in kinds):
                continue  # a smaller instance of the type saw these hosts already
            kinds.add(kind)
            # Its own host is no target of its own, but it is one of the
            # others of its kind (a queued host in a first wave): without
            # it, on a small cloud, the first wave found no room for a
            # host's instances that its own host had.
            if host is not None and free(host.name) >= inst.vcpus:
                own = (host.name,)
            if host is not None and inst.vcpus > 0:
                # The walk its targets take, kept (the first TARGET_WINDOW
                # with room for it, its own host passed over).
                if walks is None:
                    walks = _walks(ctx, step.counts, retiring)
                walk = walks.get(host.type)
                if walk is None:
                    walk = walks[host.type] = _Walk.walked(ctx, host.type, retiring)
                taken, least, stays_of = 0, -inst.vcpus, walk.stays
                for minus_free, name in walk.keys:
                    if minus_free > least or taken == size:
                        break
                    if name == host.name:
                        continue
                    taken += 1
                    if name not in seen and (stays := stays_of[name]) is not None:
                        view = host_view(name)  # (its view as it is now)
                        if view is not None:
                            seen[name] = (view, stays)
                for name in own:
                    view = host_view(name)
                    stays = _target_state(view, retiring) if view is not None else None
                    if name not in seen and view is not None and stays is not None:
                        seen[name] = (view, stays)
                continue
        for name in (*islice(targets(inst.instance_id, exclude=retiring), size), *own):
            if name in seen:
                continue
            view = host_view(name)
            stays = _target_state(view, retiring) if view is not None else None
            if view is None or stays is None:
                continue
            seen[name] = (view, stays)
    return list(seen.values())


def _walks(ctx: SessionContext, counts: _Counts, retiring: frozenset[str]) -> dict[str, _Walk]:
    """The kept walks (``counts.walks``) brought up to date with the hosts
    whose capacity changed since they were (``ctx.capacity.changed_since``);
    dropped when that is not known (a load, an old mark) or the retiring
    hosts changed, and each one left too short, to be walked anew."""
    walks, capacity = counts.walks, ctx.capacity
    if walks:
        changed = (
            capacity.changed_since(counts.walks_mark) if counts.walks_retiring is retiring else None
        )
        if changed is None:
            walks.clear()
        elif changed:
            for placement_class, walk in list(walks.items()):
                if not walk.patched(ctx, changed, retiring):
                    del walks[placement_class]
    counts.walks_mark = capacity.change_mark()
    counts.walks_retiring = retiring
    return walks


def _window_stay_room(
    ctx: SessionContext, step: _Step, instances: Sequence[InstanceView]
) -> int | None:
    """The free vCPUs of :func:`_window`'s hosts where instances stay,
    read from the capacity index without building the window, when one
    instance stands for it (no instance under the cloud's placement
    rules, one host type, computes): its window is the first
    TARGET_WINDOW hosts of ``ctx.capacity.targets`` (enabled hosts of
    its type with room for it, most free first, then by name; its own
    host and the retiring ones passed over), which is the walk
    ``ctx.capacity.room`` counts with ``least`` its vCPUs, plus its own
    host when that has room for it. None: only the window says (a pass
    where no member may start then builds it all the same)."""
    if step.counts.any_ruled:
        return None
    sample = _window_sample(ctx, step, instances)
    if not sample:
        return 0  # an empty window
    if len(sample) > 1:
        return None
    (inst,) = sample
    own = ctx.hosts.get(inst.host)
    if own is None or own.type != "compute" or step.ruled(inst.instance_id):
        return None
    retiring = step.wf._retiring(ctx)
    room = ctx.capacity.room(
        "compute",
        windows.TARGET_WINDOW,
        STAYS,
        exclude=retiring | {own.name},
        least=inst.vcpus,
    )
    free = ctx.capacity.free(own.name)
    if free >= inst.vcpus and _target_state(own, retiring):
        room += free
    return room


def _window_sample(
    ctx: SessionContext, step: _Step, instances: Iterable[InstanceView]
) -> list[InstanceView]:
    """The instances whose targets make the window, by (vCPUs, id): all
    of them when the cloud's placement rules name some, else the
    smallest of each host type (the others' targets are among its own).
    A placement reads the members of every draining host: their hosts'
    types are looked up once per host."""
    if step.counts.any_ruled:
        return sorted(instances, key=lambda i: (i.vcpus, i.instance_id))
    types: dict[str, str] = {}
    least: dict[str, InstanceView] = {}
    # A host's instances come one after another (each draining host's
    # members): its type and the least of that type are looked up once
    # per run of them, not per instance.
    on: str | None = None
    kind, found = "", None
    for inst in instances:
        if inst.host != on:
            if found is not None:
                least[kind] = found
            on = inst.host
            known = types.get(on)
            if known is None:
                host = ctx.hosts.get(on)
                known = types[on] = host.type if host is not None else ""
            kind, found = known, least.get(known)
        # (vcpus, id) compared without building the two tuples.
        if (
            found is None
            or inst.vcpus < found.vcpus
            or (inst.vcpus == found.vcpus and inst.instance_id < found.instance_id)
        ):
            found = inst
    if found is not None:
        least[kind] = found
    return sorted(least.values(), key=lambda i: (i.vcpus, i.instance_id))


def _all_targets(ctx: SessionContext, step: _Step) -> list[planner.Target]:
    """Every host that takes instances (the checks before the first
    wave, and the dry run of the waves' moves: :func:`~.placement._keeps_draining`)."""
    out = []
    retiring = step.wf._retiring(ctx)
    for view in ctx.hosts:
        stays = _target_state(view, retiring)
        if stays is not None:
            out.append(step.target(view, stays))
    return out
