"""Reading a permission refusal from the broker's channel error (no broker needed)."""

from __future__ import annotations

import pytest
from amqp.exceptions import AccessRefused, NotFound, PreconditionFailed

from events_celery.bus.broker.refusals import Refusal, publish_refusal

PUBLISH = (60, 40)


def test_a_topic_permission_refusal_names_the_exchange_and_routing_key() -> None:
    exc = AccessRefused(
        "ACCESS_REFUSED - access to topic 'a.b.v1' in exchange 'shop.orders' in vhost '/' "
        "refused for user 'billing'",
        PUBLISH,
    )

    refusal = publish_refusal(exc)

    assert refusal == Refusal(403, exc.reply_text, "shop.orders", "a.b.v1", None, "billing")
    assert refusal.concerns("shop.orders", "a.b.v1", {})
    assert not refusal.concerns("shop.orders", "a.c.v1", {})
    assert not refusal.concerns("shop.other", "a.b.v1", {})
    assert refusal.reason.endswith(
        ": grant broker user 'billing' write permission on exchange 'shop.orders' for routing "
        "key 'a.b.v1' (its topic permissions)"
    )


def test_an_exchange_permission_refusal_concerns_every_routing_key_of_the_exchange() -> None:
    exc = AccessRefused(
        "ACCESS_REFUSED - access to exchange 'shop.orders' in vhost 'v' refused for user 'u'",
        PUBLISH,
    )

    refusal = publish_refusal(exc)

    assert refusal is not None
    assert refusal.concerns("shop.orders", "anything", {})
    assert not refusal.concerns("shop.other", "anything", {})
    assert refusal.reason == (
        "403 ACCESS_REFUSED - access to exchange 'shop.orders' in vhost 'v' refused for user "
        "'u': grant write permission on exchange 'shop.orders' to broker user 'u'"
    )


def test_a_user_id_refusal_concerns_messages_with_that_user_id() -> None:
    exc = PreconditionFailed(
        "PRECONDITION_FAILED - user_id property set to 'x' but authenticated user was 'u'",
        PUBLISH,
    )

    refusal = publish_refusal(exc)

    assert refusal is not None
    assert refusal.concerns("any", "key", {"user_id": "x"})
    assert not refusal.concerns("any", "key", {})


@pytest.mark.parametrize(
    "exc",
    [
        # a declaration, not a publish
        AccessRefused("ACCESS_REFUSED - access to exchange 'e' in vhost 'v' refused", (40, 10)),
        NotFound("NOT_FOUND - no exchange 'e' in vhost 'v'", PUBLISH),
        PreconditionFailed("PRECONDITION_FAILED - message size 9 is larger than max 1", PUBLISH),
        AccessRefused("ACCESS_REFUSED - something else", PUBLISH),
        ConnectionResetError("reset"),
    ],
)
def test_other_errors_are_no_permission_refusal_of_a_publish(exc: BaseException) -> None:
    assert publish_refusal(exc) is None
