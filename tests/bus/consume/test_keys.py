"""Key queues: at most one event of a key runs at a time, in arrival order."""

from __future__ import annotations

import zlib

from events_celery.bus.consume.keys import Acks, Entry, KeyQueues, Recent, partition_of


def entry(key: str, n: int) -> Entry:
    return Entry(key, f"{key}-{n}", message=None, item={})


def test_the_partition_of_a_key_is_crc32_of_its_bytes_modulo_the_partitions():
    assert partition_of("order-17", 8) == zlib.crc32(b"order-17") % 8
    assert {partition_of(f"k{n}", 4) for n in range(100)} == {0, 1, 2, 3}


def test_the_first_event_of_a_key_starts_and_later_ones_wait_for_it():
    started: list[str] = []
    queues = KeyQueues(lambda e: started.append(e.event_id), busy=lambda key: False)
    a1, a2, b1 = entry("a", 1), entry("a", 2), entry("b", 1)
    for e in (a1, a2, b1):
        queues.add(e)

    assert started == ["a-1", "b-1"]
    queues.finish(a1)
    assert started == ["a-1", "b-1", "a-2"]
    queues.finish(a2)
    queues.finish(b1)
    assert len(queues) == 0


def test_a_key_still_running_from_before_waits_until_kicked():
    started: list[str] = []
    busy = {"a"}
    queues = KeyQueues(lambda e: started.append(e.event_id), busy=lambda key: key in busy)
    queues.add(entry("a", 1))
    assert started == []

    busy.clear()
    queues.kick("a")
    assert started == ["a-1"]


def test_a_key_waiting_for_a_retry_does_not_start_until_its_timer_is_done():
    started: list[str] = []
    queues = KeyQueues(lambda e: started.append(e.event_id), busy=lambda key: False)
    first = entry("a", 1)
    queues.add(first)
    first.timer = object()  # a retry is scheduled
    queues.add(entry("a", 2))
    queues.kick("a")
    assert started == ["a-1"]

    first.timer = None
    queues.kick("a")
    assert started == ["a-1", "a-1"]


def test_paused_queues_start_nothing_and_clear_returns_every_event():
    started: list[str] = []
    queues = KeyQueues(lambda e: started.append(e.event_id), busy=lambda key: False)
    queues.paused = True
    queues.add(entry("a", 1))
    queues.add(entry("b", 1))

    assert started == []
    assert [e.event_id for e in queues.clear()] == ["a-1", "b-1"]
    assert len(queues) == 0


def test_finishing_an_event_that_is_not_the_head_of_its_key_changes_nothing():
    queues = KeyQueues(lambda e: None, busy=lambda key: False)
    head = entry("a", 1)
    queues.add(head)
    queues.finish(entry("a", 9))
    assert list(queues) == [head]


def test_recent_ids_are_bounded():
    recent = Recent(size=2)
    for event_id in ("x", "y", "z"):
        recent.add(event_id)
    assert "x" not in recent
    assert "y" in recent
    assert "z" in recent


class Delivered:
    def __init__(self, tag: int, sent: list[tuple[int, bool]]) -> None:
        self.delivery_tag = tag
        self._sent = sent

    def ack(self, multiple: bool = False) -> None:
        self._sent.append((self.delivery_tag, multiple))


def test_settled_messages_at_the_head_are_acknowledged_in_one_frame_the_others_alone():
    sent: list[tuple[int, bool]] = []
    acks = Acks()
    messages = [Delivered(tag, sent) for tag in range(1, 6)]
    for message in messages:
        acks.delivered(message)
    for tag in (1, 2, 3, 5):  # 4 waits for a retry
        acks.settle(messages[tag - 1])

    assert acks.flush() == 2
    assert sent == [(3, True), (5, False)]
    acks.settle(messages[3])
    acks.flush()
    assert sent[-1] == (4, True)


def test_without_multiple_every_message_is_acknowledged_alone():
    sent: list[tuple[int, bool]] = []
    acks = Acks(multiple=False)
    messages = [Delivered(tag, sent) for tag in (1, 2)]
    for message in messages:
        acks.delivered(message)
        acks.settle(message)
    acks.flush()
    assert sent == [(1, False), (2, False)]


class Rejectable(Delivered):
    def reject(self, requeue: bool = True) -> None:
        self._sent.append((-self.delivery_tag, requeue))


def test_a_rejected_message_leaves_the_run_at_the_head_to_the_others():
    sent: list[tuple[int, bool]] = []
    acks = Acks()
    messages = [Rejectable(tag, sent) for tag in (1, 2, 3)]
    for message in messages:
        acks.delivered(message)
    acks.reject(messages[0])
    acks.settle(messages[1])
    acks.settle(messages[2])
    acks.flush()

    assert sent == [(-1, False), (3, True)]
