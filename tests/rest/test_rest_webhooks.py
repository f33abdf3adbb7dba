"""Webhook delivery: body shapes, order per destination, retries while an
endpoint is down, de-duplication, and a queue that survives a restart."""

from __future__ import annotations

import ast
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fenix_core import Engine
from fenix_core.errors import InvalidInput
from fenix_core.rest import WebhookOutbox, WebhookSender, WebhookTarget
from fenix_core.rest.shapes import event_alarm_body, fenix_body
from fenix_core.testing import ScriptedManager, SimClock, SimulatedCloud

from .conftest import small_cloud
from .hooks import HookEndpoint

FAST = {"base_delay": 0.02, "max_delay": 0.1, "timeout": 2.0}


@pytest.fixture
def endpoint() -> Iterator[HookEndpoint]:
    hook = HookEndpoint()
    yield hook
    hook.down()


def run_session(engine: Engine) -> list[int]:
    """Run a session over every host; the seqs of its maintenance_session
    notifications, in the order the engine sent them."""
    seqs: list[int] = []
    from fenix_core import signals

    def record(_sender: Engine, payload: dict[str, Any]) -> None:
        seqs.append(payload["seq"])

    signals.maintenance_session.connect(record, sender=engine)
    try:
        session_id = engine.create_session({})
        assert engine.run_until_done(session_id).state == "MAINTENANCE_DONE"
    finally:
        signals.maintenance_session.disconnect(record, sender=engine)
    return seqs


def test_fenix_body_links_into_the_api() -> None:
    payload = {
        "service": "fenix",
        "session_id": "s1",
        "project_id": "pa",
        "state": "PLANNED_MAINTENANCE",
        "instance_ids": ["vm-1", "vm-2"],
        "allowed_actions": ["MIGRATE"],
        "reply_at": "2026-01-01T00:05:00+00:00",
        "actions_at": None,
        "metadata": {"v": 2},
        "seq": 7,
    }
    body = fenix_body("maintenance_planned", payload, "http://api:12347/")
    # The instances asked about, as a list: Fenix-era managers read [0].
    assert body["instance_ids"] == ["vm-1", "vm-2"]
    assert body["reply_url"] == "http://api:12347/v1/maintenance/s1/pa"
    for state in ("MAINTENANCE", "SCALE_IN", "MAINTENANCE_COMPLETE"):
        asked = fenix_body("maintenance_planned", {**payload, "state": state}, "http://api:12347")
        assert asked["instance_ids"] == asked["reply_url"]  # GET it for the list, as in Fenix
    done = fenix_body(
        "maintenance_planned",
        {**payload, "state": "INSTANCE_ACTION_DONE", "instance_ids": ["vm-1"]},
        "http://api",
    )
    assert done["instance_ids"] == ["vm-1"]  # a one-element list, as Fenix's notify_action_done
    host = {"service": "fenix", "session_id": "s1", "host": "cmp-0", "state": "IN_MAINTENANCE"}
    assert fenix_body("maintenance_host", host, "http://api") == host

    alarm = event_alarm_body("maintenance.scheduled", body, alarm_owner="pa")
    event = alarm["reason_data"]["event"]
    assert alarm["reason_data"]["type"] == "event"
    assert event["event_type"] == "maintenance.scheduled"
    # What Fenix-era managers do with it:
    traits = {name: value for name, _type, value in event["traits"]}
    assert traits["state"] == "PLANNED_MAINTENANCE"
    assert traits["instance_ids"] == '["vm-1", "vm-2"]'
    # Tacker evaluates a text trait that starts with [ or { as a Python literal.
    assert ast.literal_eval(traits["instance_ids"])[0] == "vm-1"
    assert traits["allowed_actions"] == '["MIGRATE"]'
    assert traits["metadata"] == '{"v": 2}'
    assert traits["seq"] == 7
    assert "actions_at" not in traits  # null values are left out, as AODH did
    assert ["seq", 2, 7] in event["traits"]
    again = event_alarm_body("maintenance.scheduled", body, alarm_owner="pa")
    assert again["alarm_id"] == alarm["alarm_id"]
    assert again["reason_data"]["event"]["message_id"] == event["message_id"]


def test_endpoint_down_for_a_while_gets_everything_in_order(endpoint: HookEndpoint) -> None:
    cloud = small_cloud(SimulatedCloud())
    engine = Engine(clock=SimClock(), plugins=[cloud], load_entry_points=False)
    outbox = WebhookOutbox(engine, admin_urls={"maintenance.session": [endpoint.url]}).connect()
    sender = WebhookSender(outbox, **FAST).start()
    try:
        sent = run_session(engine)  # nothing listens yet: every POST fails
        time.sleep(0.3)
        endpoint.answer = lambda body, headers: 503 if endpoint.attempts < 3 else 200
        endpoint.up()  # back, but answers 503 to its first two POSTs
        received = endpoint.wait_for(len(sent))
        sender.stop()
        deliveries = outbox.deliveries()
    finally:
        sender.stop()
        outbox.disconnect()
        engine.close()
    assert [b["seq"] for b in received] == sent
    assert [b["state"] for b in received][-1] == "MAINTENANCE_DONE"
    assert {event for event, _ in endpoint.received} == {"maintenance.session"}
    assert {d.state for d in deliveries} == {"delivered"}
    assert deliveries[0].attempts >= 3  # refused while down, then 503 twice


def test_project_target_gets_its_shape_and_links(endpoint: HookEndpoint) -> None:
    endpoint.up()
    cloud = small_cloud(SimulatedCloud())
    engine = Engine(clock=SimClock(), plugins=[cloud], load_entry_points=False)
    outbox = WebhookOutbox(engine, public_url="http://fenix.test").connect()
    outbox.set_target(
        WebhookTarget(
            "pa", endpoint.url, event_type="maintenance.scheduled", body_shape="event_alarm"
        )
    )
    ScriptedManager(engine, "pa", cloud=cloud)  # answers in-process; the hook only listens
    sender = WebhookSender(outbox, **FAST).start()
    try:
        session_id = engine.create_session({})
        assert engine.run_until_done(session_id).state == "MAINTENANCE_DONE"
        expected = len(outbox.deliveries())
        received = endpoint.wait_for(expected)
    finally:
        sender.stop()
        outbox.disconnect()
        engine.close()
    events = [b["reason_data"]["event"] for b in received]
    assert len(events) == expected > 0
    assert {e["event_type"] for e in events} == {"maintenance.scheduled"}
    traits = [{t[0]: t[2] for t in e["traits"]} for e in events]
    assert {t["project_id"] for t in traits} == {"pa"}
    assert traits[0]["state"] == "MAINTENANCE"
    assert traits[0]["instance_ids"] == f"http://fenix.test/v1/maintenance/{session_id}/pa"
    assert traits[-1]["state"] == "MAINTENANCE_COMPLETE"
    assert [t["seq"] for t in traits] == sorted(t["seq"] for t in traits)


def test_queued_once_even_when_the_engine_delivers_again(tmp_path: Path) -> None:
    engine = Engine(
        database_url=f"sqlite:///{tmp_path / 'f.db'}",
        clock=SimClock(),
        plugins=[small_cloud(SimulatedCloud())],
        load_entry_points=False,
    )
    outbox = WebhookOutbox(engine, admin_urls={"maintenance.host": ["http://a.test/h"]})
    payload = {
        "service": "fenix",
        "session_id": "s1",
        "host": "cmp-0",
        "state": "IN_MAINTENANCE",
        "project_id": None,
        "seq": 4,
    }
    assert outbox.queue_notification("maintenance_host", payload) == 1
    assert outbox.queue_notification("maintenance_host", payload) == 0
    assert outbox.queue_notification("maintenance_session", {**payload, "seq": 5}) == 0
    assert [(d.seq, d.state) for d in outbox.deliveries()] == [(4, "pending")]
    engine.close()


def test_undelivered_webhooks_survive_a_restart(tmp_path: Path, endpoint: HookEndpoint) -> None:
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    cloud_file = tmp_path / "cloud.json"
    cloud = small_cloud(SimulatedCloud(state_path=cloud_file))
    first = Engine(database_url=url, clock=SimClock(), plugins=[cloud], load_entry_points=False)
    outbox = WebhookOutbox(first, admin_urls={"maintenance.session": [endpoint.url]}).connect()
    sent = run_session(first)  # queued, never sent: no sender in this process
    outbox.disconnect()
    first.close()

    endpoint.up()
    second = Engine(
        database_url=url,
        clock=SimClock(),
        plugins=[SimulatedCloud(state_path=cloud_file)],
        load_entry_points=False,
    )
    sender = WebhookSender(WebhookOutbox(second), **FAST).start()
    try:
        received = endpoint.wait_for(len(sent))
    finally:
        sender.stop()
        second.close()
    assert [b["seq"] for b in received] == sent


def test_two_fenix_api_workers_post_each_webhook_once_in_order(
    tmp_path: Path, endpoint: HookEndpoint
) -> None:
    """Two fenix-api workers on one database (operations.md, "Running N
    workers") each run a sender over the shared queue. A POST goes out
    once, by one of them, and one URL's POSTs still go one at a time in
    queue order: each sender used to POST every head of the queue it saw,
    so with two workers every notification reached the receiver twice."""
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    cloud_file = tmp_path / "cloud.json"
    cloud = small_cloud(SimulatedCloud(state_path=cloud_file))
    first = Engine(database_url=url, clock=SimClock(), plugins=[cloud], load_entry_points=False)
    outbox = WebhookOutbox(first, admin_urls={"maintenance.session": [endpoint.url]}).connect()
    sent = run_session(first)  # queued, not sent: no sender yet
    outbox.disconnect()
    first.close()

    def slow(_body: dict[str, Any], _headers: Any) -> int:
        time.sleep(0.02)  # both senders find the same head while one POSTs it
        return 200

    endpoint.answer = slow
    endpoint.up()
    workers = [
        Engine(
            database_url=url,
            clock=SimClock(),
            plugins=[SimulatedCloud(state_path=cloud_file)],
            load_entry_points=False,
            worker_id=f"api-{n}",
        )
        for n in range(2)
    ]
    senders = [WebhookSender(WebhookOutbox(w), **FAST) for w in workers]
    try:
        for sender in senders:
            sender.start()
        received = endpoint.wait_for(len(sent))
    finally:
        for sender in senders:
            sender.stop()
        for worker in workers:
            worker.close()
    # stop() waited for every POST either sender had started.
    assert len(endpoint.received) == len(sent)
    assert [b["seq"] for b in received] == sent


def test_a_rejected_post_does_not_block_the_ones_behind_it(endpoint: HookEndpoint) -> None:
    endpoint.answer = lambda body, headers: 400 if body["seq"] == 2 else 200
    endpoint.up()
    engine = Engine(
        clock=SimClock(), plugins=[small_cloud(SimulatedCloud())], load_entry_points=False
    )
    outbox = WebhookOutbox(engine, admin_urls={"maintenance.session": [endpoint.url]}).connect()
    sender = WebhookSender(outbox, **FAST).start()
    try:
        sent = run_session(engine)
        received = endpoint.wait_for(len(sent) - 1)
        sender.stop()
        states = {d.seq: d.state for d in outbox.deliveries()}
    finally:
        sender.stop()
        outbox.disconnect()
        engine.close()
    assert [b["seq"] for b in received] == [s for s in sent if s != 2]
    assert states[2] == "rejected"


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    engine = Engine(clock=SimClock(), load_entry_points=False)
    sender = WebhookSender(
        WebhookOutbox(engine), base_delay=1.0, max_delay=8.0, rng=random.Random(3)
    )
    try:
        draws = [sender.backoff(n) for n in (1, 2, 3, 4, 10, 10)]
    finally:
        sender.stop()
        engine.close()
    bounds = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (4.0, 8.0), (4.0, 8.0)]
    assert all(low <= d <= high for d, (low, high) in zip(draws, bounds, strict=True))
    assert draws[4] != draws[5]  # jittered


def test_a_failing_informational_post_does_not_stall_the_questions(
    endpoint: HookEndpoint,
) -> None:
    """The OPNFV Doctor VNFM answers 500 to ADMIN_ACTION_DONE: that POST is
    tried a few times, then dropped, and the question behind it goes out. A
    question that fails is still retried (the manager must get it)."""
    asks = {"n": 0}

    def doctor(body: dict[str, Any], headers: Any) -> int:
        if body["state"] == "ADMIN_ACTION_DONE":
            return 500
        asks["n"] += 1
        return 503 if asks["n"] == 1 else 200  # the question: a blip, then accepted

    endpoint.answer = doctor
    endpoint.up()
    engine = Engine(
        clock=SimClock(), plugins=[small_cloud(SimulatedCloud())], load_entry_points=False
    )
    outbox = WebhookOutbox(engine, public_url="http://fenix.test")
    outbox.set_target(WebhookTarget("pa", endpoint.url))
    base = {"service": "fenix", "session_id": "s1", "project_id": "pa", "metadata": {}}
    informational = {
        **base,
        "state": "ADMIN_ACTION_DONE",
        "instance_ids": ["vm-a1"],
        "allowed_actions": [],
        "reply_at": None,
        "actions_at": None,
        "seq": 7,
    }
    question = {
        **base,
        "state": "PLANNED_MAINTENANCE",
        "instance_ids": ["vm-a2"],
        "allowed_actions": ["MIGRATE"],
        "reply_at": "2026-01-01T00:05:00+00:00",
        "actions_at": "2026-01-01T00:05:00+00:00",
        "seq": 8,
    }
    outbox.queue_notification("maintenance_planned", informational)
    outbox.queue_notification("maintenance_planned", question)
    sender = WebhookSender(outbox, **FAST).start()
    try:
        received = endpoint.wait_for(1)
        sender.stop()
        deliveries = {d.seq: d for d in outbox.deliveries()}
    finally:
        sender.stop()
        engine.close()
    assert [(b["state"], b["instance_ids"]) for b in received] == [
        ("PLANNED_MAINTENANCE", ["vm-a2"])
    ]
    assert deliveries[7].informational
    assert not deliveries[8].informational
    assert (deliveries[7].state, deliveries[7].attempts) == ("dropped", 3)
    assert deliveries[7].last_error == "HTTP 500"
    assert (deliveries[8].state, deliveries[8].attempts) == ("delivered", 2)


def test_informational_attempts_is_checked() -> None:
    engine = Engine(clock=SimClock(), load_entry_points=False)
    try:
        with pytest.raises(InvalidInput) as caught:
            WebhookSender(WebhookOutbox(engine), informational_attempts=0)
        assert caught.value.field == "informational_attempts"
    finally:
        engine.close()
