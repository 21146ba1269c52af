"""``consume_events`` runs only events their owner published (``EVENT_BUS_TRUSTED_PUBLISHERS``).

On the shared RabbitMQ, in a virtual host of the test: the group consumes as broker user
``broker_user``; the owner of the enrollment event type is a second user of the test. The
group's own user publishes an event claiming (in the header that carries an original
publisher) to come from the owner: the broker checked only that it comes from the group's user,
so it is dead-lettered with the reason. The owner's event runs, through a retry too, and on an
ordered topic through the group's partitions, both of which the group republishes as itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import amqp
import pytest

from tests.conftest import RABBITMQ_HOST, RABBITMQ_PORT, BrokerUser, ctl
from tests.contrib.openedx import require_openedx_events

require_openedx_events()

from openedx_events.data import EventsMetadata  # noqa: E402

from events_celery.contrib.openedx import EventsCeleryConsumer, wire  # noqa: E402
from events_celery.models import DeadLetter  # noqa: E402
from events_celery.wire import HEADER_USER_ID  # noqa: E402
from tests.contrib.openedx.enrollments import (  # noqa: E402
    COURSE_ENROLLMENT_CREATED,
    KEY_FIELD,
    TOPIC,
    enrollment,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

EVENT_TYPE = COURSE_ENROLLMENT_CREATED.event_type
WAIT = 30.0


@pytest.fixture
def owner(broker_user: BrokerUser) -> Iterator[BrokerUser]:
    """The broker user that owns the enrollment event type, on ``broker_user``'s vhost."""
    user = BrokerUser(f"{broker_user.name}-owner", uuid.uuid4().hex, broker_user.vhost)
    ctl("add_user", user.name, user.password)
    try:
        user.set_permissions()
        yield user
    finally:
        ctl("delete_user", user.name)


@pytest.fixture
def group(broker_user: BrokerUser, owner: BrokerUser, settings: Any) -> str:
    """This process is the group's ``consume_events``, connected as ``broker_user``."""
    name = f"catalog-{uuid.uuid4().hex[:8]}"
    settings.EVENT_BUS_SERVICE_NAME = name
    settings.EVENT_BUS_BROKER_URL = broker_user.url
    settings.CELERY_BROKER_URL = broker_user.url
    settings.EVENT_BUS_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:8]}."
    settings.EVENT_BUS_TRUSTED_PUBLISHERS = {EVENT_TYPE: owner.name}
    settings.EVENT_BUS_RETRY_POLICY = {
        "max_attempts": 3,
        "backoff": 0.1,
        "backoff_max": 0.2,
        "jitter": False,
    }
    return name


@pytest.fixture
def received() -> Iterator[list[str]]:
    """The usernames of the enrollments the receiver saw; it fails the first run of ``retry``."""
    calls: list[str] = []

    def receiver(enrollment: Any, **kwargs: Any) -> None:
        username = enrollment.user.pii.username
        calls.append(username)
        if username == "retry" and calls.count("retry") == 1:
            raise RuntimeError("the first attempt fails")

    COURSE_ENROLLMENT_CREATED.connect(receiver, dispatch_uid="test_openedx_authenticity")
    try:
        yield calls
    finally:
        COURSE_ENROLLMENT_CREATED.disconnect(dispatch_uid="test_openedx_authenticity")


def publish(user: BrokerUser, prefix: str, username: str, **headers: str) -> uuid.UUID:
    """Publish an enrollment of ``username`` as broker ``user`` (its ``user_id``); its id."""
    metadata = EventsMetadata(
        event_type=EVENT_TYPE,
        id=uuid.uuid1(),
        source="openedx/lms/web",
        time=datetime(2026, 11, 2, 10, 30, tzinfo=UTC),
    )
    message = wire.encode(
        COURSE_ENROLLMENT_CREATED,
        {"enrollment": enrollment(username)},
        metadata,
        event_key_field=KEY_FIELD,
    )
    connection = amqp.Connection(
        f"{RABBITMQ_HOST}:{RABBITMQ_PORT}",
        userid=user.name,
        password=user.password,
        virtual_host=user.vhost,
        connect_timeout=5,
        confirm_publish=True,
    )
    connection.connect()
    try:
        connection.channel().basic_publish(
            amqp.Message(
                message.body,
                application_headers={**message.headers, **headers},
                user_id=user.name,  # the broker refuses any other
                **{k: v for k, v in message.properties.items() if k != "content_encoding"},
            ),
            exchange=f"{prefix}{TOPIC}",
            routing_key=EVENT_TYPE,
        )
    finally:
        connection.collect()
    return metadata.id


def consume_until(consumer: EventsCeleryConsumer, done: Callable[[], object]) -> None:
    """Run the consumer's loop in this process until ``done()`` is truthy."""
    deadline = time.monotonic() + WAIT
    for _ in consumer.consume(timeout=1):
        if done():
            return
        if time.monotonic() > deadline:
            pytest.fail("the consumer did not get there in time")


def declared(consumer: EventsCeleryConsumer) -> None:
    """Declare the group's queues, as ``consume_events`` does when it starts."""
    consumer.connection.ensure_connection(max_retries=3)
    channel = consumer.connection.channel()
    consumer.get_consumers(lambda **kwargs: None, channel)
    channel.close()


def assert_refused(group: str, event_id: uuid.UUID, publisher: str, owner: str) -> None:
    [row] = DeadLetter.objects.filter(service=group)
    assert row.event_id == event_id
    assert row.reason == "poison"
    assert (
        f"was published by broker user {publisher!r}, but "
        f"EVENT_BUS_TRUSTED_PUBLISHERS[{EVENT_TYPE!r}] allows only {owner!r}"
    ) in row.error


def test_a_group_runs_the_owners_events_and_dead_letters_another_users(
    broker_user: BrokerUser, owner: BrokerUser, group: str, received: list[str], settings: Any
) -> None:
    consumer = EventsCeleryConsumer(topic=TOPIC, group_id=group)
    declared(consumer)
    prefix = settings.EVENT_BUS_TOPIC_PREFIX
    forged = publish(broker_user, prefix, "forged", **{HEADER_USER_ID: owner.name})
    publish(owner, prefix, "retry")

    consume_until(consumer, lambda: received.count("retry") == 2)
    consumer.connection.release()

    assert received == ["retry", "retry"]  # the retry came back as the group's, and ran
    assert_refused(group, forged, broker_user.name, owner.name)


def test_an_ordered_group_runs_the_owners_events_and_dead_letters_another_users(
    broker_user: BrokerUser, owner: BrokerUser, group: str, received: list[str], settings: Any
) -> None:
    """The router republishes each event to its partition as the group's own user."""
    settings.EVENT_BUS_CONSUMER_CONFIG = {TOPIC: {"order_by_key": True, "partitions": 2}}
    consumer = EventsCeleryConsumer(topic=TOPIC, group_id=group)
    assert consumer.ordered is not None
    declared(consumer)
    prefix = settings.EVENT_BUS_TOPIC_PREFIX
    forged = publish(broker_user, prefix, "forged", **{HEADER_USER_ID: owner.name})
    publish(owner, prefix, "owned")

    consume_until(
        consumer, lambda: "owned" in received and DeadLetter.objects.filter(service=group).exists()
    )
    consumer.connection.release()

    assert received == ["owned"]
    assert_refused(group, forged, broker_user.name, owner.name)
