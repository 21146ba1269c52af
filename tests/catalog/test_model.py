from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from uuid import UUID

import attrs
import pytest

from events_celery import EventSignal
from events_celery.catalog import ServiceRouting, build_catalog, payload_fields
from events_celery.catalog.model import Consumer, Field, Producer
from events_celery.event_registry import EventRegistry
from events_celery.exceptions import ConfigurationError


class Tier(Enum):
    GOLD = "gold"
    SILVER = "silver"


@attrs.frozen
class LineData:
    sku: str
    price: Decimal = attrs.field(metadata={"precision": 10, "scale": 2})


@attrs.frozen
class BasketData:
    id: UUID
    lines: list[LineData]
    tier: Tier
    note: str | None
    tags: dict[str, int]
    at: datetime


@pytest.fixture
def events():
    local = EventRegistry()
    return (
        EventSignal(
            "org.example.cat.basket.filled.v1", data={"basket": BasketData}, event_registry=local
        ),
        EventSignal(
            "org.example.cat.basket.emptied.v1", data={"id": UUID, "n": int}, event_registry=local
        ),
        EventSignal("org.example.cat.audit.v1", data={"n": int}, event_registry=local),
    )


def service(name, producer=None, consumer=None, prefix="p."):
    return ServiceRouting.from_settings_module(
        {
            "EVENT_BUS_SERVICE_NAME": name,
            "EVENT_BUS_TOPIC_PREFIX": prefix,
            "EVENT_BUS_PRODUCER_CONFIG": producer or {},
            "EVENT_BUS_CONSUMER_CONFIG": consumer or {},
        }
    )


FILLED = "org.example.cat.basket.filled.v1"
EMPTIED = "org.example.cat.basket.emptied.v1"


def test_payload_fields_flatten_records_arrays_maps_and_optionals(events):
    assert payload_fields(events[0].serializer.schema) == (
        Field("basket.id", "string (uuid)"),
        Field("basket.lines[].sku", "string"),
        Field("basket.lines[].price", "bytes (decimal 10,2)"),
        Field("basket.tier", "enum Tier (GOLD, SILVER)"),
        Field("basket.note", "string | null"),
        Field("basket.tags{}", "long"),
        Field("basket.at", "long (timestamp-micros)"),
    )


def test_catalog_lists_producers_with_their_topic_exchange_and_key(events):
    shop = service("shop", {FILLED: {"baskets": {"event_key_field": "basket.id"}}})
    (audit, emptied, filled) = build_catalog([shop], events)
    assert filled.producers == (Producer("shop", "baskets", "p.baskets", "basket.id"),)
    assert emptied.producers == ()
    assert audit.producers == ()


def test_a_whole_topic_subscription_consumes_what_is_published_to_that_topic(events):
    shop = service(
        "shop",
        {
            FILLED: {"baskets": {"event_key_field": "basket.id"}},
            EMPTIED: {"baskets": {}, "other": {}},
        },
    )
    stats = service("stats", consumer={"baskets": {}})
    mail = service("mail", consumer={"other": {"event_types": [EMPTIED]}})
    by_type = {e.event_type: e for e in build_catalog([shop, stats, mail], events)}
    assert by_type[FILLED].consumers == (Consumer("stats", "baskets", "stats.baskets"),)
    assert by_type[EMPTIED].consumers == (
        Consumer("stats", "baskets", "stats.baskets"),
        Consumer("mail", "other", "mail.other"),
    )
    assert by_type["org.example.cat.audit.v1"].consumers == ()


def test_a_consuming_service_alone_takes_every_defined_event_of_its_whole_topic(events):
    stats = service("stats", consumer={"baskets": {}})
    assert all(e.consumers for e in build_catalog([stats], events))


def test_a_disabled_route_is_no_producer(events):
    shop = service("shop", {FILLED: {"baskets": {"enabled": False}}})
    assert all(not e.producers for e in build_catalog([shop], events))


def test_a_routed_event_without_definition_is_an_error_naming_it(events):
    shop = service("shop", {"org.example.cat.unknown.v1": {"baskets": {}}})
    with pytest.raises(ConfigurationError, match=r"org\.example\.cat\.unknown\.v1"):
        build_catalog([shop], events)


def test_invalid_routing_in_a_settings_module_is_an_error_naming_the_module():
    with pytest.raises(ConfigurationError, match=r"shop\.settings: .*not a valid topic name"):
        ServiceRouting.from_settings_module(
            {
                "__name__": "shop.settings",
                "EVENT_BUS_SERVICE_NAME": "shop",
                "EVENT_BUS_PRODUCER_CONFIG": {FILLED: {"bad topic!": {}}},
            }
        )


def test_a_settings_module_without_service_name_is_an_error():
    with pytest.raises(ConfigurationError, match="EVENT_BUS_SERVICE_NAME is not set"):
        ServiceRouting.from_settings_module({"EVENT_BUS_CONSUMER_CONFIG": {"t": {}}})


def test_the_table_has_a_row_per_event_with_fields_producers_and_consumers(events):
    from events_celery.catalog import catalog_table

    shop = service("shop", {FILLED: {"baskets": {"event_key_field": "basket.id"}}})
    stats = service("stats", consumer={"baskets": {}})
    text = catalog_table(build_catalog([shop, stats], events), title="Shop")
    assert text.startswith(".. list-table:: Shop")
    row = text[text.index(f"``{FILLED}``") :]
    assert "``basket.lines[].price``: bytes (decimal 10,2)" in row
    assert "shop → topic ``baskets`` (exchange ``p.baskets``, key ``basket.id``)" in row
    assert "stats ← topic ``baskets`` (queue ``stats.baskets``)" in row
    assert text.count("   * - ``") == 3
