"""Ordered subscriptions on a real RabbitMQ: events of one key run in the order they were sent.

Real ``celery worker`` processes (prefork) of one service consume a topic ordered by key; the
test process publishes keys interleaved, and the receiver records each run. Every check reads
those records: per key, the runs must follow the sequence numbers, nothing may be missing, and
nothing may run twice unless a crash explains it.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import amqp
import pytest
from django.core.management import call_command

from events_celery.models import ReturnedEvent
from tests.integration.conftest import WORKER_OPTIONS, Bus, inversions, wait_for
from tests.testapp.events import STEPPED, StepData

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

TOPIC = "steps"
KEYS = 50
STEPS = 20


def ordered_config(partitions: int = 4, **options: Any) -> dict[str, Any]:
    return {
        TOPIC: {
            "event_types": [STEPPED.event_type],
            "order_by_key": True,
            "partitions": partitions,
            **options,
        }
    }


@pytest.fixture
def producer(settings: Any) -> None:
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        STEPPED.event_type: {TOPIC: {"event_key_field": "step.key"}}
    }


@contextmanager
def celery_delayed_cleared(bus: Bus, queue_type: str) -> Iterator[None]:
    """Delete Celery's ``celery_delayed_*`` queues and exchanges after a quorum test.

    A Celery worker whose queues are quorum queues declares them on the virtual host for
    delayed tasks; they are no name of this test's, so they go unless they were there before.
    """
    channel = bus.client().channel()
    try:
        channel.queue_declare("celery_delayed_0", passive=True)
        there = True
    except amqp.exceptions.NotFound:
        there = False
    try:
        yield
    finally:
        if queue_type == "quorum" and not there:
            for worker in bus.workers:  # nothing declares them again
                worker.stop()
            client = bus.client()
            cleanup = client.channel()
            for level in range(28):  # kombu's delayed delivery levels
                cleanup.queue_delete(f"celery_delayed_{level}")
                cleanup.exchange_delete(f"celery_delayed_{level}")
            cleanup.exchange_delete("celery_delayed_delivery")
            client.close()


def send_interleaved(keys: int = KEYS, steps: int = STEPS) -> None:
    for seq in range(steps):
        for k in range(keys):
            STEPPED.send_event(step=StepData(key=f"k{k}", seq=seq))


def runs_by_key(bus: Bus, service: str) -> dict[str, list[dict[str, Any]]]:
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in bus.records(service=service, receiver="stepped"):
        by_key[record["key"]].append(record)
    return by_key


def successes(bus: Bus, service: str) -> int:
    return len({(r["key"], r["seq"]) for r in bus.records(service=service, outcome="ok")})


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_keys_keep_their_order_through_retries_a_backlog_and_two_workers(
    bus: Bus, producer: None, settings: Any, queue_type: str
) -> None:
    with celery_delayed_cleared(bus, queue_type):
        run_backlog_with_two_workers(bus, settings, queue_type)


def run_backlog_with_two_workers(bus: Bus, settings: Any, queue_type: str) -> None:
    service = bus.service_name("ledger")
    # 5 % of the events fail their first attempt; each run takes 10 ms, so the backlog lasts
    # long enough for the workers to share the partitions.
    env = {"TEST_FAIL_ONE_IN": "20", "TEST_STEP_SLEEP": "0.01"}
    first = bus.start(service, ordered_config(), env=env, queue_type=queue_type)
    first.stop()  # its queues stay: the events wait there as a backlog
    send_interleaved()
    workers = [
        bus.start(
            service,
            ordered_config(),
            node=f"{service}-{n}",
            env=env,
            queue_type=queue_type,
            wait=False,
        )
        for n in range(2)
    ]
    for worker in workers:
        worker.wait_ready()
    wait_for(lambda: successes(bus, service) == KEYS * STEPS, "every step to run")

    by_key = runs_by_key(bus, service)
    assert {key: inversions(runs) for key, runs in by_key.items() if inversions(runs)} == {}
    for key, runs in by_key.items():
        ok = [r["seq"] for r in runs if r["outcome"] == "ok"]
        assert ok == list(range(STEPS)), f"{key}: {ok}"
    failed = [r for runs in by_key.values() for r in runs if r["outcome"] == "failed"]
    assert failed, "no event failed its first attempt: the retries were not exercised"
    assert all(r["attempt"] == 1 for r in failed)
    nodes = {r["node"] for runs in by_key.values() for r in runs}
    assert len(nodes) == 2, f"one worker ran every key: {nodes}"

    # show_event_bus shows the subscription's parallelism as the broker sees it.
    settings.EVENT_BUS_SERVICE_NAME = service
    settings.EVENT_BUS_CONSUMER_CONFIG = ordered_config()
    settings.EVENT_BUS_QUEUE_TYPE = queue_type
    out = io.StringIO()
    call_command("show_event_bus", stdout=out)
    assert f"{service}.{TOPIC}.ordered.0..3 (ready: 0, 0, 0, 0); workers: 2" in out.getvalue()
    assert "2 worker(s) run its keys" in out.getvalue()


def test_a_key_whose_receiver_always_fails_is_dead_lettered_and_the_others_flow(
    bus: Bus, producer: None
) -> None:
    service = bus.service_name("ledger")
    bus.start(service, ordered_config(), env={"TEST_DOOMED_KEY": "k3"})
    send_interleaved(keys=10, steps=5)
    wait_for(lambda: successes(bus, service) == 9 * 5, "the other keys' steps to run")
    wait_for(lambda: len(bus.dead_letters(service)) == 5, "k3's five steps to be dead-lettered")

    by_key = runs_by_key(bus, service)
    assert all(inversions(runs) == 0 for runs in by_key.values())
    doomed = [r["seq"] for r in by_key["k3"]]
    # Each step of k3 used its three attempts before the next step started.
    assert doomed == [seq for seq in range(5) for _ in range(3)]
    assert [d.reason for d in bus.dead_letters(service)] == ["receiver-failed"] * 5


def test_a_stopped_key_holds_its_later_events_as_dead_letters(bus: Bus, producer: None) -> None:
    service = bus.service_name("ledger")
    bus.start(service, ordered_config(when_exhausted="stop"), env={"TEST_DOOMED_KEY": "k3"})
    send_interleaved(keys=10, steps=5)
    wait_for(lambda: successes(bus, service) == 9 * 5, "the other keys' steps to run")
    wait_for(lambda: len(bus.dead_letters(service)) == 5, "k3's five steps to be dead letters")

    doomed = [r["seq"] for r in runs_by_key(bus, service)["k3"]]
    assert doomed == [0, 0, 0], "only the first step of the stopped key ran"
    reasons = [d.reason for d in bus.dead_letters(service)]
    assert reasons == ["receiver-failed"] + ["key-held"] * 4


def test_an_event_that_kills_a_solo_worker_is_dead_lettered_after_its_redeliveries(
    bus: Bus, producer: None
) -> None:
    # With the solo pool the event kills the whole worker, and a classic partition queue counts
    # no deliveries: the starts of the returned event are counted in the database instead.
    service = bus.service_name("ledger")
    env = {"TEST_CRASH_STEP": "k1/1", "TEST_MAX_REDELIVERIES": "1"}
    options = (*WORKER_OPTIONS, "--pool", "solo")
    worker = bus.start(service, ordered_config(), env=env, options=options)
    send_interleaved(keys=3, steps=3)

    # Each run kills the worker; it is started again, as a process manager would.
    for runs in (1, 2):
        wait_for(lambda w=worker: w.process.poll() is not None, f"the worker to die ({runs})")
        crashed = bus.records(service=service, key="k1", seq=1)
        assert [r["outcome"] for r in crashed] == ["started"] * runs
        worker = bus.start(service, ordered_config(), env=env, options=options)
    wait_for(lambda: successes(bus, service) == 3 * 3 - 1, "every other step to run")
    [letter] = wait_for(lambda: bus.dead_letters(service), "the dead letter")
    assert letter.reason == "redelivered"
    assert "started again 2 time(s)" in letter.error
    assert "EVENT_BUS_MAX_REDELIVERIES is 1" in letter.error
    by_key = runs_by_key(bus, service)
    assert [(r["seq"], r["outcome"]) for r in by_key["k1"]] == [
        (0, "ok"),
        (1, "started"),
        (1, "started"),
        (2, "ok"),
    ]
    assert all(inversions(runs) == 0 for runs in by_key.values())
    assert worker.process.poll() is None
    assert not ReturnedEvent.objects.exists()


def test_copies_the_broker_returns_go_back_to_the_intake_and_are_routed_again_in_order(
    bus: Bus, producer: None
) -> None:
    service = bus.service_name("ledger")
    worker = bus.start(service, ordered_config())
    send_interleaved(keys=10, steps=1)
    wait_for(lambda: successes(bus, service) == 10, "the first steps to run")
    # Partition 1 loses its binding: the router's copies for it come back (mandatory) until
    # the router declares its partitions again, after a backoff.
    exchange = f"{service}.{TOPIC}.ordered"
    bus.channel.queue_unbind(f"{exchange}.1", exchange, routing_key="1")
    for seq in range(1, 5):
        for k in range(10):
            STEPPED.send_event(step=StepData(key=f"k{k}", seq=seq))

    wait_for(lambda: successes(bus, service) == 10 * 5, "every step to run")
    assert "unroutable: the broker returned it (mandatory)" in worker.log.read_text()
    by_key = runs_by_key(bus, service)
    assert all(inversions(runs) == 0 for runs in by_key.values())
    assert all([r["seq"] for r in runs] == list(range(5)) for runs in by_key.values())


def test_an_event_without_a_key_runs_unordered(bus: Bus, settings: Any) -> None:
    settings.EVENT_BUS_PRODUCER_CONFIG = {STEPPED.event_type: {TOPIC: {}}}
    service = bus.service_name("ledger")
    bus.start(service, ordered_config())
    send_interleaved(keys=2, steps=3)
    wait_for(lambda: successes(bus, service) == 6, "the events without a key to run")
    assert not bus.dead_letters(service)


def test_changing_the_partitions_moves_the_waiting_events_in_their_order(
    bus: Bus, producer: None, settings: Any
) -> None:
    service = bus.service_name("ledger")
    slow = {"TEST_STEP_SLEEP": "0.02"}
    worker = bus.start(service, ordered_config(partitions=2), env=slow)
    send_interleaved(keys=20, steps=10)
    wait_for(lambda: successes(bus, service) >= 10, "the first steps to run")
    worker.stop()  # mid-stream: the rest waits in the intake and the two partitions
    waiting = 20 * 10 - successes(bus, service)
    assert waiting > 0

    refused = bus.start(service, ordered_config(partitions=3), node="refused", wait=False)
    wait_for(lambda: refused.process.poll() is not None, "the worker to refuse to start")
    assert "event_bus_partitions steps --apply" in refused.log.read_text()

    settings.EVENT_BUS_SERVICE_NAME = service
    settings.EVENT_BUS_CONSUMER_CONFIG = ordered_config(partitions=3)
    out = io.StringIO()
    call_command("event_bus_partitions", "--apply", stdout=out)
    assert "steps: 2 partition(s) on the broker, 3 in the settings" in out.getvalue()
    assert "steps: now 3 partition(s)" in out.getvalue()

    bus.start(service, ordered_config(partitions=3), node="after", env=slow)
    wait_for(lambda: successes(bus, service) == 20 * 10, "every step to run")
    by_key = runs_by_key(bus, service)
    assert {key: inversions(runs) for key, runs in by_key.items() if inversions(runs)} == {}
    assert all(len(runs) == 10 for runs in by_key.values()), "a step ran twice"
