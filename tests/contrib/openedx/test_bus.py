"""An Open edX service on RabbitMQ through the adapter: real processes, the real broker.

One process sends openedx-events' own ``COURSE_ENROLLMENT_CREATED`` with the settings of
``service_settings``; another runs ``manage.py consume_events -t enrollments -g GROUP``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contrib.openedx import require_openedx_events

require_openedx_events()

from events_celery.contrib.openedx import wire  # noqa: E402
from events_celery.contrib.openedx.consumer import retry_queue  # noqa: E402
from events_celery.metadata import EventMetadata  # noqa: E402
from events_celery.wire import HEADER_FINGERPRINT, HEADER_PARTITION_KEY  # noqa: E402
from tests.contrib.openedx.enrollments import COURSE_ENROLLMENT_CREATED, TOPIC  # noqa: E402
from tests.integration.conftest import ROOT, Bus, open_bus, wait_for  # noqa: E402

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

SETTINGS = "tests.contrib.openedx.service_settings"
EVENT_TIME = "2026-11-02T10:30:15.654321+00:00"


class ConsumeEvents:
    """``manage.py consume_events`` of one consumer group, as its own process."""

    def __init__(self, bus: Bus, group: str, env: dict[str, str], name: str = "") -> None:
        self.bus, self.group, self.env = bus, group, env
        self.log = bus.tmp_path / f"consume-{group}{name}.log"
        self.starts = 0
        self.start()

    def start(self) -> None:
        """Start the process and wait until it consumes."""
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "consume_events", "-t", TOPIC, "-g", self.group],
                cwd=ROOT,
                env={
                    **self.bus.env(),
                    "DJANGO_SETTINGS_MODULE": SETTINGS,
                    "TEST_SERVICE": self.group,
                    "TEST_RECEIVERS": "1",
                    **self.env,
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        wait_for(self._ready, f"consume_events -g {self.group} to start (log: {self.log})")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"consume_events exited:\n{self.log.read_text()[-4000:]}")
        return self.log.read_text().count(" consuming ") >= self.starts

    def stop(self) -> int:
        """SIGTERM the process, as a process manager stops it; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Groups:
    """The consumer groups of one test, each a ``consume_events`` process on ``enrollments``."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.started: list[ConsumeEvents] = []

    def start(self, base: str, env: dict[str, str] | None = None) -> ConsumeEvents:
        """Start ``consume_events`` for a new group named after ``base``."""
        group = self.bus.service_name(base)
        self.bus.services.add(group)  # its queues are deleted after the test
        consumer = ConsumeEvents(self.bus, group, env or {})
        self.started.append(consumer)
        return consumer


@pytest.fixture
def bus(rabbitmq_url: str, tmp_path: Path, settings: Any) -> Iterator[Bus]:
    """A bus on the topic ``enrollments``; the test process publishes nothing itself."""
    with open_bus(rabbitmq_url, tmp_path, settings, "outbox") as harness:
        harness.topics.add(TOPIC)
        yield harness


@pytest.fixture
def groups(bus: Bus) -> Iterator[Groups]:
    """Consumer groups of the test, stopped afterwards, their retry queues deleted."""
    started = Groups(bus)
    try:
        yield started
    finally:
        for consumer in started.started:
            consumer.stop()
        for group in bus.services:
            for delay in (0.2, 0.4):
                bus.channel.queue_delete(retry_queue(group, TOPIC, delay).name)


def send(bus: Bus, *usernames: str, minor_version: int = 0) -> dict[str, dict[str, Any]]:
    """Run a sending service process; what it sent, by username."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.contrib.openedx.send_enrollments", *usernames],
        cwd=ROOT,
        env={
            **bus.env(),
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "TEST_SERVICE": bus.service_name("lms"),
            "TEST_MINOR_VERSION": str(minor_version),
            "TEST_EVENT_TIME": EVENT_TIME,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sent: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return sent


def test_an_enrollment_sent_in_one_service_reaches_a_receiver_in_another_with_its_metadata(
    bus: Bus, groups: Groups
) -> None:
    consumer = groups.start("course-catalog")
    probe = bus.probe(topic=TOPIC)

    sent = send(bus, "ada", "rollback-bob", minor_version=2)

    ada = sent["ada"]
    (received,) = wait_for(lambda: bus.records(event_id=ada["id"]), "ada's enrollment")
    assert received["minorversion"] == 2 == ada["minorversion"]
    assert received["source"] == f"openedx/{bus.service_name('lms')}/web" == ada["source"]
    assert received["time"] == EVENT_TIME == ada["time"]
    assert received["sourcelib"] == [
        int(n) for n in __import__("openedx_events").__version__.split(".")
    ]
    assert received["from_event_bus"] is True
    assert "send_event_with_custom_metadata" in received["through"]
    assert received["course_key"] == "course-v1:edX+DemoX+2026"
    assert received["creation_date"] == "2026-11-02T10:30:15.123456+00:00"

    # The rolled-back enrollment was never published; the probe got only ada's.
    message = wait_for(lambda: bus.get(probe), "the message on the probe queue")
    assert bus.get(probe) is None
    assert not bus.records(event_id=sent["rollback-bob"]["id"])
    # An events_celery consumer reads its headers: the wire format of design section 4.
    headers = message.headers
    metadata = EventMetadata.from_headers(headers)
    assert str(metadata.id) == ada["id"]
    assert metadata.minor_version == 2
    assert headers[HEADER_PARTITION_KEY] == "course-v1:edX+DemoX+2026"
    assert headers[HEADER_FINGERPRINT] == wire.signal_codec(COURSE_ENROLLMENT_CREATED).fingerprint
    assert message.properties["content_type"] == "application/avro"
    assert message.properties["message_id"] == ada["id"]
    # SIGTERM stops it cleanly, after the event in hand.
    assert consumer.stop() == 0
    assert "stopping" in consumer.log.read_text()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_failing_receivers_are_retried_then_dead_lettered_and_later_events_still_arrive(
    bus: Bus, groups: Groups, queue_type: str
) -> None:
    group = groups.start("grades", {"TEST_QUEUE_TYPE": queue_type}).group

    sent = send(bus, "flaky", "broken", "cleo")

    flaky = wait_for(
        lambda: len(bus.records(event_id=sent["flaky"]["id"])) >= 3, "flaky's third call"
    )
    assert flaky
    wait_for(lambda: bus.records(event_id=sent["cleo"]["id"]), "cleo's enrollment")
    [letter] = wait_for(lambda: bus.dead_letters(group), "broken's dead letter")
    assert str(letter.event_id) == sent["broken"]["id"]
    assert letter.reason == "receiver-failed"
    assert letter.error.startswith("receiver(s) failed after 3 attempt(s)")
    assert letter.receiver == "tests.contrib.openedx.receivers.apps.record_enrollment"
    assert [r["call"] for r in bus.records(event_id=sent["broken"]["id"])] == [1, 2, 3]
    assert [r["call"] for r in bus.records(event_id=sent["flaky"]["id"])] == [1, 2, 3]
    assert len(bus.dead_letters(group)) == 1


def test_an_event_whose_receiver_kills_the_consumer_is_dead_lettered_after_its_redeliveries(
    bus: Bus, groups: Groups
) -> None:
    consumer = groups.start("certificates", {"TEST_MAX_REDELIVERIES": "1"})

    sent = send(bus, "crash", "dora")

    # Each call SIGKILLs the consumer; it is restarted, as a process manager would.
    crash = sent["crash"]["id"]
    for calls in (1, 2):
        wait_for(lambda: consumer.process.poll() is not None, f"the consumer to die ({calls})")
        assert len(bus.records(event_id=crash)) == calls
        consumer.start()
    wait_for(lambda: bus.records(event_id=sent["dora"]["id"]), "dora's enrollment")
    [letter] = wait_for(lambda: bus.dead_letters(consumer.group), "the dead letter")
    assert str(letter.event_id) == crash
    assert letter.reason == "redelivered"
    assert letter.error.startswith("came back unfinished 2 time(s)")
    assert len(bus.records(event_id=crash)) == 2
    assert consumer.process.poll() is None
