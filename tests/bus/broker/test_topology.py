"""RabbitMQ topology: exchange and queue names, bindings and arguments (nothing declared)."""

from __future__ import annotations

import pytest

from events_celery.bus.broker import topology
from events_celery.conf import Subscription, bus_settings
from events_celery.exceptions import ConfigurationError

ORDER_PLACED = "org.example.shop.order.placed.v1"
PING = "org.example.test.ping.v1"


def bindings(queue):
    return sorted((b.exchange.name, b.routing_key) for b in queue.bindings)


@pytest.fixture
def shop(settings):
    """A service that publishes orders and pings, and consumes orders and audit."""
    settings.EVENT_BUS_SERVICE_NAME = "shop"
    settings.EVENT_BUS_TOPIC_PREFIX = "prod."
    settings.EVENT_BUS_UNROUTED_MAX_LENGTH = 500
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED: {"orders": {}},
        PING: {"pings": {}, "disabled": {"enabled": False}},
    }
    settings.EVENT_BUS_CONSUMER_CONFIG = {
        "orders": {"event_types": [ORDER_PLACED, PING]},
        "audit": {},
    }
    return settings


# --- names ----------------------------------------------------------------------------------


def test_topic_exchange_is_prefix_plus_topic():
    assert topology.exchange_name("prod.", "orders") == "prod.orders"
    assert topology.exchange_name("", "orders") == "orders"


def test_topic_exchange_is_durable_topic_with_an_alternate_exchange():
    exchange = topology.topic_exchange("prod.", "orders")

    assert exchange.name == "prod.orders"
    assert exchange.type == "topic"
    assert exchange.durable is True
    assert exchange.arguments == {"alternate-exchange": "prod.orders.unrouted"}


def test_unrouted_queue_is_bounded_and_drops_its_oldest_when_full():
    queue = topology.unrouted_queue("prod.", "orders", 500)

    assert queue.name == "prod.orders.unrouted"
    assert queue.exchange.name == "prod.orders.unrouted"
    assert queue.exchange.type == "fanout"
    assert queue.durable is True
    assert queue.queue_arguments == {
        "x-queue-type": "classic",
        "x-max-length": 500,
        "x-overflow": "drop-head",
    }


def test_on_quorum_queues_the_unrouted_queue_is_a_quorum_queue_too(settings):
    # A classic queue lives on one cluster node: while that node is down, declaring it fails
    # and so would every publish to the topic.
    settings.EVENT_BUS_QUEUE_TYPE = "quorum"
    settings.EVENT_BUS_PRODUCER_CONFIG = {"org.example.shop.order.placed.v1": {"orders": {}}}
    (queue,) = topology.topic_topology(bus_settings(), "orders").queues

    assert queue.name.endswith("orders.unrouted")
    assert queue.queue_arguments["x-queue-type"] == "quorum"
    assert queue.queue_arguments["x-overflow"] == "drop-head"


def test_service_queue_is_service_dot_topic():
    queue = topology.service_queue("shop", "prod.", Subscription("orders", None))

    assert queue.name == "shop.orders"
    assert queue.durable is True


def test_dead_letters_and_tasks_live_in_the_services_reserved_namespace():
    assert topology.dead_letter_exchange("shop").name == "shop.events_celery.dead_letters"
    assert topology.dead_letter_queue("shop").name == "shop.events_celery.dead_letters"
    assert topology.task_queue("shop").name == "shop.events_celery.tasks"


# --- bindings -------------------------------------------------------------------------------


def test_service_queue_is_bound_once_per_subscribed_event_type():
    queue = topology.service_queue("shop", "prod.", Subscription("orders", (ORDER_PLACED, PING)))

    assert bindings(queue) == [("prod.orders", ORDER_PLACED), ("prod.orders", PING)]


def test_service_queue_of_a_whole_topic_is_bound_with_hash():
    queue = topology.service_queue("shop", "prod.", Subscription("audit", None))

    assert bindings(queue) == [("prod.audit", "#")]


def test_service_queue_binds_to_the_durable_topic_exchange():
    queue = topology.service_queue("shop", "", Subscription("audit", None))

    [binding] = queue.bindings
    assert binding.exchange.type == "topic"
    assert binding.exchange.durable is True
    assert binding.exchange.arguments == {"alternate-exchange": "audit.unrouted"}


def test_task_queue_sits_behind_its_own_topic_exchange_for_broker_side_delays():
    queue = topology.task_queue("shop")

    assert (queue.exchange.name, queue.exchange.type) == ("shop.events_celery.tasks", "topic")
    assert queue.routing_key == "shop.events_celery.tasks"


def test_dead_letter_queue_takes_everything_from_its_exchange():
    queue = topology.dead_letter_queue("shop")

    assert queue.exchange.name == "shop.events_celery.dead_letters"
    assert queue.exchange.type == "fanout"
    assert queue.durable is True


# --- queue arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue_type", "extra"),
    [
        ("classic", {}),
        # quorum queues dead-letter at least once, which needs reject-publish overflow
        ("quorum", {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}),
    ],
)
def test_service_and_task_queues_dead_letter_to_the_service(queue_type, extra):
    expected = {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": "shop.events_celery.dead_letters",
        **extra,
    }

    service = topology.service_queue("shop", "", Subscription("orders", None), queue_type)
    tasks = topology.task_queue("shop", queue_type)

    assert service.queue_arguments == expected
    assert tasks.queue_arguments == expected


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_dead_letter_queue_has_the_queue_type_and_no_dead_letter_exchange(queue_type):
    queue = topology.dead_letter_queue("shop", queue_type)

    assert queue.queue_arguments == {"x-queue-type": queue_type}


# --- whole topologies -----------------------------------------------------------------------


def test_producer_topology_has_one_exchange_and_parking_queue_per_topic(shop):
    produced = topology.producer_topology(bus_settings(), ["pings", "orders", "pings"])

    assert [e.name for e in produced.exchanges] == ["prod.orders", "prod.pings"]
    assert [q.name for q in produced.queues] == ["prod.orders.unrouted", "prod.pings.unrouted"]
    assert all(q.queue_arguments["x-max-length"] == 500 for q in produced.queues)


def test_consumer_topology_lists_the_services_queues(shop):
    consumed = topology.consumer_topology(bus_settings())

    assert {e.name for e in consumed.exchanges} == {
        "prod.audit",
        "prod.orders",
        "shop.events_celery.dead_letters",
    }
    assert {q.name for q in consumed.queues} == {
        "prod.audit.unrouted",
        "prod.orders.unrouted",
        "shop.events_celery.dead_letters",
        "shop.events_celery.tasks",
        "shop.orders",
        "shop.audit",
    }


def test_consumer_queues_use_the_configured_queue_type(shop):
    shop.EVENT_BUS_QUEUE_TYPE = "quorum"

    consumed = topology.consumer_topology(bus_settings())

    by_name = {queue.name: queue for queue in consumed.queues}
    for name in ("shop.orders", "shop.audit", "shop.events_celery.tasks"):
        assert by_name[name].queue_arguments["x-queue-type"] == "quorum"
    assert by_name["shop.events_celery.dead_letters"].queue_arguments == {"x-queue-type": "quorum"}


def test_service_topology_adds_exchanges_it_only_publishes_to(shop):
    everything = topology.service_topology(bus_settings())

    assert {e.name for e in everything.exchanges} == {
        "prod.audit",
        "prod.orders",
        "shop.events_celery.dead_letters",
        "prod.pings",
    }
    assert "prod.disabled" not in everything.names
    assert "prod.pings.unrouted" in everything.names
    assert "shop.pings" not in everything.names


def test_consumer_topology_needs_a_service_name(shop):
    shop.EVENT_BUS_SERVICE_NAME = None

    with pytest.raises(ConfigurationError, match="EVENT_BUS_SERVICE_NAME"):
        topology.consumer_topology(bus_settings())


def test_service_without_subscriptions_still_has_its_private_queues():
    consumed = topology.consumer_topology(bus_settings())

    assert [e.name for e in consumed.exchanges] == ["tests.events_celery.dead_letters"]
    assert {q.name for q in consumed.queues} == {
        "tests.events_celery.dead_letters",
        "tests.events_celery.tasks",
    }


def test_task_queue_carries_celerys_max_priority_so_both_declarations_agree():
    queue = topology.task_queue("shop", "classic", max_priority=10)

    assert queue.queue_arguments["x-max-priority"] == 10
