"""The in-memory due queue of the sessions an engine holds (plan §3.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.core.due import DueQueue

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_due_sessions_come_out_earliest_first_ties_by_id() -> None:
    q = DueQueue()
    q.schedule("c", at(5))
    q.schedule("a", at(10))
    q.schedule("b", at(5))
    q.schedule("d", at(11))
    assert q.next_wake() == at(5)
    assert q.pop_due(at(10)) == ["b", "c", "a"]
    assert q.pop_due(at(10)) == []  # handed out once
    assert list(q) == ["d"]
    assert q.next_wake() == at(11)


def test_a_rescheduled_session_is_due_only_at_its_new_time() -> None:
    q = DueQueue()
    q.schedule("s", at(1))
    q.schedule("s", at(100))  # the old entry stays in the heap, stale
    assert q.next_wake() == at(100)
    assert q.pop_due(at(50)) == []
    q.schedule("s", at(20))  # moved earlier again
    assert q.pop_due(at(50)) == ["s"]
    assert q.pop_due(at(1000)) == []  # neither stale entry surfaces
    assert len(q) == 0
    assert q.next_wake() is None


def test_a_dropped_session_never_comes_out_and_can_come_back() -> None:
    q = DueQueue()
    q.schedule("s", at(1))
    q.drop("s")
    assert "s" not in q
    assert q.pop_due(at(9)) == []
    q.schedule("s", at(3))
    assert q.pop_due(at(9)) == ["s"]


def test_stale_entries_do_not_pile_up() -> None:
    q = DueQueue()
    for i in range(10_000):
        q.schedule("s", at(i % 97))
    assert q.heap_size <= 4 * 1 + 64


ops = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), st.sampled_from("abcdef"), st.integers(0, 50)),
        st.tuples(st.just("drop"), st.sampled_from("abcdef"), st.just(0)),
        st.tuples(st.just("pop"), st.just(""), st.integers(0, 50)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_queue_equals_a_sorted_list_oracle(steps: list[tuple[str, str, int]]) -> None:
    q = DueQueue()
    oracle: dict[str, int] = {}
    for op, sid, t in steps:
        if op == "schedule":
            q.schedule(sid, at(t))
            oracle[sid] = t
        elif op == "drop":
            q.drop(sid)
            oracle.pop(sid, None)
        else:
            expected = [s for w, s in sorted((w, s) for s, w in oracle.items()) if w <= t]
            assert q.pop_due(at(t)) == expected
            for s in expected:
                del oracle[s]
        nxt = min(oracle.values(), default=None)
        assert q.next_wake() == (None if nxt is None else at(nxt))
        assert sorted(q) == sorted(oracle)
        assert len(q) == len(oracle)
