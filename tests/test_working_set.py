"""The working set (fenix_core.core.working_set): random setter sequences
keep every index equal to a brute-force recomputation from the records; the
dirty set is exactly what changed; take_write then load (MemorySessionStore)
gives the records back; nothing of a write is kept after it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_contract import OWNER, T0, an_op, new_session, records

from fenix_core.core.indexes import Loan
from fenix_core.core.memory_store import MemorySessionStore
from fenix_core.core.ports import Fence
from fenix_core.core.working_set import HostRec, InstanceRec, ProjectRec, TimerRec, WorkingSet
from fenix_core.states import HostState, InstanceState

HOST_STATES = [s.value for s in HostState]
TYPES = ["compute", "edge"]
INSTANCE_STATES = [s.value for s in InstanceState]
ASK_STATES = [None, "PREPARE", "PLANNED_MAINTENANCE"]


#: (class, first, states, exclude) of the ``CapacityIndex.room`` answers
#: checked against the walk they stand for: cuts inside a bucket, across
#: buckets and past every host, with hosts passed over before and after a cut.
ROOM_QUERIES = [
    (t, first, states, exclude, least)
    for t in ("compute", "edge")
    for first in (0, 1, 2, 4, 9)
    for states in (frozenset({"MAINTAINED", "ADDED"}), frozenset({"PENDING"}))
    for exclude in (frozenset(), frozenset({"cmp-0"}), frozenset({"cmp-1", "cmp-3", "new-2"}))
    for least in (1, 3)
]


def brute_force(ws: WorkingSet) -> dict[str, Any]:
    """Every index, recomputed from the records alone."""
    by_state: dict[str, set[str]] = defaultdict(set)
    by_type: dict[str, set[str]] = defaultdict(set)
    for h in ws.hosts.values():
        by_state[h.state].add(h.name)
        by_type[h.type].add(h.name)
    on: dict[str, set[str]] = defaultdict(set)
    of: dict[str, set[str]] = defaultdict(set)
    of_on: dict[tuple[str, str], set[str]] = defaultdict(set)
    in_state: dict[str, set[str]] = defaultdict(set)
    in_scope_on: dict[str, int] = defaultdict(int)
    used: dict[str, int] = defaultdict(int)
    reserved: dict[str, int] = defaultdict(int)
    for i in ws.instances.values():
        on[i.host].add(i.instance_id)
        of[i.project_id].add(i.instance_id)
        of_on[(i.project_id, i.host)].add(i.instance_id)
        in_state[i.state].add(i.instance_id)
        if i.state not in ("GONE", "OUT_OF_SCOPE"):
            in_scope_on[i.host] += 1
        if i.state != "GONE":
            used[i.host] += i.vcpus
        if i.state == "IN_ACTION" and i.target:
            reserved[i.target] += i.vcpus
    awaiting: dict[str | None, set[str]] = defaultdict(set)
    for p in ws.projects.values():
        if p.awaiting:
            awaiting[p.state].add(p.project_id)
    free = {
        h.name: h.vcpus - used[h.name] - reserved[h.name] for h in ws.hosts.values() if h.vcpus > 0
    }
    buckets: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for h in ws.hosts.values():
        if h.name in free:
            buckets[h.type][free[h.name]].add(h.name)
    order = {
        t: sorted((n for n in free if ws.hosts[n].type == t), key=lambda n: (-free[n], n))
        for t in by_type
    }
    enabled: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    in_state_of: dict[str, dict[int, dict[str, list[str]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for name in sorted(free):
        h = ws.hosts[name]
        if h.enabled:
            enabled[h.type][free[name]].append(name)
            in_state_of[h.type][free[name]][h.state].append(name)
    rooms = {}
    for t, first, states, exclude, least in ROOM_QUERIES:
        walk = [
            n
            for n in order.get(t, [])
            if ws.hosts[n].enabled and n not in exclude and free[n] >= least
        ]
        rooms[(t, first, states, exclude, least)] = sum(
            max(0, free[n]) for n in walk[:first] if ws.hosts[n].state in states
        )
    return {
        "hosts_by_state": dict(by_state),
        "hosts_by_type": dict(by_type),
        "on": dict(on),
        "on_sorted": {h: sorted(ids) for h, ids in on.items()},
        "of": dict(of),
        # Sorted lists, not sets: the index keeps tuples there, and a member
        # kept twice must show.
        "of_on": {key: sorted(ids) for key, ids in of_on.items()},
        "in_state": dict(in_state),
        "in_scope_on": dict(in_scope_on),
        "vacant": {h for h in ws.hosts if not in_scope_on.get(h)},
        "hosts_in_order": {
            state: sorted(names, key=lambda n: (ws.hosts[n].position, n))
            for state, names in by_state.items()
        },
        "hosts_in_order_of_type": {
            (state, t): sorted(
                (n for n in names if ws.hosts[n].type == t),
                key=lambda n: (ws.hosts[n].position, n),
            )
            for state, names in by_state.items()
            for t in by_type
            if any(ws.hosts[n].type == t for n in names)
        },
        "awaiting": dict(awaiting),
        "awaiting_total": sum(len(v) for v in awaiting.values()),
        "free": free,
        "buckets": {t: dict(b) for t, b in buckets.items()},
        "ordered": {t: {f: sorted(n) for f, n in b.items()} for t, b in buckets.items()},
        "most_free": order,
        "enabled": {t: dict(b) for t, b in enabled.items()},
        "by_state": {t: {f: dict(s) for f, s in b.items()} for t, b in in_state_of.items()},
        "room": rooms,
    }


def indexed(ws: WorkingSet) -> dict[str, Any]:
    cap = ws.capacity
    return {
        "hosts_by_state": ws.host_index.by_state,
        "hosts_by_type": ws.host_index.by_type,
        "on": ws.instance_index.by_host,
        # Read after every call of the property test: a cached list an
        # arrival or a departure did not drop shows here.
        "on_sorted": {h: ws.instance_index.sorted_on(h) for h in ws.instance_index.by_host},
        "of": ws.instance_index.by_project,
        "of_on": {key: sorted(ids) for key, ids in ws.instance_index.by_project_host.items()},
        "in_state": ws.instance_index.by_state,
        "in_scope_on": ws.instance_index.in_scope_on,
        "vacant": ws.instance_index.vacant,
        "hosts_in_order": {s: ws.host_index.in_order(s) for s in ws.host_index.ordered},
        "hosts_in_order_of_type": {
            key: list(names) for key, names in ws.host_index.ordered_of_type.items()
        },
        "awaiting": ws.project_index.awaiting,
        "awaiting_total": ws.project_index.awaiting_count(),
        "free": {h: cap.free(h) for h in ws.hosts if cap.free(h) is not None},
        "buckets": cap.buckets,
        "ordered": cap.ordered,
        "most_free": {t: list(cap.most_free(t)) for t in ws.host_index.by_type},
        "enabled": cap.enabled,
        "by_state": cap.in_state,
        "room": {
            (t, first, states, exclude, least): cap.room(t, first, states, exclude, least)
            for t, first, states, exclude, least in ROOM_QUERIES
        },
    }


def snapshot(ws: WorkingSet) -> dict[str, dict[Any, Any]]:
    return {
        "session": {ws.session.id: ws.session.changing()},
        "hosts": {h.name: h.row() for h in ws.hosts.values()},
        "instances": {i.instance_id: i.row() for i in ws.instances.values()},
        "projects": {p.project_id: p.row() for p in ws.projects.values()},
        "ops": {o.key: o.row() for o in ws.ops.values()},
        "timers": {t.name: t.row() for t in ws.timers.values()},
        "components": {c.component: c.row() for c in ws.components.values()},
    }


def changed(
    before: dict[str, dict[Any, Any]], after: dict[str, dict[Any, Any]]
) -> dict[str, set[Any]]:
    return {
        table: {k for k in before[table].keys() | after[table].keys()
                if before[table].get(k) != after[table].get(k)}
        for table in before
    }  # fmt: skip


@st.composite
def calls(draw: st.DrawFn, ws: WorkingSet, n: int) -> list[tuple[str, tuple[Any, ...]]]:
    del ws
    out: list[tuple[str, tuple[Any, ...]]] = []
    hosts = st.sampled_from([f"cmp-{k}" for k in range(5)])
    instances = st.sampled_from([f"vm-{h}-{k}" for h in range(5) for k in range(3)])
    projects = st.sampled_from(["p0", "p1", "p2"])
    for _ in range(n):
        kind = draw(
            st.sampled_from(
                ["host_state", "host", "inst_state", "place", "target", "inst", "project",
                 "op", "op_update", "timer", "cancel", "component", "session", "emit",
                 "add_host", "add_instance", "move", "enabled", "aim", "land", "handled",
                 "op_answer", "lend", "lend_level"]
            )
        )  # fmt: skip
        if kind == "host_state":
            args: tuple[Any, ...] = (draw(hosts), draw(st.sampled_from(HOST_STATES)))
        elif kind == "host":
            args = (draw(hosts), draw(st.integers(0, 3)), draw(st.integers(0, 15)))
        elif kind in ("inst_state",):
            args = (draw(instances), draw(st.sampled_from(INSTANCE_STATES)),
                    draw(st.none() | st.sampled_from(["MIGRATE", "LIVE_MIGRATE"])))  # fmt: skip
        elif kind == "place":
            args = (draw(instances), draw(hosts))
        elif kind == "enabled":
            args = (draw(hosts), draw(st.booleans()))
        elif kind == "target":
            args = (draw(instances), draw(st.none() | hosts))
        elif kind == "aim":
            args = (draw(instances), draw(st.sampled_from(["MIGRATE", "LIVE_MIGRATE"])),
                    draw(st.none() | hosts))  # fmt: skip
        elif kind == "land":
            args = (draw(instances), draw(hosts))
        elif kind == "move":
            args = (draw(instances), draw(hosts), draw(st.none() | hosts),
                    draw(st.sampled_from(INSTANCE_STATES)), draw(st.integers(0, 2)))  # fmt: skip
        elif kind == "inst":
            args = (draw(instances), draw(st.integers(0, 2)), draw(st.none() | st.just(["cmp-1"])))
        elif kind == "project":
            args = (draw(projects), draw(st.booleans()), draw(st.sampled_from(ASK_STATES)))
        elif kind in ("op", "op_update", "op_answer"):
            args = (draw(st.integers(0, 3)), draw(st.sampled_from(["running", "done"])),
                    draw(st.booleans()))  # fmt: skip
        elif kind == "handled":
            args = (draw(st.integers(0, 3)),)
        elif kind == "lend":
            args = (draw(st.sampled_from(HOST_STATES)), draw(st.sampled_from([None, *TYPES])),
                    draw(st.booleans()))  # fmt: skip
        elif kind == "lend_level":
            args = (draw(st.sampled_from(TYPES)), draw(st.integers(-2, 16)), draw(st.booleans()))
        elif kind in ("timer", "cancel"):
            args = (draw(st.sampled_from(["a", "b"])), draw(st.integers(0, 2)))
        elif kind == "component":
            args = (draw(st.sampled_from(["controls", "rolling"])), draw(st.integers(0, 2)))
        elif kind == "session":
            args = (draw(st.sampled_from(["", "draining", "waiting"])), draw(st.integers(0, 100)))
        else:
            args = (draw(st.integers(0, 9)),)
        out.append((kind, args))
    return out


#: (reader, the list lent to it, its names when lent): what each reader holds.
Held = list[tuple[Loan, Sequence[str], list[str]]]


def apply(
    ws: WorkingSet, kind: str, args: tuple[Any, ...], made: set[str], held: Held | None = None
) -> None:
    """``made``: operation keys used so far (a key is never used twice);
    ``held``: the lent lists whose readers are kept (``lend``)."""
    if kind in ("lend", "lend_level"):  # a reader takes a list in order, kept or dropped
        reader = Loan()
        if kind == "lend":
            names = ws.host_index.ordered_names(args[0], args[1], reader)
        else:
            names = ws.capacity.level(args[0], args[1], reader)
        if args[2] and held is not None:
            held.append((reader, names, list(names)))
    elif kind == "host_state":
        ws.set_host_state(*args)
    elif kind == "host":
        ws.update_host(args[0], stage=args[1], marks=args[2])
    elif kind == "enabled":
        ws.update_host(args[0], enabled=args[1])
    elif kind == "inst_state":
        ws.set_instance_state(*args)
    elif kind == "place":
        ws.place(*args)
    elif kind == "target":
        ws.set_target(*args)
    elif kind == "aim":
        ws.aim(*args)
    elif kind == "land":
        if ws.instances[args[0]].host != args[1]:
            ws.land(*args)
    elif kind == "move":  # several fields, indexed ones among them, in one call
        iid, host, target, state, moves = args
        ws.change_instance(iid, host=host, target=target, state=state, moves=moves)
    elif kind == "inst":
        ws.update_instance(args[0], attempts=args[1], refused=args[2])
    elif kind == "project":
        ws.update_project(args[0], awaiting=args[1], state=args[2])
    elif kind == "op":
        key = f"op-{args[0]}"
        if key not in made:
            made.add(key)
            ws.add_op(an_op(key, "cmp-0", None))
    elif kind == "op_update":
        key = f"op-{args[0]}"
        if key in ws.ops:
            ws.update_op(key, status=args[1], handled=args[2])
    elif kind == "op_answer":  # a start's or a poll's answer; an ended one with its result
        key = f"op-{args[0]}"
        if key in ws.ops:
            ended = (T0, {"host": "cmp-1"}) if args[1] == "done" else None
            also = {"handle": f"h-{args[0]}"} if args[2] else None
            polls = ws.ops[key].polls + 1
            ws.answer_op(key, args[1], polls, T0, None, ended, also)
    elif kind == "handled":
        if f"op-{args[0]}" in ws.ops:
            ws.set_handled(f"op-{args[0]}")
    elif kind == "timer":
        ws.set_timer(args[0], T0 + timedelta(seconds=args[1]), {"n": str(args[1])})
    elif kind == "cancel":
        ws.cancel_timer(args[0])
    elif kind == "component":
        ws.set_component(args[0], 1, {"n": args[1]})
    elif kind == "session":
        ws.update_session(phase=args[0], percent_done=args[1])
    elif kind == "emit":
        ws.emit("maintenance", {"n": args[0]})
    elif kind == "add_host":
        name = f"new-{args[0]}"
        if name not in ws.hosts:
            ws.add_host(HostRec(name, "edge" if args[0] % 2 else "compute", args[0], "ADDED",
                                10 + args[0], 0, True, False, 0, None, None, None))  # fmt: skip
    elif kind == "add_instance":
        iid = f"new-vm-{args[0]}"
        if iid not in ws.instances:
            ws.add_instance(InstanceRec(iid, "p1", "", "cmp-0", 1, True, "PENDING", None, None,
                                        0, 0, None, None, None, None, None))  # fmt: skip


@pytest.mark.no_cover
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_setters_keep_indexes_dirty_sets_and_round_trips(data: st.DataObject) -> None:
    store = MemorySessionStore()
    store.insert(new_session(hosts=5, per_host=3))
    store.set_lease("s-1", OWNER, 1, T0)
    ws = store.load("s-1")
    assert indexed(ws) == brute_force(ws)
    made: set[str] = set()
    held: Held = []
    for _step in range(data.draw(st.integers(1, 3))):
        before = snapshot(ws)
        seq_before = ws.session.seq
        touched: dict[str, set[Any]] = {table: set() for table in before}
        for kind, args in data.draw(calls(ws, data.draw(st.integers(0, 25)))):
            ahead = snapshot(ws)
            apply(ws, kind, args, made, held)
            for table, keys in changed(ahead, snapshot(ws)).items():
                touched[table] |= keys
            assert indexed(ws) == brute_force(ws), (kind, args)
            # A kept reader's list is as it was lent; a dropped one's changes in place.
            assert [list(names) for _, names, _ in held] == [was for _, _, was in held]
        dirty = ws.dirty_keys()
        # Dirty is exactly what a call changed (a change undone later in the
        # step is still written); what differs from the start is among it.
        assert set().union(*touched.values()) >= set().union(
            *changed(before, snapshot(ws)).values()
        )
        assert dirty["session"] == touched["session"]
        assert dirty["hosts"] | dirty["new_hosts"] == touched["hosts"]
        assert dirty["instances"] | dirty["new_instances"] == touched["instances"]
        assert dirty["projects"] | dirty["new_projects"] == touched["projects"]
        assert dirty["timers"] == touched["timers"]
        assert dirty["components"] == touched["components"]
        assert dirty["new_ops"] | dirty["ops"] == touched["ops"]
        assert dirty["outbox"] == set(range(seq_before + 1, ws.session.seq + 1))
        write = ws.take_write(Fence("s-1", OWNER, 1, ws.version), next_wake=T0, lease_expires=T0)
        # Nothing of the write is held after it.
        assert all(not keys for keys in ws.dirty_keys().values())
        assert not any(o.handled for o in ws.ops.values())
        assert not [r for r in (*ws.hosts.values(), *ws.instances.values()) if r.dirty]
        store.write(write)
        loaded = store.load("s-1")
        assert records(loaded) == records(ws)
        assert indexed(loaded) == brute_force(ws)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_the_room_lists_made_at_their_first_reading_are_the_ones_kept_since(
    data: st.DataObject,
) -> None:
    """The enabled hosts' lists that ``room`` counts are made at their
    first reading (a rolling session never reads them, and does not keep
    them at each move): made after any changes, they are what keeping them
    from the start gives, and every change keeps them from then on."""
    store = MemorySessionStore()
    store.insert(new_session(hosts=5, per_host=3))
    store.set_lease("s-1", OWNER, 1, T0)
    ws = store.load("s-1")
    made: set[str] = set()
    for kind, args in data.draw(calls(ws, data.draw(st.integers(0, 25)))):
        apply(ws, kind, args, made)
    assert ws.capacity._enabled is None  # not made yet: nothing read them
    assert indexed(ws) == brute_force(ws)
    for kind, args in data.draw(calls(ws, data.draw(st.integers(0, 25)))):
        apply(ws, kind, args, made)
        assert indexed(ws) == brute_force(ws), (kind, args)


@pytest.mark.parametrize("state", ["PENDING", "ACTION_CHOSEN", "IN_ACTION", "GONE"])
def test_the_written_out_move_setters_do_what_change_instance_does(state: str) -> None:
    """``aim`` (a Move submitted), ``land`` (it ended on another host) and
    ``set_handled`` leave the records, the indexes and the dirty marks as
    the generic setters do."""
    written, generic = (MemorySessionStore() for _ in range(2))
    sets = []
    for store in (written, generic):
        store.insert(new_session(hosts=5, per_host=3))
        store.set_lease("s-1", OWNER, 1, T0)
        ws = store.load("s-1")
        ws.set_instance_state("vm-0-1", state)
        ws.add_op(an_op("op-0", "cmp-0", None))
        ws.take_write(Fence("s-1", OWNER, 1, ws.version), next_wake=T0, lease_expires=T0)
        sets.append(ws)
    ws, ref = sets
    ws.aim("vm-0-1", "LIVE_MIGRATE", "cmp-3")
    ref.change_instance("vm-0-1", action="LIVE_MIGRATE", target="cmp-3")
    ws.aim("vm-0-1", "LIVE_MIGRATE", "cmp-3")  # again: no change
    assert (records(ws), indexed(ws), ws.dirty_keys()) == (
        records(ref), indexed(ref), ref.dirty_keys()
    )  # fmt: skip
    assert indexed(ws) == brute_force(ws)
    ws.land("vm-0-1", "cmp-2")
    moves = ref.instances["vm-0-1"].moves + 1
    ref.change_instance(
        "vm-0-1", host="cmp-2", target=None, moved_from="cmp-0", moves=moves, refused=None
    )
    ws.set_handled("op-0")
    ref.update_op("op-0", handled=True)
    assert (records(ws), indexed(ws), ws.dirty_keys()) == (
        records(ref), indexed(ref), ref.dirty_keys()
    )  # fmt: skip
    assert indexed(ws) == brute_force(ws)
    assert ws.instances["vm-0-1"].moved_from == "cmp-0"
    with pytest.raises(ValueError, match="on cmp-2 already"):
        ws.land("vm-0-1", "cmp-2")


def test_a_followed_enabled_flag_moves_the_host_in_the_capacity_index() -> None:
    """``follow_enabled`` (in memory only, so outside the property test's
    round trips) keeps the enabled hosts' lists and ``room`` as the records
    say: a host switched off by another session takes no position."""
    store = MemorySessionStore()
    store.insert(new_session(hosts=5, per_host=3))
    store.set_lease("s-1", OWNER, 1, T0)
    ws = store.load("s-1")
    for name, enabled in [("cmp-0", False), ("cmp-3", False), ("cmp-0", True), ("cmp-2", False)]:
        ws.follow_enabled(name, enabled)
        assert indexed(ws) == brute_force(ws), (name, enabled)
    assert "cmp-2" not in {n for b in ws.capacity.enabled["compute"].values() for n in b}


def test_setters_refuse_fields_that_have_their_own_setter() -> None:
    ws = WorkingSet.from_new(new_session())
    with pytest.raises(KeyError, match="state"):
        ws.update_host("cmp-0", state="DRAINING")
    with pytest.raises(KeyError, match="host"):
        ws.update_instance("vm-0-0", host="cmp-1")
    with pytest.raises(KeyError, match="nonsense"):
        ws.update_project("p0", nonsense=1)
    with pytest.raises(KeyError, match="request"):
        ws.update_session(request={})
    with pytest.raises(KeyError, match="project_id"):
        ws.change_instance("vm-0-0", project_id="p9")
    with pytest.raises(KeyError, match="nonsense"):
        ws.change_instance("vm-0-0", nonsense=1)
    assert all(not keys for keys in ws.dirty_keys().values())


def test_a_fence_of_another_version_is_refused_before_anything_is_drained() -> None:
    ws = WorkingSet.from_new(new_session())
    ws.set_instance_state("vm-0-0", "DONE")
    with pytest.raises(ValueError, match="version"):
        ws.take_write(Fence("s-1", OWNER, 1, 5), next_wake=None, lease_expires=T0)
    assert ws.dirty_keys()["instances"] == {"vm-0-0"}


def test_projects_awaiting_are_counted_per_state() -> None:
    ws = WorkingSet.from_new(new_session(per_host=3))
    ws.update_project("p0", awaiting=True, state="PREPARE")
    ws.update_project("p1", awaiting=True, state="PREPARE")
    ws.update_project("p2", awaiting=True, state="PLANNED_MAINTENANCE")
    assert ws.project_index.awaiting_count() == 3
    assert ws.project_index.awaiting_count("PREPARE") == 2
    ws.update_project("p0", awaiting=False, state="ACK_PREPARE")
    assert ws.project_index.awaiting_count() == 2
    assert ws.project_index.awaiting_count("PREPARE") == 1
    _ = ProjectRec  # the record type the index counts


def test_records_take_every_field_by_position_or_name_and_refuse_others() -> None:
    by_position = TimerRec("t", T0, {"n": "1"})
    by_name = TimerRec(name="t", data={"n": "1"}, due=T0)
    assert by_position == by_name
    assert by_position.row() == ("t", T0, {"n": "1"})
    assert not by_position.dirty
    with pytest.raises(TypeError, match="due"):
        TimerRec("t", data={})
    with pytest.raises(TypeError, match="nonsense"):
        TimerRec("t", T0, {}, nonsense=1)
    with pytest.raises(TypeError):
        TimerRec("t", T0, {}, "one too many")
