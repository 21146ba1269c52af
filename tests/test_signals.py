"""EventSignal: defining events, validating payloads and running receivers."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import attrs
import pytest

from events_celery import EventMetadata, EventSignal, PayloadValidationError
from events_celery.exceptions import (
    ConfigurationError,
    DuplicateEventTypeError,
    EventDefinitionError,
    InvalidEventTypeError,
    UnsupportedTypeError,
)
from events_celery.receivers import dotted_name
from events_celery.signals import RESERVED_KWARGS
from events_celery.testing import isolated_registry
from tests.testapp.events import ORDER_PLACED, PING, CustomerData, OrderData

PING_TYPE = "org.example.test.signals.ping.v1"
MIXED_TYPE = "org.example.test.signals.mixed.v1"


@attrs.frozen
class ParcelData:
    id: int
    tags: list[str]


@pytest.fixture
def ping():
    """A one-field event, forgotten (with its receivers) when the test ends."""
    with isolated_registry():
        yield EventSignal(PING_TYPE, data={"n": int})


@pytest.fixture
def mixed():
    """An event whose fields cover several plain types."""
    with isolated_registry():
        yield EventSignal(
            MIXED_TYPE,
            data={"n": int, "text": str, "flag": bool, "items": list[int], "ratio": float},
        )


def make_order(**overrides):
    values = {
        "id": uuid.uuid4(),
        "customer": CustomerData(id=uuid.uuid4(), email="ada@example.org"),
        "total": Decimal("12.50"),
        "placed_at": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    }
    values.update(overrides)
    return OrderData(**values)


class Recorder:
    """A receiver that remembers every call."""

    def __init__(self, result=None):
        self.calls = []
        self.result = result

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.result


# --- definition -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_type",
    [
        "Org.Example.Shop.Order.Placed.v1",  # uppercase
        "org.example.shop.order.placed",  # no version
        "org.example.shop.order.placed.v0",  # versions start at 1
        "orderplaced",  # a single segment
        "org.example.shop.order placed.v1",  # a space
        "",
    ],
)
def test_malformed_event_type_is_rejected_with_the_fix(event_type):
    with isolated_registry(), pytest.raises(InvalidEventTypeError) as excinfo:
        EventSignal(event_type, data={"n": int})

    message = str(excinfo.value)
    assert repr(event_type) in message
    assert "lowercase reverse-DNS" in message
    assert "e.g. 'org.example.shop.order.placed.v1'" in message


def test_malformed_event_type_is_not_registered():
    with isolated_registry() as registry:
        with pytest.raises(InvalidEventTypeError):
            EventSignal("Bad.Type", data={"n": int})
        assert "Bad.Type" not in registry


def test_well_formed_event_type_is_accepted():
    with isolated_registry() as registry:
        signal = EventSignal("org.example.shop_2.order.placed.v12", data={"n": int})

        assert registry.get("org.example.shop_2.order.placed.v12") is signal
        assert signal.event_type == "org.example.shop_2.order.placed.v12"
        assert repr(signal) == "<EventSignal org.example.shop_2.order.placed.v12>"


def test_unsupported_payload_type_is_rejected_naming_the_field():
    with isolated_registry(), pytest.raises(UnsupportedTypeError) as excinfo:
        EventSignal(PING_TYPE, data={"n": int, "blob": object})

    message = str(excinfo.value)
    assert PING_TYPE in message
    assert "field 'blob'" in message
    assert "object" in message


def test_unsupported_payload_type_is_also_a_type_error():
    with isolated_registry(), pytest.raises(TypeError):
        EventSignal(PING_TYPE, data={"ids": set[int]})


def test_duplicate_event_type_names_where_the_first_is_defined():
    with isolated_registry():
        first = EventSignal(PING_TYPE, data={"n": int})
        with pytest.raises(DuplicateEventTypeError) as excinfo:
            EventSignal(PING_TYPE, data={"n": int})

        message = str(excinfo.value)
        assert PING_TYPE in message
        assert f"already defined in {__name__}" in message
        assert first.defined_in == __name__


def test_redefining_an_installed_app_event_names_its_events_module():
    with isolated_registry(), pytest.raises(DuplicateEventTypeError) as excinfo:
        EventSignal(ORDER_PLACED.event_type, data={"order": OrderData})

    assert "already defined in tests.testapp.events" in str(excinfo.value)


@pytest.mark.parametrize("name", sorted(RESERVED_KWARGS))
def test_payload_cannot_use_a_name_every_receiver_already_gets(name):
    with isolated_registry(), pytest.raises(EventDefinitionError) as excinfo:
        EventSignal(PING_TYPE, data={name: int})

    assert name in str(excinfo.value)
    assert "rename" in str(excinfo.value)


def test_empty_payload_definition_is_rejected():
    with isolated_registry(), pytest.raises(EventDefinitionError, match="data must map"):
        EventSignal(PING_TYPE, data={})


@pytest.mark.parametrize("minor_version", [-1, 1.5, True, "1"])
def test_invalid_minor_version_is_rejected(minor_version):
    with isolated_registry(), pytest.raises(EventDefinitionError, match="minor_version"):
        EventSignal(PING_TYPE, data={"n": int}, minor_version=minor_version)


# --- send_event: receivers ------------------------------------------------------------------


def test_receivers_get_signal_sender_metadata_origin_and_payload(ping, settings):
    settings.EVENT_BUS_SERVICE_NAME = "orders"
    receiver = Recorder(result="done")
    ping.connect(receiver)

    responses = ping.send_event(n=5)

    assert responses == [(receiver, "done")]
    [call] = receiver.calls
    assert call["signal"] is ping
    assert call["sender"] is None
    assert call["from_event_bus"] is False
    assert call["n"] == 5
    metadata = call["metadata"]
    assert isinstance(metadata, EventMetadata)
    assert metadata.event_type == PING_TYPE
    assert metadata.source == "orders"
    assert set(call) == {"signal", "sender", "metadata", "from_event_bus", "n"}


def test_each_send_gets_its_own_metadata_with_the_minor_version():
    with isolated_registry():
        signal = EventSignal(PING_TYPE, data={"n": int}, minor_version=3)
        receiver = Recorder()
        signal.connect(receiver)

        signal.send_event(n=1)
        signal.send_event(n=2)

    first, second = (call["metadata"] for call in receiver.calls)
    assert first.id != second.id
    assert first.minor_version == second.minor_version == 3


def test_receivers_run_in_connection_order(ping):
    order = []

    def first(**kwargs):
        order.append("first")

    def second(**kwargs):
        order.append("second")

    ping.connect(first)
    ping.connect(second)

    ping.send_event(n=1)

    assert order == ["first", "second"]


def test_nested_attrs_payload_reaches_receivers_unchanged():
    receiver = Recorder()
    ORDER_PLACED.connect(receiver)
    order = make_order(note="gift wrap")
    try:
        ORDER_PLACED.send_event(order=order)
    finally:
        ORDER_PLACED.disconnect(receiver)

    [call] = receiver.calls
    assert call["order"] is order


def test_send_without_receivers_returns_no_responses(ping):
    assert ping.send_event(n=1) == []


# --- send_event: validation -----------------------------------------------------------------


def test_missing_field_is_named(ping):
    with pytest.raises(PayloadValidationError) as excinfo:
        ping.send_event()

    assert excinfo.value.event_type == PING_TYPE
    assert excinfo.value.field == "n"
    assert f"{PING_TYPE}: field 'n' is missing" in str(excinfo.value)


def test_extra_field_is_named(ping):
    with pytest.raises(PayloadValidationError) as excinfo:
        ping.send_event(n=1, colour="blue")

    assert excinfo.value.field == "colour"
    assert PING_TYPE in str(excinfo.value)
    assert "'colour'" in str(excinfo.value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("1", "got str"), (1.0, "got float"), (None, "got None"), (True, "got bool")],
)
def test_wrong_type_is_named_with_expected_and_actual_types(ping, value, shown):
    with pytest.raises(PayloadValidationError) as excinfo:
        ping.send_event(n=value)

    message = str(excinfo.value)
    assert excinfo.value.field == "n"
    assert f"{PING_TYPE}: field 'n' expects int, {shown}" in message


def test_payload_validation_error_is_a_value_error(ping):
    with pytest.raises(ValueError, match="field 'n'"):
        ping.send_event(n="nope")


def test_falsy_values_are_not_missing(mixed):
    receiver = Recorder(result="ok")
    mixed.connect(receiver)

    responses = mixed.send_event(n=0, text="", flag=False, items=[], ratio=0.0)

    assert responses == [(receiver, "ok")]
    [call] = receiver.calls
    assert (call["n"], call["text"], call["flag"], call["items"], call["ratio"]) == (
        0,
        "",
        False,
        [],
        0.0,
    )


def test_nested_wrong_type_fails_at_send_event_naming_the_path():
    receiver = Recorder()
    ORDER_PLACED.connect(receiver)
    order = make_order(customer=CustomerData(id="not-a-uuid", email="ada@example.org"))
    try:
        with pytest.raises(PayloadValidationError) as excinfo:
            ORDER_PLACED.send_event(order=order)
    finally:
        ORDER_PLACED.disconnect(receiver)

    assert excinfo.value.field == "order.customer.id"
    assert "expects UUID, got str" in str(excinfo.value)
    assert receiver.calls == []


def test_wrong_list_item_type_is_named():
    with isolated_registry():
        signal = EventSignal(PING_TYPE, data={"parcel": ParcelData})

        with pytest.raises(PayloadValidationError) as excinfo:
            signal.send_event(parcel=ParcelData(id=1, tags=["ok", 2]))

    assert excinfo.value.field.startswith("parcel.tags")


def test_invalid_payload_runs_no_receiver(ping):
    receiver = Recorder()
    ping.connect(receiver)

    with pytest.raises(PayloadValidationError):
        ping.send_event(n="x")

    assert receiver.calls == []


# --- send_event: receiver errors ------------------------------------------------------------


@pytest.mark.parametrize("debug", [True, False])
def test_receiver_error_is_returned_and_logged_with_traceback(ping, settings, caplog, debug):
    settings.DEBUG = debug
    error = RuntimeError("receiver broke")

    def broken(**kwargs):
        raise error

    after = Recorder(result="still ran")
    ping.connect(broken)
    ping.connect(after)

    with caplog.at_level(logging.ERROR, logger="events_celery"):
        responses = ping.send_event(n=424242)

    assert responses == [(broken, error), (after, "still ran")]
    [record] = [r for r in caplog.records if r.name.startswith("events_celery")]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[1] is error
    message = record.getMessage()
    assert PING_TYPE in message
    assert dotted_name(broken) in message
    assert "RuntimeError" in message
    assert "424242" not in message  # payload values stay out of logs


@pytest.mark.parametrize("debug", [True, False])
def test_strict_receivers_propagate_the_first_error(ping, settings, debug):
    settings.DEBUG = debug
    settings.EVENT_BUS_STRICT_RECEIVERS = True

    def broken(**kwargs):
        raise RuntimeError("receiver broke")

    after = Recorder()
    ping.connect(broken)
    ping.connect(after)

    with pytest.raises(RuntimeError, match="receiver broke"):
        ping.send_event(n=1)

    assert after.calls == []


@pytest.mark.parametrize("debug", [True, False])
def test_validation_does_not_depend_on_debug(ping, settings, debug):
    settings.DEBUG = debug

    with pytest.raises(PayloadValidationError):
        ping.send_event(n="1")
    with pytest.raises(PayloadValidationError):
        ping.send_event()


@pytest.mark.parametrize("debug", [True, False])
def test_receiver_without_kwargs_is_rejected_at_connect(ping, settings, debug):
    settings.DEBUG = debug

    def rigid(signal, sender, metadata, from_event_bus, n):
        return n

    with pytest.raises(EventDefinitionError) as excinfo:
        ping.connect(rigid)

    assert "**kwargs" in str(excinfo.value)
    assert dotted_name(rigid) in str(excinfo.value)
    assert ping.send_event(n=1) == []


def test_non_callable_receiver_is_rejected(ping):
    with pytest.raises(EventDefinitionError, match="not callable"):
        ping.connect("not a function")


def test_async_receiver_is_awaited(ping):
    seen = []

    async def on_ping(n, **kwargs):
        seen.append(n)
        return n * 2

    ping.connect(on_ping)

    responses = ping.send_event(n=21)

    assert seen == [21]
    assert [response for _, response in responses] == [42]


def test_async_receiver_response_names_the_receiver(ping):
    async def on_ping(**kwargs):
        return "ok"

    ping.connect(on_ping)

    assert ping.send_event(n=1) == [(on_ping, "ok")]


def test_async_receivers_keep_their_own_names_for_dispatch(ping):
    async def first(**kwargs):
        return None

    async def second(**kwargs):
        return None

    ping.connect(first)
    ping.connect(second)

    names = [dotted_name(func) for func in ping.receivers_for_dispatch()]

    assert names == [dotted_name(first), dotted_name(second)]


# --- enable / disable -----------------------------------------------------------------------


def test_disabled_event_runs_no_receiver(ping):
    receiver = Recorder()
    ping.connect(receiver)
    ping.disable()

    assert ping.send_event(n=1) == []
    assert receiver.calls == []


def test_disabled_event_still_validates(ping):
    ping.disable()

    with pytest.raises(PayloadValidationError):
        ping.send_event(n="1")


def test_enabled_again_event_runs_receivers(ping):
    receiver = Recorder()
    ping.connect(receiver)
    ping.disable()
    ping.enable()

    ping.send_event(n=1)

    assert len(receiver.calls) == 1


def test_disabled_event_needs_no_service_name(ping, settings):
    settings.EVENT_BUS_SERVICE_NAME = None
    ping.disable()

    assert ping.send_event(n=1) == []


# --- send_event_with_metadata ---------------------------------------------------------------


def test_send_with_metadata_marks_from_event_bus_and_keeps_metadata(ping):
    receiver = Recorder(result="seen")
    ping.connect(receiver)
    metadata = EventMetadata.create(PING_TYPE, minor_version=2, source="billing")

    responses = ping.send_event_with_metadata(metadata, n=7)

    assert responses == [(receiver, "seen")]
    [call] = receiver.calls
    assert call["from_event_bus"] is True
    assert call["metadata"] is metadata
    assert call["n"] == 7


def test_send_with_metadata_of_another_event_type_is_rejected(ping):
    receiver = Recorder()
    ping.connect(receiver)
    metadata = EventMetadata.create(ORDER_PLACED.event_type, source="billing")

    with pytest.raises(PayloadValidationError) as excinfo:
        ping.send_event_with_metadata(metadata, n=7)

    assert PING_TYPE in str(excinfo.value)
    assert "metadata" in str(excinfo.value)
    assert receiver.calls == []


def test_send_with_metadata_rejects_a_non_metadata_object(ping):
    with pytest.raises(PayloadValidationError, match="EventMetadata"):
        ping.send_event_with_metadata({"event_type": PING_TYPE}, n=7)


def test_send_with_metadata_validates_the_payload(ping):
    metadata = EventMetadata.create(PING_TYPE, source="billing")

    with pytest.raises(PayloadValidationError, match="field 'n'"):
        ping.send_event_with_metadata(metadata, n="7")


def test_send_with_metadata_on_a_disabled_event_does_nothing(ping):
    receiver = Recorder()
    ping.connect(receiver)
    ping.disable()

    assert ping.send_event_with_metadata(EventMetadata.create(PING_TYPE, source="x"), n=1) == []
    assert receiver.calls == []


# --- configuration --------------------------------------------------------------------------


def test_missing_service_name_says_how_to_set_it(ping, settings):
    settings.EVENT_BUS_SERVICE_NAME = None
    receiver = Recorder()
    ping.connect(receiver)

    with pytest.raises(ConfigurationError) as excinfo:
        ping.send_event(n=1)

    assert "EVENT_BUS_SERVICE_NAME" in str(excinfo.value)
    assert "EVENT_BUS_SERVICE_NAME = 'orders'" in str(excinfo.value)
    assert receiver.calls == []


def test_invalid_service_name_is_a_configuration_error(ping, settings):
    settings.EVENT_BUS_SERVICE_NAME = "Orders Service"

    with pytest.raises(ConfigurationError, match="EVENT_BUS_SERVICE_NAME"):
        ping.send_event(n=1)


def _factory(label, calls):
    def handler(**kwargs):
        calls.append(label)

    return handler


def test_two_receivers_with_one_dotted_name_need_distinct_dispatch_uids():
    calls = []
    first, second = _factory("a", calls), _factory("b", calls)
    PING.connect(first)
    try:
        with pytest.raises(EventDefinitionError) as raised:
            PING.connect(second)
    finally:
        PING.disconnect(first)

    assert "_factory.<locals>.handler" in str(raised.value)
    assert "dispatch_uid" in str(raised.value)


def test_dispatch_uid_is_the_name_of_a_receiver():
    calls = []
    first, second = _factory("a", calls), _factory("b", calls)
    PING.connect(first, dispatch_uid="pings.a")
    PING.connect(second, dispatch_uid="pings.b")
    try:
        assert [PING.receiver_name(r) for r in PING.receivers_for_dispatch()][-2:] == [
            "pings.a",
            "pings.b",
        ]
        PING.send_event(n=1)
    finally:
        PING.disconnect(dispatch_uid="pings.a")
        PING.disconnect(dispatch_uid="pings.b")
    assert calls == ["a", "b"]


def test_a_disconnected_receiver_frees_its_name():
    calls = []
    first, second = _factory("a", calls), _factory("b", calls)
    PING.connect(first)
    PING.disconnect(first)
    PING.connect(second)
    try:
        PING.send_event(n=1)
    finally:
        PING.disconnect(second)
    assert calls == ["b"]


def test_connecting_the_same_receiver_twice_is_not_a_name_clash():
    calls = []
    handler = _factory("a", calls)
    PING.connect(handler)
    PING.connect(handler)
    try:
        PING.send_event(n=1)
    finally:
        PING.disconnect(handler)
    assert calls == ["a"]


# --- what send_event returns, and the sends it refuses ---------------------------------------


def test_send_event_returns_the_responses_and_the_metadata_of_the_event(ping):
    receiver = Recorder(result="seen")
    ping.connect(receiver)

    sent = ping.send_event(n=1)

    assert sent == [(receiver, "seen")]
    assert sent.metadata is receiver.calls[0]["metadata"]
    assert sent.metadata.event_type == PING_TYPE


def test_a_disabled_event_returns_no_metadata(ping):
    ping.disable()

    assert ping.send_event(n=1).metadata is None


@pytest.mark.parametrize("method", ["send", "send_robust"])
def test_plain_signal_sends_are_refused_naming_send_event(ping, method):
    receiver = Recorder()
    ping.connect(receiver)

    with pytest.raises(EventDefinitionError, match=r"send_event\(\*\*payload\)"):
        getattr(ping, method)(sender=None, n=1)
    assert receiver.calls == []


@pytest.mark.parametrize("method", ["asend", "asend_robust"])
def test_async_signal_sends_are_refused_naming_send_event(ping, method):
    with pytest.raises(EventDefinitionError, match=r"send_event\(\*\*payload\)"):
        asyncio.run(getattr(ping, method)(sender=None, n=1))


# --- emit_from_bus: how workers run receivers -------------------------------------------------


def test_emit_from_bus_runs_one_receiver_and_lets_its_error_through(ping):
    def failing(**kwargs):
        raise RuntimeError("receiver failed")

    other = Recorder()
    ping.connect(failing)
    ping.connect(other)
    metadata = EventMetadata.create(PING_TYPE, source="orders")

    with pytest.raises(RuntimeError, match="receiver failed"):
        ping.emit_from_bus(metadata, {"n": 1}, receiver=failing)
    assert other.calls == []


def test_emit_from_bus_runs_nothing_for_a_disabled_event(ping):
    receiver = Recorder()
    ping.connect(receiver)
    ping.disable()
    metadata = EventMetadata.create(PING_TYPE, source="orders")

    assert ping.emit_from_bus(metadata, {"n": 1}, receiver=receiver) == []
    assert ping.emit_from_bus(metadata, {"n": 1}) == []
    assert receiver.calls == []


def test_the_event_core_imports_nothing_of_the_bus():
    code = (
        "import sys, django; from django.conf import settings; settings.configure(); "
        "import events_celery.signals, events_celery.event_registry, events_celery.metadata; "
        "print(sorted(m for m in sys.modules if m.startswith('events_celery.bus')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_an_event_type_longer_than_a_routing_key_is_refused():
    long_type = "org." + "a" * 250 + ".v1"

    with isolated_registry(), pytest.raises(InvalidEventTypeError, match="at most 255"):
        EventSignal(long_type, data={"n": int})
