"""Run the example end to end: ``python -m config.demo``.

With RabbitMQ reachable at ``CELERY_BROKER_URL``, it starts the Procfile's ``billing`` and
``notifications`` workers (each Procfile line migrates its service's database first: the
dead-letter and outbox tables), migrates the orders service's database (``send_event`` writes
each event to the outbox table there) and places orders in the orders service, shows the events
arriving in both workers, and stops them. Without RabbitMQ it plays all three services in this
process, on kombu's in-memory broker, with a real Celery worker in a thread, after migrating
that process's database. Exits non-zero on a timeout.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from honcho.environ import parse_procfile
from kombu.utils.url import maybe_sanitize_url

from config.settings.base import DEFAULT_BROKER_URL

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ("billing", "notifications")
ORDERS = "DJANGO_SETTINGS_MODULE=config.settings.orders python -m config.manage"
PLACED = "org.example.shop.order.placed.v1"
CANCELLED = "org.example.shop.order.cancelled.v1"

# What place_orders prints, and what the receivers log (config/*/receivers.py).
ORDER_LINE = re.compile(r"orders: (placed|cancelled) ([0-9a-f-]{36})")
RECEIVED_LINE = re.compile(
    r"(billing|notifications): received (\S+) id=\S+: .*order ([0-9a-f-]{36})"
)
READY_LINE = re.compile(r"\] \S+@\S+ ready\.$")
LOG_LINE = re.compile(r"\[\d{4}-|worker: ")  # a worker's log records, not its banner


class Progress:
    """What the services printed so far: which workers are ready, which events arrived."""

    def __init__(self) -> None:
        self.ready: set[str] = set()
        self.received: set[tuple[str, str, str]] = set()  # (service, event type, order id)
        self.changed = threading.Condition()

    def feed(self, service: str, line: str) -> None:
        with self.changed:
            if READY_LINE.search(line):
                self.ready.add(service)
            for match in RECEIVED_LINE.finditer(line):
                self.received.add(match.groups())
            self.changed.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` is true; False on timeout."""
        with self.changed:
            return self.changed.wait_for(done, timeout)


def expected_events(orders_output: str) -> set[tuple[str, str, str]]:
    """The (service, event type, order id) lines place_orders' output should lead to."""
    wanted = set()
    for action, order_id in ORDER_LINE.findall(orders_output):
        if action == "placed":
            wanted |= {("billing", PLACED, order_id), ("notifications", PLACED, order_id)}
        else:
            wanted.add(("billing", CANCELLED, order_id))
    return wanted


def broker_reachable(url: str) -> bool:
    """Whether a TCP connection to the broker's host and port opens."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "localhost", parts.port or 5672), 2).close()
    except OSError:
        return False
    return True


class Process:
    """A Procfile-style command in a subprocess, its output shown with a ``name |`` prefix."""

    def __init__(self, name: str, command: str, progress: Progress, *, banner: bool) -> None:
        self.name, self.progress, self.banner = name, progress, banner
        self.output: list[str] = []
        venv_bin = str(Path(sys.executable).parent)  # `celery` of this venv, activated or not
        self.process = subprocess.Popen(
            command,
            shell=True,  # as honcho runs Procfile lines: they set env vars
            cwd=ROOT,
            env={
                **os.environ,
                "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stopped with its pool processes
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip()
            self.output.append(line)
            if self.banner or LOG_LINE.match(line):
                print(f"{self.name:<13} | {line}", flush=True)
            self.progress.feed(self.name, line)
        self.progress.feed(self.name, "")  # wakes up waiters: it exited

    def wait(self, timeout: float) -> int | None:
        """Wait for it to exit and for its output; its exit code, None on timeout."""
        self.reader.join(timeout)
        return None if self.reader.is_alive() else self.process.wait(5)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM, as honcho does), then SIGKILL if it takes over 20 s."""
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            if self.wait(grace) is not None:
                break
        code = self.process.wait(5)
        status = "stopped" if code in (0, -signal.SIGTERM) else f"exited with code {code}"
        print(f"{self.name:<13} | {status}", flush=True)


def run_on_rabbitmq(count: int, timeout: float, *, verbose: bool) -> int:
    """Run the Procfile's workers, then the orders service, as separate processes."""
    procfile = parse_procfile((ROOT / "Procfile").read_text())
    progress = Progress()
    workers = [Process(n, procfile.processes[n], progress, banner=verbose) for n in WORKERS]
    try:
        progress.wait(lambda: progress.ready == set(WORKERS) or any_exited(workers), timeout)
        if progress.ready != set(WORKERS):
            problem = "a worker exited" if any_exited(workers) else f"not ready after {timeout:g}s"
            return fail(f"{problem} (ready: {sorted(progress.ready)})", workers)
        print(
            "demo          | workers ready; migrating the orders database (the outbox table) "
            "and placing orders in the orders service",
            flush=True,
        )
        orders = Process(
            "orders",
            f"{ORDERS} migrate --verbosity 0 && {ORDERS} place_orders --count {count}",
            progress,
            banner=True,
        )
        code = orders.wait(timeout)
        if code != 0:
            return fail(f"migrate or place_orders failed (exit code {code})", [orders, *workers])
        return wait_for_events(
            progress, expected_events("\n".join(orders.output)), timeout, workers
        )
    finally:
        print("demo          | stopping the workers", flush=True)
        for worker in workers:
            worker.stop()
        delete_topology()


SERVICES = ("orders", *WORKERS)


def delete_topology() -> None:
    """Delete what the services declared on the broker: the demo leaves nothing behind.

    Each service's exchanges and queues follow from its own settings, so each is deleted by a
    process that loads them (``--delete-topology`` under that settings module).
    """
    for service in SERVICES:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": f"config.settings.{service}"}
        command = [sys.executable, "-m", "config.demo", "--delete-topology"]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"demo          | could not delete {service}'s topology: {result.stderr}")
    print("demo          | deleted the services' exchanges and queues", flush=True)


def delete_service_topology() -> None:
    """Delete this service's exchanges and queues, and Celery's default queue of the service."""
    import django

    django.setup()
    from django.conf import settings

    from events_celery.bus.broker import topology
    from events_celery.bus.broker.connection import bus_connection
    from events_celery.conf import bus_settings

    bus = bus_settings()
    wanted = topology.service_topology(bus)
    queues = [queue.name for queue in wanted.queues] + [settings.CELERY_TASK_DEFAULT_QUEUE]
    exchanges = [exchange.name for exchange in wanted.exchanges]
    exchanges += [q.exchange.name for q in wanted.queues if q.exchange is not None]
    exchanges.append(settings.CELERY_TASK_DEFAULT_QUEUE)  # Celery names its exchange alike
    with bus_connection(bus, confirm_publish=False) as connection:
        channel = connection.default_channel
        for name in dict.fromkeys(queues):
            channel.queue_delete(name)
        for name in dict.fromkeys(exchanges):
            if name:
                channel.exchange_delete(name)


def run_in_memory(count: int, timeout: float) -> int:
    """Play all three services in this process: one Celery worker thread on ``memory://``."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.memory"
    import django

    django.setup()
    from django.conf import settings

    os.environ["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL  # Celery prefers it to settings
    from celery.contrib.testing.worker import start_worker
    from django.core.management import call_command

    from config.celery import app

    # send_event writes each event to the outbox table first: the database needs it.
    call_command("migrate", verbosity=0)
    progress = Progress()

    class Feed(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            progress.feed("demo", record.getMessage())

    # logfile=sys.stdout: the worker logs where this script prints, so lines stay in order.
    with start_worker(
        app, pool="solo", loglevel="INFO", logfile=sys.stdout, perform_ping_check=False
    ):
        logging.getLogger().addHandler(Feed())
        print("demo          | database migrated, worker ready; placing orders", flush=True)
        output = Tee()
        call_command("place_orders", count=count, stdout=output)
        code = wait_for_events(progress, expected_events(output.getvalue()), timeout, [])
        print("demo          | stopping the worker", flush=True)
    return code


class Tee(io.StringIO):
    """Keeps what is written, and prints it."""

    def write(self, text: str) -> int:
        print(text, end="", flush=True)
        return super().write(text)


def wait_for_events(
    progress: Progress, wanted: set[tuple[str, str, str]], timeout: float, workers: list[Process]
) -> int:
    """Wait until every wanted receiver line was printed; the exit code of the demo."""
    if not progress.wait(lambda: wanted <= progress.received, timeout):
        missing = "\n".join(
            f"  {s} never received {t} of order {o}"
            for s, t, o in sorted(wanted - progress.received)
        )
        return fail(f"timed out after {timeout:g}s waiting for events:\n{missing}", workers)
    by_service = {s: sum(1 for w in wanted if w[0] == s) for s in WORKERS}
    print(
        f"demo          | done: billing received {by_service['billing']} events, "
        f"notifications {by_service['notifications']}",
        flush=True,
    )
    return 0


def any_exited(processes: list[Process]) -> bool:
    return any(p.process.poll() is not None for p in processes)


def fail(message: str, processes: list[Process]) -> int:
    """Say what went wrong, with the last lines of any process that died; returns 1."""
    for p in processes:
        if p.process.poll() not in (None, 0):
            print(f"{p.name} exited with code {p.process.returncode}; its last lines:")
            print("\n".join(p.output[-30:]), flush=True)
    print(f"demo FAILED: {message}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5, help="orders to place (default 5)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per step (default 60)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the workers' banners")
    parser.add_argument(
        "--delete-topology",
        action="store_true",
        help="delete the exchanges and queues of the service of DJANGO_SETTINGS_MODULE, and exit",
    )
    args = parser.parse_args(argv)
    if args.delete_topology:
        delete_service_topology()
        return 0
    url = os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    if broker_reachable(url):
        print(f"broker: RabbitMQ at {maybe_sanitize_url(url)} (reachable)", flush=True)
        return run_on_rabbitmq(args.count, args.timeout, verbose=args.verbose)
    print(
        "broker: embedded in-memory broker (memory://); RabbitMQ not reachable at "
        f"{maybe_sanitize_url(url)}",
        flush=True,
    )
    return run_in_memory(args.count, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
