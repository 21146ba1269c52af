"""Routes of an event: the partition key read from its payload (event_key_field)."""

import pytest

from events_celery.bus.publish.routes import key_getter
from tests.testapp.events import ORDER_PLACED, PING, Mode
from tests.wire.messages import (
    make_order,
)

# --- key_getter -----------------------------------------------------------------------------


def test_key_of_a_nested_field_is_its_text():
    order = make_order()

    get = key_getter(ORDER_PLACED, "order.customer.id")

    assert get({"order": order}) == str(order.customer.id)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("order.total", "12.50"), ("order.note", "gift wrap"), ("order.id", str(make_order().id))],
)
def test_key_of_a_field_is_str_of_its_value(path, expected):
    assert key_getter(ORDER_PLACED, path)({"order": make_order()}) == expected


def test_key_of_a_top_level_argument():
    assert key_getter(PING, "n")({"n": 42}) == "42"


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("customer.id", "'customer'"),
        ("order.nope", "'nope'"),
        ("order.customer.phone", "'phone'"),
        ("order.total.cents", "'cents'"),
    ],
)
def test_key_path_that_is_not_in_the_payload_is_an_attribute_error(path, named):
    with pytest.raises(AttributeError) as excinfo:
        key_getter(ORDER_PLACED, path)

    assert ORDER_PLACED.event_type in str(excinfo.value)
    assert named in str(excinfo.value)


def test_an_enum_partition_key_is_the_member_name_as_on_the_wire():
    get = key_getter(ORDER_PLACED, "order.mode")

    assert get({"order": make_order(mode=Mode.VERIFIED)}) == "VERIFIED"
