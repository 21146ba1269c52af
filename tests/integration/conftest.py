"""Real-RabbitMQ harness: services run as real ``celery worker`` processes.

Each test gets its own topic prefix and service names, so queues never leak between tests;
everything it declared is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import amqp
import pytest
from celery import Celery
from django.db import connection as db_connection

ROOT = Path(__file__).resolve().parents[2]
#: Partition queues deleted after a test of an ordered subscription (the most a test uses).
ORDERED_PARTITIONS = 16
WAIT = 60.0  # generous: a slow CI machine must not fail a correct run
#: Options of the workers the tests start: without Celery's worker events and start-up sync,
#: which these tests do not need.
WORKER_OPTIONS = ("--without-heartbeat", "--without-gossip", "--without-mingle")


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


class Worker:
    """One ``celery worker`` process of a service."""

    def __init__(
        self,
        env: dict[str, str],
        node: str,
        log: Path,
        *,
        wait: bool = True,
        options: Sequence[str] = WORKER_OPTIONS,
    ) -> None:
        self.log = log
        self.node = node
        self.service = env.get("TEST_SERVICE", "")
        #: The Celery node name, as remote control (inspect) addresses the worker.
        self.name = f"{node}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        # The node name is unique per start: Celery's control queue is named after it and is
        # exclusive, so two runs on one shared broker must not share a name.
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "tests.integration.celery_app", "worker",
                    "-c", "2", "-l", "info", "-n", self.name, *options,
                ],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() reaches the pool
            )  # fmt: skip
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the worker says it is ready."""
        wait_for(self._ready, f"worker {self.node} to start (log: {self.log})")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"worker {self.node} exited:\n{self.log.read_text()[-4000:]}")
        return " ready." in self.log.read_text()

    def terminate(self) -> None:
        """Ask the worker to shut down (SIGTERM), without waiting for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a crash or OOM kill would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.terminate()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def inversions(runs: list[dict[str, Any]]) -> int:
    """Runs of one key (attempts included) that came after a run of a later ``seq``."""
    highest, count = -1, 0
    for run in runs:
        if run["seq"] < highest:
            count += 1
        highest = max(highest, run["seq"])
    return count


class Bus:
    """Services of one test, a plain AMQP client, and what the receivers recorded."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"t{self.run_id}."
        self.results = tmp_path / "results.jsonl"
        self.results.touch()
        self.workers: list[Worker] = []
        self.probes: list[str] = []
        self.services: set[str] = set()
        self.topics: set[str] = set()
        self.amqp = self.client()
        self.channel = self.amqp.channel()

    def client(self) -> amqp.Connection:
        """A plain py-amqp connection to this bus's broker (the first of its URLs that answers)."""
        *others, last = self.url.split(";")
        for url in others:
            try:
                return self._connect(url)
            except OSError:  # a cluster node that is down: try the next one
                continue
        return self._connect(last)

    @staticmethod
    def _connect(url: str) -> amqp.Connection:
        parts = urlsplit(url)
        connection = amqp.Connection(
            f"{parts.hostname}:{parts.port or 5672}",
            userid=parts.username or "guest",
            password=parts.password or "guest",
            connect_timeout=5,
        )
        connection.connect()
        return connection

    def service_name(self, base: str) -> str:
        return f"{base}-{self.run_id}"

    def start(
        self,
        service: str,
        consumer_config: dict[str, Any],
        *,
        producer_config: dict[str, Any] | None = None,
        node: str | None = None,
        batch_size: int = 32,
        queue_type: str = "classic",
        backoff: float = 0.05,
        env: dict[str, str] | None = None,
        wait: bool = True,
        options: Sequence[str] = WORKER_OPTIONS,
    ) -> Worker:
        """Start a ``celery worker`` of ``service``; ``env`` adds to or overrides its settings.

        ``options`` are the worker's command-line options besides its name, ``-c`` and ``-l``.

        With ``wait=False`` it returns at once; call :meth:`Worker.wait_ready` (workers started
        side by side are ready sooner).
        """
        self.services.add(service)
        self.topics.update(consumer_config)
        env = {
            **self.env(),
            "TEST_SERVICE": service,
            "TEST_NODE": node or service,
            "TEST_BATCH_SIZE": str(batch_size),
            "TEST_QUEUE_TYPE": queue_type,
            "TEST_BACKOFF": str(backoff),
            "TEST_CONSUMER_CONFIG": json.dumps(consumer_config),
            "TEST_PRODUCER_CONFIG": json.dumps(producer_config or {}),
            **(env or {}),
        }
        log = self.tmp_path / f"{node or service}.log"
        worker = Worker(env, node or service, log, wait=wait, options=options)
        self.workers.append(worker)
        return worker

    def env(self) -> dict[str, str]:
        """Environment of a process of this test: same database, same results file."""
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.integration.service_settings",
            "TEST_DB_NAME": str(db_connection.settings_dict["NAME"]),
            "TEST_PREFIX": self.prefix,
            "TEST_RESULTS": str(self.results),
            "TEST_BROKER_URL": self.url,
        }

    def records(self, **match: Any) -> list[dict[str, Any]]:
        lines = []
        for text in self.results.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:  # a receiver SIGKILLed while it wrote its line: not a record
                continue
        return [x for x in lines if all(x.get(k) == v for k, v in match.items())]

    def probe(self, routing_key: str = "#", topic: str = "shop") -> str:
        """A queue bound to a topic exchange (which must exist), deleted after the test."""
        name = f"probe-{self.run_id}-{len(self.probes)}"
        self.probes.append(name)  # deleted after the test even if binding it fails
        self.channel.queue_declare(name)
        self.channel.queue_bind(name, f"{self.prefix}{topic}", routing_key=routing_key)
        return name

    def depth(self, queue: str) -> int:
        _, count, _ = self.channel.queue_declare(queue, passive=True)
        return int(count)

    def idle(self, service: str) -> bool:
        """Whether ``service``'s queues are empty and its workers hold no task, twice over.

        A worker's tasks (running, prefetched, or waiting for a retry's countdown) are asked of
        the workers themselves (Celery's remote control); the second look comes after more
        than a consumer flush interval, so an event a consumer held for its next hand-off is a
        task by then.
        """
        queues = [f"{service}.{t}" for t in self.topics] + [f"{service}.events_celery.tasks"]
        nodes = [w.name for w in self.workers if w.service == service and w.process.poll() is None]
        for look in range(2):
            if look:
                time.sleep(0.2)
            if any(self.depth(queue) for queue in queues):
                return False
            inspect = self.control.control.inspect(destination=nodes, timeout=2.0)
            for held in (inspect.active, inspect.reserved, inspect.scheduled):
                replies = held() or {}
                if set(replies) != set(nodes) or any(replies.values()):
                    return False
        return True

    def wait_idle(self, service: str) -> None:
        """Wait until ``service``'s workers have nothing left to do (:meth:`idle`)."""
        wait_for(lambda: self.idle(service), f"the workers of {service} to be idle")

    @cached_property
    def control(self) -> Celery:
        """A Celery app that only talks to the workers (remote control), on this bus's broker."""
        return Celery("tests-control", broker=self.url)

    def dead_letters(self, service: str, **match: Any) -> list[Any]:
        """The dead-letter rows ``service`` wrote (the test must use the database), oldest first.

        A worker writes them to this test's database: the test needs
        ``pytest.mark.django_db(transaction=True)``, so the rows are committed where it reads.
        """
        from events_celery.models import DeadLetter

        return list(DeadLetter.objects.filter(service=service, **match).order_by("id"))

    def get(self, queue: str) -> amqp.Message | None:
        return self.channel.basic_get(queue, no_ack=True)

    def close(self, *, delete: bool = True) -> None:
        """Stop the workers, then delete every queue and exchange of the test (``delete``)."""
        for worker in self.workers:  # all shut down side by side
            worker.terminate()
        for worker in self.workers:
            worker.stop()
        if "control" in self.__dict__:
            self.control.close()
        self.amqp.collect()
        if not delete:
            return
        self.amqp = self.client()  # the broker may have restarted since the test began
        channel = self.amqp.channel()
        queues = [f"{self.prefix}{t}.unrouted" for t in self.topics]
        for service in self.services:
            queues += [f"{service}.{t}" for t in self.topics]
            queues += [f"{service}.events_celery.tasks", f"{service}.events_celery.dead_letters"]
            queues.append(f"{service}.celery")  # Celery's default queue (service_settings)
            for topic in self.topics:  # an ordered subscription's intake, partitions, presence
                ordered = f"{service}.{topic}.ordered"
                queues += [ordered, f"{ordered}.workers"]
                queues += [f"{ordered}.{n}" for n in range(ORDERED_PARTITIONS)]
        exchanges = [f"{self.prefix}{t}" for t in self.topics]
        exchanges += [f"{self.prefix}{t}.unrouted" for t in self.topics]
        exchanges += [f"{s}.events_celery.dead_letters" for s in self.services]
        exchanges += [f"{s}.events_celery.tasks" for s in self.services]
        exchanges += [f"{s}.celery" for s in self.services]
        exchanges += [f"{s}.events_celery.put-back" for s in self.services]  # consume_events
        exchanges += [f"{s}.{t}.ordered" for s in self.services for t in self.topics]
        for queue in [*queues, *self.probes]:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
        self.amqp.close()


@contextmanager
def open_bus(
    url: str, tmp_path: Path, settings: Any, publish_mode: str, *, delete: bool = True
) -> Iterator[Bus]:
    """A bus on the broker at ``url``; this process publishes with ``publish_mode``.

    ``delete=False`` leaves the test's queues and exchanges on a broker that is thrown away
    afterwards anyway.
    """
    harness = Bus(url, tmp_path)
    settings.CELERY_BROKER_URL = url
    settings.EVENT_BUS_TOPIC_PREFIX = harness.prefix
    settings.EVENT_BUS_PUBLISH_MODE = publish_mode
    try:
        yield harness
    finally:
        harness.close(delete=delete)


@pytest.fixture
def bus(rabbitmq_url: str, tmp_path: Path, settings: Any) -> Iterator[Bus]:
    """A clean bus for one test; the test process publishes as service ``tests``."""
    with open_bus(rabbitmq_url, tmp_path, settings, "direct") as harness:
        yield harness
