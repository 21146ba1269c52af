"""Publishes the broker refuses for permissions, on the real RabbitMQ with a user of the test.

Such a row is set aside at once with the broker's reason, and the others of its batch are
published on a new channel; ``direct`` mode raises :class:`~events_celery.PublishError`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from kombu import Connection

from events_celery.bus.broker import declaring, topology
from events_celery.bus.publish import background, outbox
from events_celery.bus.publish.direct import _publishers
from events_celery.conf import bus_settings
from events_celery.exceptions import PublishError
from events_celery.models import OutboxMessage
from tests.bus.conftest import received
from tests.conftest import BrokerUser, ctl
from tests.testapp.events import FLAKY, PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

PREFIX = "perm."
EXCHANGE = f"{PREFIX}pings"
PROBE = f"{PREFIX}probe"


@pytest.fixture
def pings(broker_user: BrokerUser, settings: Any) -> Iterator[BrokerUser]:
    """PING and FLAKY go to topic ``pings`` in the user's vhost; a probe queue sees both."""
    settings.EVENT_BUS_BROKER_URL = broker_user.url
    settings.EVENT_BUS_TOPIC_PREFIX = PREFIX
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_attempts": 2, "interval_step": 0.01}
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        PING.event_type: {"pings": {"enabled": True}},
        FLAKY.event_type: {"pings": {"enabled": True}},
    }
    with Connection(broker_user.url) as connection:
        declaring.declare(connection, topology.producer_topology(bus_settings(), ["pings"]))
        channel: Any = connection.default_channel
        channel.queue_declare(PROBE, auto_delete=False)
        channel.queue_bind(PROBE, EXCHANGE, routing_key="#")
    yield broker_user
    direct_publisher = _publishers.peek()
    if direct_publisher is not None:
        direct_publisher.close()


def only_ping_allowed(user: BrokerUser) -> None:
    """A topic permission lets the user publish PING to the exchange, and nothing else."""
    user.set_topic_permissions(EXCHANGE, write="^" + re.escape(PING.event_type) + "$")


def write_unleased(*sends: tuple[Any, int]) -> list[str]:
    """Write events in one transaction, leave their rows to relays; their ids, in order."""
    with transaction.atomic():
        ids = [str(signal.send_event(n=n).metadata.id) for signal, n in sends]
    OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))
    return ids


def relay(*args: str) -> str:
    out = io.StringIO()
    call_command("relay_events", *args, stdout=out, stderr=out)
    return out.getvalue()


def first_seen(user: BrokerUser) -> list[str]:
    """Event ids the probe queue received, each at its first arrival, in order."""
    return list(dict.fromkeys(str(m["ce_id"]) for m in received(user.url, PROBE)))


@pytest.fixture
def no_background(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)


def test_a_row_whose_routing_key_a_topic_permission_forbids_is_set_aside_and_the_rest_published(
    pings: BrokerUser, no_background: None
) -> None:
    only_ping_allowed(pings)
    sends = [(PING, n) for n in range(40)]
    sends[10] = (FLAKY, 10)
    sends[25] = (FLAKY, 25)
    ids = write_unleased(*sends)
    forbidden = {ids[10], ids[25]}

    output = relay()

    assert first_seen(pings) == [i for i in ids if i not in forbidden]
    left = OutboxMessage.objects.order_by("id")
    assert {str(row.event_id) for row in left} == forbidden
    for row in left:
        assert row.attempts == outbox.MAX_REFUSALS
        assert row.last_error.startswith(
            f"{outbox.FORBIDDEN}403 ACCESS_REFUSED - access to topic '{FLAKY.event_type}' in "
            f"exchange '{EXCHANGE}' in vhost '{pings.vhost}' refused for user '{pings.name}': "
            f"grant broker user '{pings.name}' write permission on exchange '{EXCHANGE}' for "
            f"routing key '{FLAKY.event_type}'"
        )
    assert "relayed 38 event message(s); 2 wait in the outbox" in output
    assert "2 row(s) set aside: the broker refused them for permissions" in output

    # Not tried again by the next pass: no retry loop.
    assert "relayed 0 event message(s)" in relay()
    assert first_seen(pings) == []
    assert OutboxMessage.objects.count() == 2


def test_rows_refused_after_write_permission_is_revoked_wait_until_it_is_granted_again(
    pings: BrokerUser, no_background: None
) -> None:
    before = write_unleased(*[(PING, n) for n in range(3)])
    relay()
    assert first_seen(pings) == before
    # Write permission on the exchange revoked (kept on its parking exchange and queues).
    pings.set_permissions(write="^(?!" + re.escape(EXCHANGE) + "$).*")
    refused = write_unleased(*[(PING, n) for n in range(3, 8)])

    output = relay()

    assert first_seen(pings) == []
    rows = list(OutboxMessage.objects.order_by("id"))
    assert [str(row.event_id) for row in rows] == refused
    reason = (
        f"403 ACCESS_REFUSED - access to exchange '{EXCHANGE}' in vhost '{pings.vhost}' refused "
        f"for user '{pings.name}': grant write permission on exchange '{EXCHANGE}' to broker "
        f"user '{pings.name}'"
    )
    assert {row.last_error for row in rows} == {outbox.FORBIDDEN + reason}
    assert {row.attempts for row in rows} == {outbox.MAX_REFUSALS}
    assert f"5 row(s) set aside: the broker refused them for permissions: {reason} (5 row(s))" in (
        output
    )
    relay()
    assert OutboxMessage.objects.filter(attempts=outbox.MAX_REFUSALS).count() == 5

    pings.set_permissions()
    output = relay("--retry-refused")

    assert first_seen(pings) == refused
    assert "relayed 5 event message(s); 0 wait in the outbox" in output
    assert not OutboxMessage.objects.exists()


def test_the_background_publisher_sets_aside_what_the_broker_refuses_and_publishes_the_rest(
    pings: BrokerUser,
) -> None:
    only_ping_allowed(pings)
    with transaction.atomic():
        ids = [str(PING.send_event(n=0).metadata.id), str(FLAKY.send_event(n=1).metadata.id)]
        ids.append(str(PING.send_event(n=2).metadata.id))

    assert background.background_publisher().flush(30)

    assert first_seen(pings) == [ids[0], ids[2]]
    row = OutboxMessage.objects.get()
    assert str(row.event_id) == ids[1]
    assert row.attempts == outbox.MAX_REFUSALS
    assert "403 ACCESS_REFUSED - access to topic" in row.last_error


def test_direct_mode_raises_naming_the_event_and_the_permission_to_grant(
    pings: BrokerUser, settings: Any
) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "direct"
    only_ping_allowed(pings)

    with pytest.raises(PublishError) as raised:
        FLAKY.send_event(n=1)
    published = PING.send_event(n=2)  # the same connection goes on with what is allowed

    error = raised.value
    assert error.may_be_delivered is False
    assert len(error.event_ids) == 1
    assert str(error) == (
        f"the broker refused event(s) {error.event_ids[0]} to topic(s) 'pings' for "
        f"permissions: 403 ACCESS_REFUSED - access to topic '{FLAKY.event_type}' in exchange "
        f"'{EXCHANGE}' in vhost '{pings.vhost}' refused for user '{pings.name}': grant broker "
        f"user '{pings.name}' write permission on exchange '{EXCHANGE}' for routing key "
        f"'{FLAKY.event_type}' (its topic permissions). They will not be delivered; publishing "
        "them again fails the same way until the broker user's permissions change."
    )
    assert first_seen(pings) == [str(published.metadata.id)]


def test_rows_relayed_by_another_broker_user_are_refused_for_their_user_id_and_set_aside(
    pings: BrokerUser, no_background: None, settings: Any
) -> None:
    """A row keeps its writer's broker user: a relay connected as another is refused (406)."""
    ids = write_unleased(*[(PING, n) for n in range(3)])
    assert set(OutboxMessage.objects.values_list("user_id", flat=True)) == {pings.name}
    relay_user = f"{pings.name}-relay"
    ctl("add_user", relay_user, pings.password)
    try:
        ctl("set_permissions", "-p", pings.vhost, relay_user, ".*", ".*", ".*")
        settings.EVENT_BUS_BROKER_URL = pings.url.replace(pings.name, relay_user, 1)

        output = relay()
    finally:
        ctl("delete_user", relay_user)

    assert first_seen(pings) == []
    rows = list(OutboxMessage.objects.order_by("id"))
    assert [str(row.event_id) for row in rows] == ids
    assert {row.last_error for row in rows} == {
        f"{outbox.FORBIDDEN}406 PRECONDITION_FAILED - user_id property set to '{pings.name}' but "
        f"authenticated user was '{relay_user}': a message's user_id must be the connected "
        f"broker user: publish as broker user {pings.name!r}, or set user_id to {relay_user!r}"
    }
    assert "3 row(s) set aside: the broker refused them for permissions" in output

    # Relayed as the user that wrote them, they go out, each with that user_id.
    settings.EVENT_BUS_BROKER_URL = pings.url
    relay("--retry-refused")
    with Connection(pings.url) as connection:
        channel: Any = connection.default_channel
        users = []
        while (message := channel.basic_get(PROBE, no_ack=True)) is not None:
            users.append((message.headers["ce_id"], message.properties.get("user_id")))
    assert users == [(i, pings.name) for i in ids]
