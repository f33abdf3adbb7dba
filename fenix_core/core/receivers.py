"""The receivers of a blinker signal for one sender, kept between sends.

``signal.receivers_for(sender)`` works the list out at every call (the
sender's id, a union of two sets of receiver ids, a generator): once per
notification, a few microseconds each. :class:`Receivers` keeps the list it
gave until a receiver connects to or disconnects from any signal it has
answered for (blinker's ``receiver_connected`` / ``receiver_disconnected``).

The lists hold their receivers weakly where they can (one that blinker
holds strongly stays alive through blinker): a receiver connected weakly and
garbage collected meanwhile (which blinker drops without a
``receiver_disconnected``) is skipped, never kept alive or called.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable
from types import MethodType
from typing import Any, TypeAlias

from blinker import Signal

__all__ = ["Receivers"]

#: A receiver as kept: a weak reference (for a bound method, to its object,
#: with its function), or the callable itself when it cannot be referenced
#: weakly (blinker holds such a one strongly).
_Kept: TypeAlias = (
    "weakref.ref[Callable[..., Any]] | tuple[weakref.ref[Any], Callable[..., Any]]"
    " | Callable[..., Any]"
)

# Bumped by every connect and disconnect on a watched signal: a list kept
# under an older count is out of date. One count for all the signals, as
# connecting is rare next to sending.
_changes = [0]
_watched: weakref.WeakSet[Signal] = weakref.WeakSet()
_watching = threading.Lock()


def _changed(_signal: Any, **_kwargs: Any) -> None:
    _changes[0] += 1


def _watch(signal: Signal) -> None:
    with _watching:
        if signal not in _watched:
            signal.receiver_connected.connect(_changed, weak=False)
            signal.receiver_disconnected.connect(_changed, weak=False)
            _watched.add(signal)
            _changes[0] += 1


def _kept(receiver: Callable[..., Any]) -> _Kept:
    try:
        if inspect.ismethod(receiver):
            # Its object weakly and its function: a WeakMethod's call is
            # Python code, these two are C.
            return (weakref.ref(receiver.__self__), receiver.__func__)
        return weakref.ref(receiver)
    except TypeError:  # not weakly referable: blinker holds it strongly
        return receiver


class Receivers:
    """``receivers(signal, sender)``: a new list of the live receivers
    ``signal.receivers_for(sender)`` yields, in its order, worked out again
    only after a receiver connected or disconnected. For one sender (an
    engine, for its own notifications): the lists are kept per signal."""

    def __init__(self) -> None:
        self._kept: dict[Signal, tuple[int, list[_Kept]]] = {}

    def __call__(self, signal: Signal, sender: Any) -> list[Callable[..., Any]]:
        if not signal.receivers:  # (blinker's public test: none at all)
            return []
        kept = self._kept.get(signal)
        if kept is None or kept[0] != _changes[0]:
            _watch(signal)
            changes = _changes[0]  # read first: a connect meanwhile is seen at the next call
            kept = self._kept[signal] = (
                changes,
                [_kept(r) for r in signal.receivers_for(sender)],
            )
        live: list[Callable[..., Any]] = []
        for receiver in kept[1]:  # (None below: collected; blinker dropped it too)
            if isinstance(receiver, tuple):
                owner = receiver[0]()
                if owner is not None:
                    live.append(MethodType(receiver[1], owner))
            elif isinstance(receiver, weakref.ref):
                strong = receiver()
                if strong is not None:
                    live.append(strong)
            else:
                live.append(receiver)
        return live
