from decimal import Decimal

import pytest
from events_celery.testing import capture_events, events_disabled

from shop.events import ORDER_PLACED, LineData
from shop.services import place_order

# place_order opens a database transaction (a real shop saves the order in it).
pytestmark = pytest.mark.django_db

TEA = LineData(sku="TEA-1", quantity=2, unit_price=Decimal("4.50"))


def test_placing_an_order_sends_order_placed():
    with capture_events(ORDER_PLACED) as events:
        order = place_order("ada@example.org", [TEA])

    [event] = events
    assert event.payload == {"order": order}
    assert order.total == Decimal("9.00")
    assert event.metadata.source == "shop"
    assert event.from_event_bus is False


def test_the_customer_gets_a_confirmation(mailoutbox):
    place_order("ada@example.org", [TEA])

    assert mailoutbox[0].to == ["ada@example.org"]


def test_no_email_while_the_event_is_disabled(mailoutbox):
    with events_disabled(ORDER_PLACED):
        place_order("ada@example.org", [TEA])

    assert mailoutbox == []
