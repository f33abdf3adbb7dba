"""The receivers of a signal kept between sends (core/receivers.py) and the
engine's delivery through them: a receiver that connects or disconnects
between two notifications is seen at the next one, and a weakly connected
receiver that was collected is neither called nor kept alive."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from blinker import Signal
from conftest import drive

from fenix_core import Engine, signals
from fenix_core.core.receivers import Receivers
from fenix_core.testing import SimulatedCloud


class Sender:
    pass


class Listener:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        self.got.append(kwargs)

    def method(self, sender: Any, **kwargs: Any) -> None:
        self.got.append(kwargs)


def test_it_lists_what_blinker_lists_for_the_sender_and_any() -> None:
    signal, me, other = Signal(), Sender(), Sender()
    mine, anyone, theirs = Listener(), Listener(), Listener()
    signal.connect(mine, sender=me)
    signal.connect(anyone)
    signal.connect(theirs, sender=other)
    receivers = Receivers()
    assert receivers(signal, me) == list(signal.receivers_for(me))
    assert set(map(id, receivers(signal, me))) == {id(mine), id(anyone)}
    assert receivers(signal, me) == receivers(signal, me)  # kept, in the same order


def test_a_receiver_connected_or_disconnected_since_is_seen() -> None:
    signal, me = Signal(), Sender()
    first, second = Listener(), Listener()
    signal.connect(first, sender=me)
    receivers = Receivers()
    assert receivers(signal, me) == [first]
    signal.connect(second, sender=me)
    assert {id(r) for r in receivers(signal, me)} == {id(first), id(second)}
    signal.disconnect(first, sender=me)
    assert receivers(signal, me) == [second]
    signal.disconnect(second)  # from every sender
    assert receivers(signal, me) == []


def test_a_connect_on_another_signal_leaves_the_lists_right() -> None:
    one, two, me = Signal(), Signal(), Sender()
    a, b = Listener(), Listener()
    one.connect(a, sender=me)
    receivers = Receivers()
    assert receivers(one, me) == [a]
    assert receivers(two, me) == []
    two.connect(b, sender=me)
    assert receivers(one, me) == [a]
    assert receivers(two, me) == [b]


def test_a_collected_weak_receiver_is_skipped_and_not_kept_alive() -> None:
    signal, me = Signal(), Sender()
    listener = Listener()
    signal.connect(listener.method, sender=me)  # weak, as blinker's default
    receivers = Receivers()
    assert receivers(signal, me) == [listener.method]
    receivers(signal, me)[0](me, note=1)  # the method of that object
    assert listener.got == [{"note": 1}]
    watch = weakref.ref(listener)
    del listener
    gc.collect()
    assert watch() is None  # the kept list held it weakly
    assert receivers(signal, me) == []


def test_a_strongly_held_receiver_stays_even_when_it_cannot_be_referenced_weakly() -> None:
    signal, me = Signal(), Sender()
    got: list[Any] = []
    signal.connect(got.append, sender=me, weak=False)  # a builtin method: no weakref
    kept = Receivers()(signal, me)
    gc.collect()
    assert kept == [got.append]
    strong = Listener()
    signal.connect(strong, sender=me, weak=False)
    receivers = Receivers()
    listed = receivers(signal, me)
    watch = weakref.ref(strong)
    del strong
    gc.collect()
    assert watch() is not None  # blinker holds it
    assert receivers(signal, me) == listed


def test_the_engine_sends_to_receivers_connected_between_its_notifications(
    fenix_cloud: SimulatedCloud, fenix_engine_factory: Any, fenix_clock: Any
) -> None:
    for host in ("cmp-0", "cmp-1"):
        fenix_cloud.add_host(host, vcpus=4)
    fenix_cloud.add_instance("vm-0", "p", "cmp-0")
    engine: Engine = fenix_engine_factory()
    early: list[str] = []
    late: list[str] = []

    def on_early(sender: Engine, payload: dict[str, Any]) -> None:
        early.append(payload["state"])

    def on_late(sender: Engine, payload: dict[str, Any]) -> None:
        late.append(payload["state"])

    signals.maintenance_session.connect(on_early, sender=engine)
    try:
        sid = engine.create_session({"hosts": ["cmp-0"]})
        engine.run_until_idle()
        assert early  # the session's first states
        seen = len(early)
        signals.maintenance_session.connect(on_late, sender=engine)
        signals.maintenance_session.disconnect(on_early, sender=engine)
        view = drive(engine, fenix_clock, sid)
        assert view.state == "MAINTENANCE_DONE"
        assert len(early) == seen  # nothing after its disconnect
        assert late[-1:] == ["MAINTENANCE_DONE"]
    finally:
        signals.maintenance_session.disconnect(on_early, sender=engine)
        signals.maintenance_session.disconnect(on_late, sender=engine)
