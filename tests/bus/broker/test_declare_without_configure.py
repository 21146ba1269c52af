"""Declaring with a broker user that may not configure the topic exchanges (real RabbitMQ).

The user of the test may configure only its service's names, as ``event_bus_permissions``
grants; the topic exchange is declared (or not) by an administrator first.
"""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection

from events_celery.bus.broker import declaring, topology
from events_celery.conf import bus_settings
from events_celery.exceptions import ConfigurationError
from tests.conftest import BrokerUser

pytestmark = pytest.mark.rabbitmq

PREFIX = "lp."
SERVICE = "lpsvc"


@pytest.fixture
def service(broker_user: BrokerUser, settings: Any) -> BrokerUser:
    settings.EVENT_BUS_SERVICE_NAME = SERVICE
    settings.EVENT_BUS_BROKER_URL = broker_user.url
    settings.EVENT_BUS_TOPIC_PREFIX = PREFIX
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {}}
    return broker_user


def as_administrator(topology_: topology.Topology, user: BrokerUser) -> None:
    with Connection(user.url) as connection:
        declaring.declare(connection, topology_)


def test_an_exchange_the_user_may_not_configure_is_used_as_declared(service: BrokerUser) -> None:
    wanted = topology.consumer_topology(bus_settings())
    as_administrator(wanted, service)  # every right, for now
    own = r"^lpsvc\..+$"
    service.set_permissions(configure=own, write=own, read=r"^(?:lpsvc\..+|lp\.pings)$")

    with Connection(service.url) as connection:
        declaring.declare(connection, wanted)  # no 403 escapes
        channel: Any = connection.channel()
        channel.queue_declare(f"{SERVICE}.pings", passive=True)
        channel.close()


def test_a_missing_exchange_the_user_may_not_declare_names_the_fix(service: BrokerUser) -> None:
    own = r"^lpsvc\..+$"
    service.set_permissions(configure=own, write=own, read=own)

    with Connection(service.url) as connection, pytest.raises(ConfigurationError) as error:
        declaring.declare(connection, topology.consumer_topology(bus_settings()))
    assert "exchange 'lp.pings' does not exist" in str(error.value)
    assert "declare_event_topology" in str(error.value)
