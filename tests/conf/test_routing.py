"""Routes and subscriptions (conf/routing.py): producer and consumer config."""

from __future__ import annotations

from events_celery.conf import (
    Route,
    Subscription,
    bus_settings,
)

ORDER_PLACED = "org.example.shop.order.placed.v1"
PING = "org.example.test.ping.v1"


def problem_ids():
    return [problem.id for problem in bus_settings().problems]


def test_producer_config_becomes_enabled_routes(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED: {
            "orders": {"event_key_field": "order.id", "enabled": True},
            "audit": {"enabled": False},
            "analytics": {},
        },
    }

    routes = bus_settings().routes

    assert routes[ORDER_PLACED] == (
        Route(ORDER_PLACED, "orders", "order.id"),
        Route(ORDER_PLACED, "analytics", None),
    )
    assert bus_settings().problems == ()


def test_event_with_every_route_disabled_has_no_routes(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {ORDER_PLACED: {"orders": {"enabled": False}}}

    assert bus_settings().routes[ORDER_PLACED] == ()


def test_consumer_config_becomes_subscriptions(settings):
    settings.EVENT_BUS_CONSUMER_CONFIG = {
        "orders": {"event_types": [ORDER_PLACED]},
        "pings": {},
        "everything": None,
    }

    assert bus_settings().subscriptions == (
        Subscription("orders", (ORDER_PLACED,)),
        Subscription("pings", None),
        Subscription("everything", None),
    )


def test_non_list_event_types_is_reported(settings):
    settings.EVENT_BUS_CONSUMER_CONFIG = {"orders": {"event_types": 5}}

    assert "E007" in problem_ids()


def test_a_route_with_a_bad_topic_name_is_kept_disabled_for_the_checks(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED: {"bad topic": {"event_key_field": "order.id"}, "orders": {}}
    }

    parsed = bus_settings()

    assert parsed.routes[ORDER_PLACED] == (Route(ORDER_PLACED, "orders", None),)
    assert parsed.producer_config[ORDER_PLACED] == (
        Route(ORDER_PLACED, "bad topic", "order.id", valid=False),
        Route(ORDER_PLACED, "orders", None),
    )


def test_a_topic_with_a_problem_is_not_consumed_but_kept_for_the_checks(settings):
    settings.EVENT_BUS_CONSUMER_CONFIG = {
        "bad topic": {"event_types": [ORDER_PLACED]},
        "pings": {"event_types": [PING], "typo": 1},
        "orders": {},
    }

    parsed = bus_settings()

    assert parsed.subscriptions == (Subscription("orders", None),)
    assert parsed.consumer_config == (
        Subscription("bad topic", (ORDER_PLACED,), valid=False),
        Subscription("pings", (PING,), valid=False),
        Subscription("orders", None),
    )
    assert [problem.id for problem in parsed.problems] == ["E007", "E007"]
