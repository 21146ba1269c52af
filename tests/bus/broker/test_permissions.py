"""Least-privilege permissions derived from the settings (no broker: the patterns themselves).

RabbitMQ matches its permission patterns with ``re:run`` (PCRE, unanchored); Python's ``re``
agrees with it on the patterns used here, so ``re.search`` is what the broker would do.
"""

from __future__ import annotations

import io
import json
import re
import shlex

import pytest
from django.core.management import CommandError, call_command

from events_celery.bus.broker import permissions
from events_celery.bus.broker.permissions import CeleryNames
from events_celery.conf import bus_settings
from events_celery.exceptions import ConfigurationError

ORDER_PLACED = "org.example.shop.order.placed.v1"
ORDER_SHIPPED = "org.example.shop.order.shipped.v1"
PING = "org.example.test.ping.v1"
DEFAULT_CELERY = CeleryNames(default_queue="billing.celery", default_exchange="billing.celery")


@pytest.fixture
def billing(settings):
    """Publishes orders and pings; consumes placed orders, and the whole audit topic."""
    settings.EVENT_BUS_SERVICE_NAME = "billing"
    settings.EVENT_BUS_TOPIC_PREFIX = "prod."
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED: {"orders": {}},
        ORDER_SHIPPED: {"orders": {}},
        PING: {"pings": {}, "disabled": {"enabled": False}},
    }
    settings.EVENT_BUS_CONSUMER_CONFIG = {
        "orders": {"event_types": [ORDER_PLACED]},
        "audit": {},
    }
    settings.CELERY_TASK_DEFAULT_QUEUE = "billing.celery"
    return settings


def derive(celery: CeleryNames = DEFAULT_CELERY, **kwargs: str) -> permissions.Permissions:
    return permissions.derive(
        bus_settings(), celery, **{"user": "billing", "vhost": "prod", **kwargs}
    )


def allows(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def row(granted: permissions.Permissions, exchange: str) -> permissions.TopicPermission:
    [found] = [r for r in granted.topic_permissions if r.exchange == exchange]
    return found


def test_every_pattern_is_anchored(billing):
    granted = derive()
    patterns = [granted.configure, granted.write, granted.read]
    patterns += [p for r in granted.topic_permissions for p in (r.write, r.read)]
    for pattern in patterns:
        assert pattern in (permissions.ANYTHING, permissions.NOTHING) or (
            pattern.startswith("^") and pattern.endswith("$")
        ), pattern


def test_dots_are_escaped(billing):
    granted = derive()
    assert allows(granted.write, "prod.orders")
    assert not allows(granted.write, "prodXorders")
    assert not allows(granted.configure, "billingXshop")
    assert allows(row(granted, "prod.orders").write, ORDER_PLACED)
    assert not allows(row(granted, "prod.orders").write, ORDER_PLACED.replace(".", "X"))


def test_the_topic_prefix_is_applied(billing):
    granted = derive()
    assert allows(granted.write, "prod.orders")
    assert not allows(granted.write, "orders")
    assert not allows(granted.write, "staging.orders")
    assert {"prod.orders", "prod.pings", "prod.audit"} <= {
        r.exchange for r in granted.topic_permissions
    }


def test_a_publisher_writes_only_the_types_it_routes_to_their_topics(billing):
    granted = derive()
    orders = row(granted, "prod.orders").write
    assert allows(orders, ORDER_PLACED)
    assert allows(orders, ORDER_SHIPPED)
    assert not allows(orders, PING)
    assert not allows(orders, f"{ORDER_PLACED}.evil")
    assert not allows(orders, f"x{ORDER_PLACED}")
    assert allows(row(granted, "prod.pings").write, PING)
    assert not allows(granted.write, "prod.disabled")  # a disabled route is no right
    assert not allows(granted.write, "prod.audit")  # consumed, not published
    assert not allows(granted.configure, "prod.orders")  # declared by an administrator
    assert not allows(granted.configure, "prod.orders.unrouted")


def test_a_consumer_binds_only_the_types_it_subscribes_to(billing):
    granted = derive()
    orders = row(granted, "prod.orders").read
    assert allows(orders, ORDER_PLACED)
    assert not allows(orders, "#")
    assert not allows(orders, ORDER_SHIPPED)
    assert allows(row(granted, "prod.audit").read, "#")  # the topic subscribed whole
    assert not allows(row(granted, "prod.audit").write, "anything")
    assert not allows(row(granted, "prod.pings").read, "#")  # published, not consumed
    assert allows(granted.read, "prod.orders")
    assert allows(granted.read, "prod.audit")
    assert not allows(granted.read, "prod.pings")


def test_a_service_has_its_own_names_and_no_other_services(billing):
    granted = derive()
    own = [
        "billing.orders",
        "billing.events_celery.tasks",
        "billing.events_celery.dead_letters",
        "billing.celery",
        "billing.orders.ordered",
        "billing.orders.ordered.3",
    ]
    for name in own:
        for pattern in (granted.configure, granted.write, granted.read):
            assert allows(pattern, name), name
    for name in ["shipping.orders", "billing2.orders", "billing", "xbilling.orders"]:
        for pattern in (granted.configure, granted.write, granted.read):
            assert not allows(pattern, name), name


def test_every_exchange_it_writes_to_has_a_topic_permission_row(billing):
    granted = derive()
    named = {
        "prod.orders",
        "prod.pings",
        "billing.events_celery.tasks",
        "billing.events_celery.dead_letters",
        "billing.celery",
        "celery.pidbox",
        "reply.celery.pidbox",
        "celeryev",
    }
    assert all(allows(granted.write, name) for name in named)
    assert named <= {r.exchange for r in granted.topic_permissions}


def test_celerys_shared_defaults_are_named(billing):
    granted = derive(CeleryNames(default_queue="celery", default_exchange="celery"))
    assert set(granted.shared) == {
        "celery",
        "celery.pidbox",
        "reply.celery.pidbox",
        "*.celery.pidbox",
        "celeryev",
        "celeryev.*",
    }
    assert allows(granted.configure, "billing-1@host.celery.pidbox")
    assert allows(granted.configure, "celeryev.3f1c")


def test_celery_names_of_the_services_own_share_nothing(billing):
    celery = CeleryNames(
        default_queue="billing.celery",
        default_exchange="billing.celery",
        control_exchange="billing",
        event_exchange="billing.celeryev",
        event_queue_prefix="billing.celeryev",
    )
    granted = derive(celery)
    assert granted.shared == ()
    assert allows(granted.configure, "reply.billing.pidbox")
    assert allows(granted.configure, "billing@host.billing.pidbox")
    assert not allows(granted.configure, "celery.pidbox")
    assert not allows(granted.configure, "celeryev")
    assert not allows(granted.configure, "shipping@host.shipping.pidbox")


def test_without_remote_control_no_pidbox(billing):
    granted = derive(CeleryNames(default_queue="billing.celery", remote_control=False))
    assert not allows(granted.configure, "celery.pidbox")
    assert not allows(granted.configure, "x.celery.pidbox")


def test_quorum_queues_add_celerys_delayed_delivery(billing):
    assert not allows(derive().configure, "celery_delayed_0")
    granted = derive(CeleryNames(default_queue="billing.celery", delayed_delivery=True))
    for name in ("celery_delayed_0", "celery_delayed_27", "celery_delayed_delivery"):
        assert allows(granted.configure, name)
        assert row(granted, name).exchange == name
    # The worker binds its task queue to its exchange with "#.<routing key>" for delayed tasks.
    tasks = row(granted, "billing.events_celery.tasks").read
    assert allows(tasks, "#.billing.events_celery.tasks")
    assert not allows(row(derive(), "billing.events_celery.tasks").read, "#")


def test_a_topic_exchange_among_the_services_names_is_refused(billing):
    billing.EVENT_BUS_TOPIC_PREFIX = ""
    billing.EVENT_BUS_PRODUCER_CONFIG = {ORDER_PLACED: {"billing.invoices": {}}}
    with pytest.raises(ConfigurationError, match=r"'billing\.invoices'.*EVENT_BUS_TOPIC_PREFIX"):
        derive()


def test_both_formats_say_the_same(billing):
    granted = derive()
    definitions = granted.definitions()
    lines = [shlex.split(line) for line in granted.rabbitmqctl()]
    [perm] = definitions["permissions"]
    assert lines[0] == [
        "rabbitmqctl",
        "set_permissions",
        "-p",
        "prod",
        "billing",
        perm["configure"],
        perm["write"],
        perm["read"],
    ]
    assert [line[1:] for line in lines[1:]] == [
        ["set_topic_permissions", "-p", r["vhost"], r["user"], r["exchange"], r["write"], r["read"]]
        for r in definitions["topic_permissions"]
    ]


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("event_bus_permissions", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_command_prints_definitions_for_the_service_user_by_default(billing):
    billing.EVENT_BUS_BROKER_URL = "amqp://billing:secret@rabbit.example:5672/prod"
    printed = json.loads(command())
    assert set(printed) == {"permissions", "topic_permissions"}
    [perm] = printed["permissions"]
    assert (perm["user"], perm["vhost"]) == ("billing", "prod")
    assert set(perm) == {"user", "vhost", "configure", "write", "read"}
    assert all(
        set(r) == {"user", "vhost", "exchange", "write", "read"}
        for r in printed["topic_permissions"]
    )


def test_the_command_takes_user_vhost_and_format(billing):
    lines = command("--user", "billing-prod", "--vhost", "/", "--format", "rabbitmqctl")
    first = shlex.split(lines.splitlines()[0])
    assert first[:5] == ["rabbitmqctl", "set_permissions", "-p", "/", "billing-prod"]


def test_the_default_vhost_is_slash(billing):
    billing.EVENT_BUS_BROKER_URL = "amqp://guest:guest@localhost:5672//"
    assert json.loads(command())["permissions"][0]["vhost"] == "/"


def test_the_command_refuses_invalid_settings_and_arguments(billing):
    billing.EVENT_BUS_SERVICE_NAME = None
    with pytest.raises(CommandError, match="EVENT_BUS_SERVICE_NAME"):
        command()
    billing.EVENT_BUS_SERVICE_NAME = "billing"
    with pytest.raises(CommandError, match="--user is empty"):
        command("--user", "")


def test_celery_names_come_from_the_django_settings_of_the_celery_app(billing):
    billing.CELERY_CONTROL_EXCHANGE = "billing"
    billing.CELERY_EVENT_EXCHANGE = "billing.celeryev"
    billing.CELERY_EVENT_QUEUE_PREFIX = "billing.celeryev"
    billing.CELERY_WORKER_ENABLE_REMOTE_CONTROL = True
    printed = json.loads(command())
    configure = printed["permissions"][0]["configure"]
    assert allows(configure, "reply.billing.pidbox")
    assert not allows(configure, "celeryev")
    assert not allows(configure, "celery.pidbox")
