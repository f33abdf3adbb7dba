"""Delivery with a per-session watermark (plan §3.2): a crash between
delivering and the next step's write re-sends what was sent, once, in seq
order, and never leaves a gap."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.core.outbox import Outbox, OutboxGap
from fenix_core.core.ports import OutboxRec
from fenix_core.errors import FenixError


class Killed(BaseException):
    """The process dies here (a BaseException, as a kill looks to the code)."""


class Durable:
    """What survives a crash: committed outbox rows and the stored watermark."""

    def __init__(self) -> None:
        self.rows: list[OutboxRec] = []
        self.delivered_seq = 0

    def commit(self, signals: Sequence[str], delivered_seq: int) -> list[OutboxRec]:
        """A step's write: its new rows and the watermark of earlier steps."""
        seq = self.rows[-1].seq if self.rows else 0
        new = [OutboxRec("s", seq + i, name, {}) for i, name in enumerate(signals, start=1)]
        self.rows += new
        self.delivered_seq = delivered_seq
        return new

    def undelivered(self, session_id: str, after_seq: int) -> list[OutboxRec]:
        return [r for r in self.rows if r.session_id == session_id and r.seq > after_seq]


def rec(seq: int, session: str = "s") -> OutboxRec:
    return OutboxRec(session, seq, f"n{seq}", {})


def test_rows_go_out_in_seq_order_and_once_per_watermark() -> None:
    sent: list[int] = []
    box = Outbox(lambda r: sent.append(r.seq))
    assert box.deliver([rec(2), rec(1), rec(3)]) == 3
    assert box.deliver([rec(3), rec(4)]) == 4  # 3 is below the watermark
    assert sent == [1, 2, 3, 4]
    assert box.watermark("s") == 4
    assert box.watermark("other") == 0


def test_rows_of_two_sessions_in_one_delivery_send_nothing() -> None:
    sent: list[int] = []
    box = Outbox(lambda r: sent.append(r.seq))
    with pytest.raises(FenixError, match="one session's rows; got s and t, u"):
        box.deliver([rec(1), rec(2), rec(1, "u"), rec(1, "t"), rec(3, "u")])
    assert sent == []
    assert box.watermark("s") == 0


def test_a_gap_sends_nothing() -> None:
    sent: list[int] = []
    box = Outbox(lambda r: sent.append(r.seq))
    box.restore("s", 2)
    with pytest.raises(OutboxGap, match="notification 3 is missing before 4"):
        box.deliver([rec(4), rec(5)])
    assert sent == []
    assert box.watermark("s") == 2


def test_one_delivery_is_one_session() -> None:
    box = Outbox(lambda r: None)
    with pytest.raises(Exception, match="one session's rows"):
        box.deliver([rec(1), rec(2, "t")])


def test_a_failing_receiver_leaves_the_watermark_at_what_was_sent() -> None:
    sent: list[int] = []

    def send(row: OutboxRec) -> None:
        if row.seq == 3:
            raise RuntimeError("receiver down")
        sent.append(row.seq)

    box = Outbox(send)
    with pytest.raises(RuntimeError):
        box.deliver([rec(1), rec(2), rec(3), rec(4)])
    assert box.watermark("s") == 2
    assert sent == [1, 2]


def test_kill_between_deliver_and_the_next_write_resends_once_in_order() -> None:
    durable = Durable()
    received: list[int] = []
    box = Outbox(lambda r: received.append(r.seq))
    rows = durable.commit(["a", "b", "c"], delivered_seq=0)
    box.deliver(rows)  # then the process dies before the next step writes 3
    assert durable.delivered_seq == 0

    box = Outbox(lambda r: received.append(r.seq))  # the next life
    mark = box.leftovers(durable, "s", durable.delivered_seq)
    assert mark == 3
    box.deliver(durable.commit(["d"], delivered_seq=mark))
    assert durable.delivered_seq == 3
    assert received == [1, 2, 3, 1, 2, 3, 4]

    box = Outbox(lambda r: received.append(r.seq))  # a clean restart
    box.leftovers(durable, "s", durable.delivered_seq)
    assert received == [1, 2, 3, 1, 2, 3, 4, 4]  # only 4, whose watermark was never written


# Each step: how many notifications it commits, and where (if anywhere) the
# process dies: "send:k" during the k-th send of its delivery, "after" between
# delivery and the next write.
steps = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(["none", "none", "after", "send:0", "send:1", "send:2"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_any_kill_point_resends_each_row_at_most_once_in_order_without_gaps(
    plan: list[tuple[int, str]],
) -> None:
    durable = Durable()
    received: list[int] = []
    lives: list[list[int]] = [[]]

    def life() -> tuple[Outbox, list[int]]:
        lives.append([])
        log = lives[-1]

        def send(row: OutboxRec) -> None:
            received.append(row.seq)
            log.append(row.seq)

        box = Outbox(send)
        box.leftovers(durable, "s", durable.delivered_seq)
        return box, log

    box, log = life()
    sends_before_kill: int | None = None

    def arm(kill: str) -> None:
        nonlocal sends_before_kill
        sends_before_kill = int(kill.split(":")[1]) if kill.startswith("send:") else None

    for count, kill in plan:
        mark = box.watermark("s")
        new = durable.commit([f"x{i}" for i in range(count)], delivered_seq=mark)
        arm(kill)
        try:
            if sends_before_kill is not None and sends_before_kill < len(new):
                box.deliver(new[:sends_before_kill])
                raise Killed
            box.deliver(new)
            if kill == "after":
                raise Killed
        except Killed:
            box, log = life()
    durable.commit([], delivered_seq=box.watermark("s"))  # the last life's next step
    box, log = life()  # a last restart: nothing is left to send
    assert log == []

    total = durable.rows[-1].seq if durable.rows else 0
    assert sorted(set(received)) == list(range(1, total + 1))  # nothing lost
    for seq in set(received):
        assert received.count(seq) <= 2  # sent, and re-sent at most once
    for one in lives:  # within each life: in seq order, no gap
        assert not one or one == list(range(one[0], one[0] + len(one)))
