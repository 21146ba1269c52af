"""``consume_events`` of a topic ordered by key: real processes of one group, the real broker.

The sending service enrolls ``s<step>@k<key>`` users: each key is a course run (the event's
key, ``enrollment.course.course_key``), and its steps are sent in order, keys interleaved.
Every check reads what the receivers recorded: per key the runs follow the steps, nothing is
missing, and nothing runs twice unless a killed process explains it.
"""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from typing import Any

import pytest

from tests.contrib.openedx import require_openedx_events

require_openedx_events()

from events_celery.models import ReturnedEvent  # noqa: E402
from tests.contrib.openedx import test_bus  # noqa: E402
from tests.contrib.openedx.enrollments import TOPIC  # noqa: E402
from tests.contrib.openedx.test_bus import ConsumeEvents, Groups, send  # noqa: E402
from tests.integration.conftest import Bus, inversions, wait_for  # noqa: E402

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

bus = test_bus.bus  # the fixtures of the adapter's process tests
groups = test_bus.groups

KEYS = 20
STEPS = 10


def ordered(**options: Any) -> dict[str, str]:
    """The environment of a ``consume_events`` process whose topic is ordered by key."""
    config = {TOPIC: {"order_by_key": True, "partitions": 4, **options}}
    return {"TEST_CONSUMER_CONFIG": json.dumps(config)}


def interleaved() -> list[str]:
    return [f"s{step}@k{key}" for step in range(STEPS) for key in range(KEYS)]


def runs_by_key(bus: Bus) -> dict[str, list[dict[str, Any]]]:
    """Every run of the receiver (failed ones too), by key, in the order they happened."""
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in bus.records():
        name, _, key = record["username"].partition("@")
        by_key[key].append({**record, "seq": int(name[1:]) if name[1:].isdigit() else -1})
    return by_key


def succeeded(bus: Bus) -> int:
    return len({r["event_id"] for r in bus.records(failed=False)})


def test_two_processes_of_a_group_keep_each_keys_order_through_retries(
    bus: Bus, groups: Groups
) -> None:
    env = {**ordered(), "TEST_FAIL_FIRST_ONE_IN": "8", "TEST_STEP_SLEEP": "0.02"}
    first = groups.start("ledger", env)
    second = ConsumeEvents(bus, first.group, env, name="-second")
    groups.started.append(second)

    send(bus, *interleaved())
    wait_for(lambda: succeeded(bus) == KEYS * STEPS, "every step to run")

    by_key = runs_by_key(bus)
    assert {key: inversions(runs) for key, runs in by_key.items() if inversions(runs)} == {}
    for key, runs in by_key.items():
        assert [r["seq"] for r in runs if not r["failed"]] == list(range(STEPS)), key
    failed = [r for runs in by_key.values() for r in runs if r["failed"]]
    assert failed, "no first attempt failed: the retries were not exercised"
    assert all(r["call"] == 1 for r in failed), "an event failed twice"
    # Each failed event ran once more and succeeded: in the process that held it, after its
    # backoff, or in the other one when its partition was handed on meanwhile.
    for run in failed:
        assert [r["failed"] for r in bus.records(event_id=run["event_id"])] == [True, False]
    assert {r["pid"] for runs in by_key.values() for r in runs} == {
        first.process.pid,
        second.process.pid,
    }, "one process ran every key: the partitions were not shared"
    assert not bus.dead_letters(first.group)
    assert not any(bus.depth(f"{first.group}.{TOPIC}.ordered.{n}") for n in range(4))


def test_a_killed_process_hands_its_keys_to_the_other_in_order(bus: Bus, groups: Groups) -> None:
    env = {**ordered(), "TEST_STEP_SLEEP": "0.03"}
    first = groups.start("ledger", env)
    second = ConsumeEvents(bus, first.group, env, name="-second")
    groups.started.append(second)

    send(bus, *interleaved())
    wait_for(lambda: bus.depth(f"{first.group}.{TOPIC}.ordered") == 0, "the intake to drain")
    wait_for(
        lambda: len({r["pid"] for r in bus.records()}) == 2 and succeeded(bus) >= 40,
        "both processes to run events",
    )
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    killed_at = succeeded(bus)
    wait_for(lambda: succeeded(bus) == KEYS * STEPS, "every step to run")

    assert killed_at < KEYS * STEPS, "the process was killed after the stream ended"
    by_key = runs_by_key(bus)
    assert {key: inversions(runs) for key, runs in by_key.items() if inversions(runs)} == {}
    for key, runs in by_key.items():
        assert sorted({r["seq"] for r in runs}) == list(range(STEPS)), key
    twice = [r for runs in by_key.values() for r in runs if r["call"] > 1]
    # Only the event the killed process was running may run again (in the other process).
    assert len(twice) <= 1, twice
    for again in twice:
        [earlier] = bus.records(event_id=again["event_id"], call=1)
        assert (earlier["pid"], again["pid"]) == (first.process.pid, second.process.pid)
    moved = [
        key
        for key, runs in by_key.items()
        if runs[0]["pid"] == first.process.pid and runs[-1]["pid"] == second.process.pid
    ]
    assert moved, "no key went on in the other process"


def test_a_stopped_key_holds_its_later_events_as_dead_letters(bus: Bus, groups: Groups) -> None:
    consumer = groups.start("ledger", ordered(when_exhausted="stop"))

    send(bus, "s0@k1", "broken@k1", "s2@k1", "s0@k2", "s3@k1", "s1@k2")

    wait_for(lambda: len(bus.dead_letters(consumer.group)) == 3, "k1's three dead letters")
    wait_for(lambda: len(bus.records(username="s1@k2")) == 1, "k2's second step")
    letters = bus.dead_letters(consumer.group)
    assert [d.reason for d in letters] == ["receiver-failed", "key-held", "key-held"]
    assert [r["username"] for r in bus.records() if r["username"].endswith("@k1")] == [
        "s0@k1",
        "broken@k1",
        "broken@k1",
        "broken@k1",
    ]
    assert [r["username"] for r in bus.records() if r["username"].endswith("@k2")] == [
        "s0@k2",
        "s1@k2",
    ]
    # SIGTERM stops it cleanly (its channels closed, nothing left unacknowledged).
    assert consumer.stop() == 0
    assert "stopping" in consumer.log.read_text()


def test_an_event_that_kills_the_process_is_dead_lettered_after_its_redeliveries_in_order(
    bus: Bus, groups: Groups
) -> None:
    # Classic partition queues count no deliveries: the starts of a returned event are
    # counted in the database instead.
    consumer = groups.start("ledger", {**ordered(), "TEST_MAX_REDELIVERIES": "1"})

    sent = send(bus, "s0@k1", "crash@k1", "s2@k1", "s0@k2")

    # Each run SIGKILLs the process; it is restarted, as a process manager would.
    crash = sent["crash@k1"]["id"]
    for calls in (1, 2):
        wait_for(lambda: consumer.process.poll() is not None, f"the process to die ({calls})")
        assert len(bus.records(event_id=crash)) == calls
        consumer.start()
    wait_for(lambda: bus.records(username="s2@k1"), "k1's next step")
    [letter] = wait_for(lambda: bus.dead_letters(consumer.group), "the dead letter")
    assert str(letter.event_id) == crash
    assert letter.reason == "redelivered"
    assert "started again 2 time(s)" in letter.error
    assert [r["username"] for r in bus.records() if r["username"].endswith("@k1")] == [
        "s0@k1",
        "crash@k1",
        "crash@k1",
        "s2@k1",
    ]
    wait_for(lambda: bus.records(username="s0@k2"), "k2's step")
    assert consumer.process.poll() is None
    assert not ReturnedEvent.objects.filter(consumer=consumer.group).exists()
