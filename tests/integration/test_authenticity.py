"""A service that requires authenticity, with a real ``celery worker`` on the real RabbitMQ.

The test process publishes as service ``tests``, connected as broker user ``guest``; the
worker maps event types to the broker users allowed to publish them, and requires an Ed25519
signature of a key it trusts for the source ``tests``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import amqp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from events_celery.bus.dead_letters.replay import replay_dead_letters
from events_celery.models import DeadLetter
from events_celery.wire import HEADER_SIGNATURE, HEADER_USER_ID, encode_event
from tests.integration.conftest import Bus, wait_for
from tests.testapp.events import DOOMED, FLAKY, PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

TOPIC = "shop"
#: The worker's subscription: FLAKY is published on the topic but not subscribed.
SUBSCRIBED = {TOPIC: {"event_types": [PING.event_type, DOOMED.event_type]}}


def pem(key: Ed25519PrivateKey) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private.decode(), public.decode()


def authenticity(public: str) -> dict[str, Any]:
    return {
        # PING belongs to another broker user; everything from source "tests" to guest.
        "EVENT_BUS_TRUSTED_PUBLISHERS": {PING.event_type: "shop-owner", "source:tests": "guest"},
        "EVENT_BUS_TRUSTED_KEYS": {
            "tests-1": {
                "public_key": public,
                "sources": ["tests"],
                "event_types": [PING.event_type, DOOMED.event_type, FLAKY.event_type],
            }
        },
        "EVENT_BUS_REQUIRE_SIGNATURES": True,
    }


def test_a_requiring_service_runs_only_signed_events_of_their_owner_and_replays_them(
    bus: Bus, settings: Any
) -> None:
    private, public = pem(Ed25519PrivateKey.generate())
    checks = authenticity(public)
    billing = bus.service_name("billing")
    bus.start(
        billing,
        SUBSCRIBED,
        env={
            "TEST_TRUSTED_PUBLISHERS": json.dumps(checks["EVENT_BUS_TRUSTED_PUBLISHERS"]),
            "TEST_TRUSTED_KEYS": json.dumps(checks["EVENT_BUS_TRUSTED_KEYS"]),
            "TEST_REQUIRE_SIGNATURES": "1",
        },
    )
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        s.event_type: {TOPIC: {"enabled": True}} for s in (PING, DOOMED, FLAKY)
    }

    unsigned = DOOMED.send_event(n=1).metadata
    settings.EVENT_BUS_SIGNING_KEYS = [{"id": "tests-1", "private_key": private}]
    not_its_owner = PING.send_event(n=2).metadata
    signed = DOOMED.send_event(n=3).metadata

    rows = wait_for(lambda: len(bus.dead_letters(billing)) >= 3 or None, "three dead letters")
    by_event = {row.event_id: row for row in bus.dead_letters(billing)}
    assert by_event[unsigned.id].reason == "poison"
    assert by_event[unsigned.id].error == (
        f"{DOOMED.event_type} from 'tests' is not signed (no 'ce_signature' header), and "
        "EVENT_BUS_REQUIRE_SIGNATURES is on"
    )
    assert by_event[not_its_owner.id].reason == "poison"
    assert by_event[not_its_owner.id].error == (
        f"{PING.event_type} from 'tests' was published by broker user 'guest', but "
        f"EVENT_BUS_TRUSTED_PUBLISHERS[{PING.event_type!r}] allows only 'shop-owner'"
    )
    assert bus.records(service=billing, receiver="on_ping") == []
    # The signed event from its owner ran, failed every attempt, and was dead-lettered with
    # its signature and the broker user it came from.
    failed = by_event[signed.id]
    assert failed.reason == "receiver-failed"
    assert failed.headers[HEADER_USER_ID] == "guest"
    assert failed.headers[HEADER_SIGNATURE].startswith("tests-1:")
    assert len(bus.records(service=billing, receiver="doomed", outcome="failed")) == 3
    assert rows

    # The fix is deployed; the replay, published by the service itself, still verifies.
    settings.EVENT_BUS_SERVICE_NAME = billing
    settings.EVENT_BUS_CONSUMER_CONFIG = SUBSCRIBED
    for name, value in checks.items():
        setattr(settings, name, value)
    Path(f"{bus.results}.fixed").write_text("")
    result = replay_dead_letters(DeadLetter.objects.filter(service=billing))

    assert result.started == (failed.pk,)
    assert "published by broker user 'guest'" in result.skipped[by_event[not_its_owner.id].pk]
    assert "is not signed" in result.skipped[by_event[unsigned.id].pk]
    wait_for(lambda: DeadLetter.objects.get(pk=failed.pk).status == "replayed", "the replay")
    ok = bus.records(service=billing, receiver="doomed", outcome="ok")
    assert [r["event_id"] for r in ok] == [str(signed.id)]


def test_a_copy_routed_by_a_cc_header_to_a_key_the_publisher_may_not_use_is_poison(
    bus: Bus, settings: Any
) -> None:
    """CC/BCC headers route a copy by keys the topic permissions never saw (RabbitMQ < 4.0.3)."""
    billing = bus.service_name("billing")
    bus.start(billing, SUBSCRIBED)
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {TOPIC: {"enabled": True}}}
    PING.send_event(n=0)  # declares the topic's exchange
    wait_for(lambda: bus.records(service=billing, receiver="on_ping"), "the first event")

    from tests.wire.messages import make_metadata

    event = encode_event(FLAKY, make_metadata(FLAKY.event_type), FLAKY.serializer.encode({"n": 1}))
    bus.channel.basic_publish(
        amqp.Message(
            event.body,
            application_headers={**event.headers, "CC": [DOOMED.event_type]},
            **{k: v for k, v in event.properties.items() if k != "content_encoding"},
        ),
        exchange=f"{bus.prefix}{TOPIC}",
        routing_key=FLAKY.event_type,
    )

    [row] = wait_for(lambda: bus.dead_letters(billing), "the copy's dead letter")
    assert row.reason == "poison"
    assert FLAKY.event_type in row.error
    assert row.event_type == FLAKY.event_type
    assert bus.records(service=billing, receiver="flaky") == []
    assert bus.records(service=billing, receiver="doomed") == []
