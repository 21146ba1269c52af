"""Fixtures shared by every tier of the test suite."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import attrs
import pytest

# Celery's environment override would win over the test settings (events_celery follows it, as
# Celery does); tests configure the broker through settings only.
os.environ.pop("CELERY_BROKER_URL", None)

RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672
RABBITMQ_URL = f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}//"


def _reachable() -> bool:
    try:
        socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout=2).close()
    except OSError:
        return False
    return True


def ensure_rabbitmq() -> str | None:
    """Start the local RabbitMQ if it is installed and not running; the reason it is not up."""
    if _reachable():
        return None
    if shutil.which("rabbitmq-server") is None:
        return "RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not installed"
    subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "await_startup", "--timeout", "120"], check=False, capture_output=True
    )
    if _reachable():
        return None
    return "rabbitmq-server -detached did not bring RabbitMQ up on 127.0.0.1:5672"


#: What a test needs beyond Python, by the fixture that provides it, and the marker that names
#: its tier: tox selects tiers by these markers.
TIER_MARKERS = {"rabbitmq_url": "rabbitmq", "browser": "browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that uses the real broker or a browser without its tier's marker."""
    unmarked = [
        f"{item.nodeid} (uses {fixture}, not marked {marker})"
        for item in items
        for fixture, marker in TIER_MARKERS.items()
        if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests without the marker of the tier they need:\n" + "\n".join(unmarked)
        )


@pytest.fixture(autouse=True)
def _no_publisher_outlives_its_test() -> Iterator[None]:
    """Stop the background outbox publisher a test started, so it cannot touch the next one."""
    yield
    from events_celery.bus.publish.background import stop_background_publisher

    stop_background_publisher(timeout=10)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """URL of the real local RabbitMQ; started if needed. Under CI=true it never skips."""
    problem = ensure_rabbitmq()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; CI runs the real-broker tests and cannot skip them")
        pytest.skip(problem)
    return RABBITMQ_URL


@attrs.frozen
class BrokerUser:
    """A broker user of one test, alone in a vhost of its own, on the shared local RabbitMQ.

    Its permissions are set with ``rabbitmqctl``; only its own user and vhost are touched.
    """

    name: str
    password: str
    vhost: str

    @property
    def url(self) -> str:
        """Its broker URL."""
        return f"amqp://{self.name}:{self.password}@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{self.vhost}"

    def set_permissions(self, configure: str = ".*", write: str = ".*", read: str = ".*") -> None:
        """Its vhost permissions (regular expressions)."""
        ctl("set_permissions", "-p", self.vhost, self.name, configure, write, read)

    def set_topic_permissions(self, exchange: str, write: str, read: str = ".*") -> None:
        """Which routing keys it may publish to (and bind from) topic ``exchange``."""
        ctl("set_topic_permissions", "-p", self.vhost, self.name, exchange, write, read)


def ctl(*args: str) -> None:
    """Run ``rabbitmqctl`` with ``args``; fail the test naming what it said if it fails."""
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120)
    if done.returncode:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {done.stdout}{done.stderr}")


@pytest.fixture
def broker_user(rabbitmq_url: str) -> Iterator[BrokerUser]:
    """A broker user with every permission on a vhost of its own; both are deleted after."""
    if shutil.which("rabbitmqctl") is None:
        problem = "rabbitmqctl is not installed: the test cannot create a broker user"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; CI runs the real-broker tests and cannot skip them")
        pytest.skip(problem)
    run = uuid.uuid4().hex[:10]
    user = BrokerUser(f"events-celery-test-{run}", uuid.uuid4().hex, f"events-celery-test-{run}")
    ctl("add_vhost", user.vhost)
    try:
        ctl("add_user", user.name, user.password)
        try:
            user.set_permissions()
            yield user
        finally:
            ctl("delete_user", user.name)
    finally:
        ctl("delete_vhost", user.vhost)
