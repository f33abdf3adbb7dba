"""engine.reply(): every rejection is typed and writes nothing; NACK policies;
replies from inside a handler and from another thread; project isolation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from fenix_core import Engine, SessionRequest, signals
from fenix_core.errors import Conflict, FenixError, Forbidden, InvalidInput, NotFound
from fenix_core.store.schema import InboxRow
from fenix_core.testing import ScriptedManager, SimClock, SimulatedCloud

# cmp-1 and cmp-2 are equally loaded; cmp-1 comes first, so PREPARE_MAINTENANCE
# empties cmp-1 (pa: a-2) and the first PLANNED_MAINTENANCE is about cmp-0
# (pa: a-1, pb: b-1).
LAYOUT = {
    "cmp-0": [("a-1", "pa", 2), ("b-1", "pb", 2)],
    "cmp-1": [("a-2", "pa", 2)],
    "cmp-2": [("b-2", "pb", 2)],
}
OWN = {"pa": {"a-1", "a-2"}, "pb": {"b-1", "b-2"}}
ASKING = ("MAINTENANCE", "PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE", "MAINTENANCE_COMPLETE")
CHOICE = ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE")


# --------------------------------------------------------------------------- helpers


def inbox_rows(engine: Engine) -> int:
    with Session(engine.database) as orm:
        return int(orm.scalar(select(func.count()).select_from(InboxRow)) or 0)


def inbox_outcomes(engine: Engine) -> list[tuple[str, str, str | None]]:
    with Session(engine.database) as orm:
        rows = orm.scalars(select(InboxRow).order_by(InboxRow.id)).all()
        return [(r.project_id, r.state, r.outcome) for r in rows]


def rejected(engine: Engine, error: type[FenixError], *args: Any, **kwargs: Any) -> Any:
    """Call engine.reply, expect ``error``, and check that nothing was written."""
    before = inbox_rows(engine)
    with pytest.raises(error) as caught:
        engine.reply(*args, **kwargs)
    assert inbox_rows(engine) == before
    return caught.value


def drive_until(engine: Engine, clock: SimClock, done: Callable[[], bool]) -> None:
    """Run the engine the way run_until_done does, until ``done()`` holds."""
    for _ in range(200):
        engine.run_until_idle()
        if done():
            return
        wake = engine.next_wake()
        assert wake is not None, "the engine has nothing left to do"
        clock.advance_to(max(wake, clock.now()))
    raise AssertionError("condition never reached")


def awaiting(engine: Engine, sid: str, project: str, state: str) -> Callable[[], bool]:
    def check() -> bool:
        view = engine.project_view(sid, project)
        return view.state == state and view.reply_at is not None

    return check


@pytest.fixture
def cloud(fenix_cloud: SimulatedCloud) -> SimulatedCloud:
    for host, instances in LAYOUT.items():
        fenix_cloud.add_host(host, vcpus=8)
        for instance_id, project_id, vcpus in instances:
            fenix_cloud.add_instance(instance_id, project_id, host, vcpus=vcpus)
    return fenix_cloud


@pytest.fixture
def engine(cloud: SimulatedCloud, fenix_engine_factory: Callable[..., Engine]) -> Engine:
    return fenix_engine_factory()


@pytest.fixture
def planned(engine: Engine) -> Iterator[list[dict[str, Any]]]:
    """Every maintenance_planned payload the engine sends."""
    received: list[dict[str, Any]] = []

    def receive(sender: Engine, payload: dict[str, Any]) -> None:
        received.append(payload)

    signals.maintenance_planned.connect(receive, sender=engine)
    yield received
    signals.maintenance_planned.disconnect(receive, sender=engine)


@pytest.fixture
def asked(engine: Engine, planned: list[dict[str, Any]]) -> str:
    """A session in which pa and pb (both subscribed) are asked MAINTENANCE."""
    engine.subscribe("pa")
    engine.subscribe("pb")
    sid = engine.create_session(SessionRequest())
    engine.run_until_idle()
    assert {(p["project_id"], p["state"]) for p in planned} == {
        ("pa", "MAINTENANCE"),
        ("pb", "MAINTENANCE"),
    }
    return sid


def to_prepare(engine: Engine, sid: str) -> None:
    """Both acknowledge MAINTENANCE; pa is then asked PREPARE_MAINTENANCE for a-2."""
    engine.reply(sid, "pa", "ACK_MAINTENANCE")
    engine.reply(sid, "pb", "ACK_MAINTENANCE")
    engine.run_until_idle()
    view = engine.project_view(sid, "pa")
    assert view.state == "PREPARE_MAINTENANCE"
    assert view.reply_at is not None


# --------------------------------------------------------------------------- unknown targets


def test_unknown_session_is_not_found(engine: Engine, asked: str) -> None:
    error = rejected(engine, NotFound, "no-such-session", "pa", "ACK_MAINTENANCE")
    assert error.kind == "session"
    assert error.ident == "no-such-session"


@pytest.mark.parametrize("session_id", [42, None, b"abc", ["x"]])
def test_non_string_session_id_is_invalid_input(
    engine: Engine, asked: str, session_id: Any
) -> None:
    error = rejected(engine, InvalidInput, session_id, "pa", "ACK_MAINTENANCE")
    assert error.field == "session_id"


@pytest.mark.parametrize("project_id", ["pc", "subscribed-elsewhere"])
def test_project_not_in_the_session_is_not_found(
    engine: Engine, asked: str, project_id: str
) -> None:
    engine.subscribe("subscribed-elsewhere")  # subscribed, but no instance in the session
    error = rejected(engine, NotFound, asked, project_id, "ACK_MAINTENANCE")
    assert error.kind == "project"
    assert error.ident == project_id
    assert error.session_id == asked


def test_non_string_project_id_is_invalid_input(engine: Engine, asked: str) -> None:
    error = rejected(engine, InvalidInput, asked, 7, "ACK_MAINTENANCE")
    assert error.field == "project_id"


# --------------------------------------------------------------------------- reply state


@pytest.mark.parametrize(
    "state",
    ["ACK_FOO", "HELLO", "", "ack_maintenance", "ACK_", "ACK_INSTANCE_ACTION_DONE", "MAINTENANCE"],
)
def test_unknown_reply_state_is_invalid_input_and_the_question_stays_open(
    engine: Engine, asked: str, state: str
) -> None:
    error = rejected(engine, InvalidInput, asked, "pa", state)
    assert error.field == "state"
    # Still awaited: the right answer is taken afterwards.
    assert engine.project_view(asked, "pa").state == "MAINTENANCE"
    engine.reply(asked, "pa", "ACK_MAINTENANCE")
    engine.run_until_idle()
    assert engine.project_view(asked, "pa").state == "ACK_MAINTENANCE"
    assert inbox_outcomes(engine) == [("pa", "ACK_MAINTENANCE", "accepted")]


@pytest.mark.parametrize(
    "state", ["ACK_PLANNED_MAINTENANCE", "NACK_PREPARE_MAINTENANCE", "ACK_MAINTENANCE_COMPLETE"]
)
def test_valid_state_that_is_not_awaited_now_is_a_conflict(
    engine: Engine, asked: str, state: str
) -> None:
    error = rejected(engine, Conflict, asked, "pa", state)
    assert error.session_id == asked
    engine.reply(asked, "pa", "ACK_MAINTENANCE")  # the awaited answer still works


def test_answer_that_was_already_processed_is_a_conflict(engine: Engine, asked: str) -> None:
    engine.reply(asked, "pa", "ACK_MAINTENANCE")
    engine.run_until_idle()
    assert engine.project_view(asked, "pa").state == "ACK_MAINTENANCE"
    rejected(engine, Conflict, asked, "pa", "ACK_MAINTENANCE")
    rejected(engine, Conflict, asked, "pa", "NACK_MAINTENANCE")
    # The first answer stands.
    assert inbox_outcomes(engine) == [("pa", "ACK_MAINTENANCE", "accepted")]


@pytest.mark.parametrize("second", ["ACK_MAINTENANCE", "NACK_MAINTENANCE"])
def test_second_reply_before_the_first_was_processed_is_a_conflict(
    engine: Engine, asked: str, second: str
) -> None:
    engine.reply(asked, "pa", "ACK_MAINTENANCE")
    rejected(engine, Conflict, asked, "pa", second)
    engine.run_until_idle()
    assert inbox_outcomes(engine) == [("pa", "ACK_MAINTENANCE", "accepted")]
    assert engine.get_session(asked).state != "MAINTENANCE_FAILED"


# --------------------------------------------------------------------------- deadline


def test_reply_after_the_deadline_is_a_conflict(
    engine: Engine, asked: str, fenix_clock: SimClock
) -> None:
    reply_at = engine.project_view(asked, "pa").reply_at
    assert reply_at is not None
    fenix_clock.advance_to(reply_at + timedelta(seconds=1))  # the engine does not step
    error = rejected(engine, Conflict, asked, "pa", "ACK_MAINTENANCE")
    assert "deadline" in str(error)
    # The engine then applies the reply policy ("fail") for the missed deadline.
    engine.run_until_idle()
    view = engine.get_session(asked)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason is not None
    assert "pa" in view.reason
    assert "MAINTENANCE" in view.reason
    # Nothing is awaited from a failed session.
    rejected(engine, Conflict, asked, "pb", "ACK_MAINTENANCE")


@pytest.mark.parametrize("before_deadline", [0.0, 1.0])
def test_reply_recorded_in_time_counts_even_if_processed_after_the_deadline(
    engine: Engine, asked: str, fenix_clock: SimClock, before_deadline: float
) -> None:
    reply_at = engine.project_view(asked, "pa").reply_at
    assert reply_at is not None
    fenix_clock.advance_to(reply_at - timedelta(seconds=before_deadline))
    engine.reply(asked, "pa", "ACK_MAINTENANCE")
    engine.reply(asked, "pb", "ACK_MAINTENANCE")
    fenix_clock.advance(120)  # the engine only gets to it later
    engine.run_until_idle()
    assert engine.get_session(asked).state == "PREPARE_MAINTENANCE"
    assert [o for _, _, o in inbox_outcomes(engine)] == ["accepted", "accepted"]


# --------------------------------------------------------------------------- instance actions


@pytest.fixture(params=CHOICE)
def choice(
    request: pytest.FixtureRequest,
    engine: Engine,
    fenix_clock: SimClock,
    managers: Callable[..., ScriptedManager],
) -> tuple[str, str, str, str]:
    """pa is asked PREPARE_ or PLANNED_MAINTENANCE and has not answered.

    Returns (session id, awaited state, the affected instance of pa, an
    instance of pa that this notification is not about)."""
    state: str = request.param
    managers("pa", silent={state}, action="MIGRATE")
    managers("pb", silent={"PLANNED_MAINTENANCE"})
    sid = engine.create_session(SessionRequest())
    drive_until(engine, fenix_clock, awaiting(engine, sid, "pa", state))
    if state == "PREPARE_MAINTENANCE":
        return sid, state, "a-2", "a-1"
    assert awaiting(engine, sid, "pb", state)()  # pb is asked about b-1 in the same round
    return sid, state, "a-1", "a-2"


def accepted_afterwards(engine: Engine, sid: str, state: str, instance_id: str) -> None:
    engine.reply(sid, "pa", f"ACK_{state}", {instance_id: "LIVE_MIGRATE"})
    engine.run_until_idle()
    view = engine.project_view(sid, "pa")
    assert view.state == f"ACK_{state}"
    chosen = {i.instance_id: i.action for i in view.instances}
    assert chosen[instance_id] == "LIVE_MIGRATE"


def test_instance_that_is_not_the_projects_own_is_forbidden(
    engine: Engine, choice: tuple[str, str, str, str]
) -> None:
    sid, state, affected, _ = choice
    # b-1 is asked about in the same PLANNED_MAINTENANCE round, but of pb.
    for foreign in ("b-1", "b-2", "no-such-vm"):
        for actions in ({affected: "MIGRATE", foreign: "MIGRATE"}, {foreign: "MIGRATE"}):
            error = rejected(engine, Forbidden, sid, "pa", f"ACK_{state}", actions)
            assert error.project_id == "pa"
            assert foreign in str(error)
    accepted_afterwards(engine, sid, state, affected)


def test_own_instance_not_affected_by_this_notification_is_invalid(
    engine: Engine, choice: tuple[str, str, str, str]
) -> None:
    sid, state, affected, unaffected = choice
    actions = {affected: "MIGRATE", unaffected: "MIGRATE"}
    error = rejected(engine, InvalidInput, sid, "pa", f"ACK_{state}", actions)
    assert error.field == f"instance_actions.{unaffected}"
    accepted_afterwards(engine, sid, state, affected)


def test_unknown_or_not_allowed_action_is_invalid(
    engine: Engine, choice: tuple[str, str, str, str]
) -> None:
    sid, state, affected, _ = choice
    # EVICT is a known action, but SimulatedCloud does not offer it.
    for action in ("TELEPORT", "EVICT", "migrate", ""):
        error = rejected(engine, InvalidInput, sid, "pa", f"ACK_{state}", {affected: action})
        assert error.field == f"instance_actions.{affected}", action
    accepted_afterwards(engine, sid, state, affected)


def test_a_reply_to_a_session_another_engine_holds_is_checked_there_and_read_by_the_holder(
    database_url: str,
    cloud: SimulatedCloud,
    fenix_clock: SimClock,
    fenix_engine_factory: Callable[..., Engine],
) -> None:
    """operations.md: "reply() works from any worker". A reply that reaches
    an engine which does not hold the session (another worker, a process
    beside the workers) is checked in the database, the instance actions
    against the cloud's allowed actions stored with the session; the worker
    holding the session reads it at its next look at the database (it used
    to read only the replies it accepted itself, and the session failed at
    the reply deadline with the answer in its inbox)."""
    holder = fenix_engine_factory(database_url=database_url, worker_id="holder")
    holder.subscribe("pa")
    holder.subscribe("pb")
    sid = holder.create_session(SessionRequest())
    holder.run_until_idle()
    to_prepare(holder, sid)
    other = fenix_engine_factory(database_url=database_url, worker_id="front-end")
    assert sid not in other.held_sessions()
    # EVICT is a known action, but SimulatedCloud does not offer it.
    error = rejected(other, InvalidInput, sid, "pa", "ACK_PREPARE_MAINTENANCE", {"a-2": "EVICT"})
    assert error.field == "instance_actions.a-2"
    assert "MIGRATE" in str(error)  # the allowed ones are named
    other.reply(sid, "pa", "ACK_PREPARE_MAINTENANCE", {"a-2": "LIVE_MIGRATE"})
    assert sid not in other.held_sessions()
    # The holder reads it at its next look at the database, long before the
    # deadline that would otherwise find pa silent.
    deadline = holder.project_view(sid, "pa").reply_at
    assert deadline is not None
    fenix_clock.advance(10)
    holder.run_until_idle()
    assert fenix_clock.now() < deadline
    view = holder.project_view(sid, "pa")
    assert view.state == "ACK_PREPARE_MAINTENANCE"
    a2 = {i.instance_id: i for i in view.instances}["a-2"]
    assert (a2.state, a2.action) == ("IN_ACTION", "LIVE_MIGRATE")


def test_missing_or_malformed_instance_actions_are_invalid(
    engine: Engine, choice: tuple[str, str, str, str]
) -> None:
    sid, state, affected, _ = choice
    for actions in (None, {}, [affected]):
        error = rejected(engine, InvalidInput, sid, "pa", f"ACK_{state}", actions)
        assert error.field == "instance_actions", actions
    missing = rejected(engine, InvalidInput, sid, "pa", f"ACK_{state}", {})
    assert affected in str(missing)
    # A refusal carries no instance actions.
    error = rejected(engine, InvalidInput, sid, "pa", f"NACK_{state}", {affected: "MIGRATE"})
    assert error.field == "instance_actions"
    accepted_afterwards(engine, sid, state, affected)


def test_instance_actions_with_ack_maintenance_are_invalid(engine: Engine, asked: str) -> None:
    error = rejected(engine, InvalidInput, asked, "pa", "ACK_MAINTENANCE", {"a-1": "MIGRATE"})
    assert error.field == "instance_actions"
    engine.reply(asked, "pa", "ACK_MAINTENANCE")
    engine.run_until_idle()
    assert engine.project_view(asked, "pa").state == "ACK_MAINTENANCE"


def test_prepare_reply_drives_the_chosen_action(engine: Engine, asked: str) -> None:
    to_prepare(engine, asked)
    engine.reply(asked, "pa", "ACK_PREPARE_MAINTENANCE", {"a-2": "MIGRATE"})
    engine.run_until_idle()
    a2 = {i.instance_id: i for i in engine.project_view(asked, "pa").instances}["a-2"]
    assert (a2.state, a2.action) == ("IN_ACTION", "MIGRATE")


# --------------------------------------------------------------------------- NACK


@pytest.mark.parametrize("state", ASKING)
def test_nack_with_reply_policy_fail_fails_naming_project_and_state(
    engine: Engine,
    cloud: SimulatedCloud,
    managers: Callable[..., ScriptedManager],
    state: str,
) -> None:
    pa = managers("pa", nack={state})
    managers("pb")
    sid = engine.create_session(SessionRequest(reply_policy="fail"))
    view = engine.run_until_done(sid)
    assert pa.errors == []
    assert (f"NACK_{state}", {}) in pa.sent
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason is not None
    assert "pa" in view.reason
    assert f"NACK_{state}" in view.reason
    assert "pb" not in view.reason
    # Failing leaves no host disabled.
    assert all(cloud.is_enabled(host) for host in LAYOUT)


def test_nack_to_everything_with_policy_default_moves_the_instances_by_default(
    engine: Engine, cloud: SimulatedCloud, managers: Callable[..., ScriptedManager]
) -> None:
    # The manager would choose MIGRATE; refusing, it gets the engine's default.
    pa = managers("pa", nack=set(ASKING), action="MIGRATE")
    sid = engine.create_session(SessionRequest(reply_policy="default"))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    assert all(sent.startswith("NACK_") for sent, _ in pa.sent)
    project = engine.project_view(sid, "pa")
    assert project.state == "DEFAULT_MAINTENANCE_COMPLETE"
    assert {i.instance_id: i.action for i in project.instances} == {
        "a-1": "LIVE_MIGRATE",
        "a-2": "LIVE_MIGRATE",
    }
    assert all(i.moves >= 1 for i in project.instances)


# ------------------------------------------------------------------ where replies come from


def test_receiver_may_reply_from_inside_the_maintenance_planned_handler(
    engine: Engine, cloud: SimulatedCloud
) -> None:
    errors: list[Exception] = []

    def answer(sender: Engine, payload: dict[str, Any]) -> None:
        state = payload["state"]
        if state not in ASKING:
            return
        actions = dict.fromkeys(payload["instance_ids"], "MIGRATE") if state in CHOICE else {}
        try:
            sender.reply(payload["session_id"], payload["project_id"], f"ACK_{state}", actions)
        except Exception as exc:
            errors.append(exc)

    engine.subscribe("pa")
    engine.subscribe("pb")
    signals.maintenance_planned.connect(answer, sender=engine)
    try:
        sid = engine.create_session(SessionRequest())
        view = engine.run_until_done(sid)
    finally:
        signals.maintenance_planned.disconnect(answer, sender=engine)
    assert errors == []
    assert view.state == "MAINTENANCE_DONE"
    outcomes = inbox_outcomes(engine)
    assert outcomes
    assert {o for _, _, o in outcomes} == {"accepted"}
    assert {p for p, _, _ in outcomes} == {"pa", "pb"}
    for project in ("pa", "pb"):
        assert {i.action for i in engine.project_view(sid, project).instances} == {"MIGRATE"}


def test_reply_from_another_thread_is_taken_up_by_the_next_step(engine: Engine, asked: str) -> None:
    errors: list[BaseException] = []

    def answer() -> None:
        try:
            engine.reply(asked, "pa", "ACK_MAINTENANCE")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=answer)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert errors == []
    # Recorded, not applied yet: nothing runs until the engine steps.
    assert engine.project_view(asked, "pa").state == "MAINTENANCE"
    assert engine.step() == 1
    assert engine.project_view(asked, "pa").state == "ACK_MAINTENANCE"
    assert engine.project_view(asked, "pb").state == "MAINTENANCE"  # still awaited
    assert inbox_outcomes(engine) == [("pa", "ACK_MAINTENANCE", "accepted")]


# --------------------------------------------------------------------------- isolation


def test_project_view_lists_only_that_projects_instances(
    engine: Engine, asked: str, cloud: SimulatedCloud
) -> None:
    for project, own in OWN.items():
        view = engine.project_view(asked, project)
        assert view.project_id == project
        assert view.session_id == asked
        assert set(view.instance_ids) == own
        assert {i.instance_id for i in view.instances} == own
        for inst in view.instances:
            assert inst.host == cloud.host_of(inst.instance_id)
            assert inst.state == "PENDING"
            assert inst.action is None


def test_project_view_of_a_project_not_in_the_session_is_not_found(
    engine: Engine, asked: str
) -> None:
    engine.subscribe("pc")
    with pytest.raises(NotFound) as caught:
        engine.project_view(asked, "pc")
    assert caught.value.kind == "project"


def test_project_view_of_an_unknown_session_is_not_found(engine: Engine, asked: str) -> None:
    with pytest.raises(NotFound) as caught:
        engine.project_view("no-such-session", "pa")
    assert caught.value.kind == "session"


def test_projects_only_ever_see_their_own_instances_over_a_whole_run(
    engine: Engine,
    cloud: SimulatedCloud,
    planned: list[dict[str, Any]],
    managers: Callable[..., ScriptedManager],
) -> None:
    seen_in_views: dict[str, set[str]] = {"pa": set(), "pb": set()}

    def looker(project: str) -> Callable[[dict[str, Any]], None]:
        def look(payload: dict[str, Any]) -> None:
            view = engine.project_view(payload["session_id"], project)
            seen_in_views[project] |= {i.instance_id for i in view.instances}

        return look

    pa = managers("pa", action="MIGRATE", on_payload=looker("pa"))
    pb = managers("pb", action="LIVE_MIGRATE", on_payload=looker("pb"))
    sid = engine.create_session(SessionRequest())
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"

    assert {p["state"] for p in planned} >= {*ASKING, "INSTANCE_ACTION_DONE", "ADMIN_ACTION_DONE"}
    for payload in planned:
        assert set(payload["instance_ids"]) <= OWN[payload["project_id"]], payload
    for manager in (pa, pb):
        assert manager.received
        assert {p["project_id"] for p in manager.received} == {manager.project_id}
    assert seen_in_views == OWN
    for project, own in OWN.items():
        view = engine.project_view(sid, project)
        assert {i.instance_id for i in view.instances} == own
        for inst in view.instances:
            assert inst.host == cloud.host_of(inst.instance_id)


def test_replies_committed_out_of_id_order_through_two_front_ends_are_both_read(
    postgres_url: str,
    cloud: SimulatedCloud,
    fenix_clock: SimClock,
    fenix_engine_factory: Callable[..., Engine],
) -> None:
    """On PostgreSQL an inbox id is drawn at the INSERT and becomes visible
    at the commit, so two front ends replying at once can commit their
    rows out of id order. pa's reply draws its id first and commits last;
    pb's is read by the holder in between. pa's must still be read: the
    holder used to read only ids above the highest it had seen, so pa's
    answer stayed in the inbox and pa was found silent at its deadline."""
    holder = fenix_engine_factory(database_url=postgres_url, worker_id="holder")
    holder.subscribe("pa")
    holder.subscribe("pb")
    sid = holder.create_session(SessionRequest())
    holder.run_until_idle()
    slow = fenix_engine_factory(database_url=postgres_url, worker_id="front-1")
    fast = fenix_engine_factory(database_url=postgres_url, worker_id="front-2")
    inserted, release = threading.Event(), threading.Event()

    def held_before_commit(_connection: object) -> None:
        inserted.set()  # its INSERT ran (its id is drawn); the commit waits
        assert release.wait(timeout=30)

    event.listen(slow.database, "commit", held_before_commit)
    errors: list[BaseException] = []

    def reply_slowly() -> None:
        try:
            slow.reply(sid, "pa", "ACK_MAINTENANCE")
        except BaseException as error:  # reported by the test
            errors.append(error)

    replier = threading.Thread(target=reply_slowly)
    replier.start()
    try:
        assert inserted.wait(timeout=30)
        fast.reply(sid, "pb", "ACK_MAINTENANCE")
        fenix_clock.advance(10)
        holder.run_until_idle()  # reads pb's reply, not pa's uncommitted one
        assert holder.project_view(sid, "pb").state == "ACK_MAINTENANCE"
        assert holder.project_view(sid, "pa").state == "MAINTENANCE"
    finally:
        release.set()
        replier.join(timeout=30)
    event.remove(slow.database, "commit", held_before_commit)
    assert errors == []
    deadline = holder.project_view(sid, "pa").reply_at
    assert deadline is not None
    fenix_clock.advance(10)
    holder.run_until_idle()
    assert fenix_clock.now() < deadline
    assert holder.project_view(sid, "pa").state != "MAINTENANCE"  # answered, moved on
    assert inbox_outcomes(holder)  # both rows processed
    with Session(holder.database) as orm:
        unprocessed = orm.scalar(
            select(func.count()).select_from(InboxRow).where(InboxRow.processed_at.is_(None))
        )
    assert unprocessed == 0
