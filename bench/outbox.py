"""Benchmark: publishing through the transactional outbox, on PostgreSQL and a real RabbitMQ.

Run it from the repository root, with RabbitMQ on 127.0.0.1:5672 and PostgreSQL on its local
socket (user ``postgres``; the database ``events_celery_bench`` is created if missing);
``BENCH_BROKER_URL`` names another broker::

    .venv/bin/python bench/outbox.py              # about a minute and a half
    .venv/bin/python bench/outbox.py --quick      # a quick look, smaller counts

Each figure is printed next to a baseline measured in the same run, with their ratio and the
target of the outbox's issue:

1. **Batches.** ``--batch-transactions`` transactions of 100 ``send_event`` calls each, timed
   from the first send until every row is confirmed by the broker and deleted, against kombu
   publishing the same messages with one publisher confirm each. Target >= 5x. Measured twice:
   with plain ``transaction.atomic()`` (one outbox ``INSERT`` per event) and with
   ``batch_events()`` (one ``INSERT`` per transaction).
2. **One event per transaction.** ``--transactions`` transactions that each save a model row
   and send one event, timed until the last event is confirmed and its row deleted, against
   the same transactions without the event. Target >= 0.7x. Also the p99 of the time each
   transaction takes (``atomic()`` block, commit included). Target <= 2x.
3. **Backlog.** ``--backlog`` rows whose writer is gone (their lease has run out), drained by
   one relay pass (what a worker's sweeper and ``relay_events`` run), against raw kombu
   publishing as many messages without confirms. Target >= 0.5x.
4. **Broker away.** The p99 transaction time of (2) while the broker is unreachable (the
   connection is refused, as with a stopped broker), against the same with the broker up.
   Target <= 2x.
5. **Latency at light load.** ``--latency-events`` one-event transactions, 20 ms apart; a
   Celery worker of another service (prefork, 2 processes) runs the receiver. From the moment
   the commit returned to the receiver's end: p50 <= 5 ms, p99 <= 25 ms. Also printed: from
   the event's time (taken in ``send_event``, before the ``INSERT`` and the commit).

The messages carry the same ~100-byte Avro body and headers throughout. Every queue and
exchange of a run has the run id in its name and is deleted at the end; so are the rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["BENCH_DATABASE"] = "postgresql"
os.environ.setdefault("BENCH_RUN_ID", uuid.uuid4().hex[:8])
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

import django  # after the environment is set
import psycopg

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from kombu import Connection, Producer, Queue  # noqa: E402

from bench.receivers import timings  # noqa: E402
from bench.receivers.events import ORDER_PLACED, OrderData  # noqa: E402
from bench.receivers.models import PlacedOrder  # noqa: E402
from bench.throughput import (  # noqa: E402
    Row,
    baseline_exchange,
    baseline_queue,
    build_order,
    delete_run_entities,
    percentile,
    print_table,
    publish_raw,
    rate_row,
    running_worker,
    wire_message,
)
from events_celery import batch_events  # noqa: E402
from events_celery.bus.broker import declaring, topology  # noqa: E402
from events_celery.bus.publish import background, relay  # noqa: E402
from events_celery.conf import BusSettings, bus_settings  # noqa: E402
from events_celery.models import OutboxMessage  # noqa: E402

RUN_ID = os.environ["BENCH_RUN_ID"]
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1//"
BATCH = 100  # events per transaction in figure 1


def create_database() -> None:
    """Create the benchmark's database if it does not exist."""
    with psycopg.connect(
        host=os.environ.get("PGHOST", "/var/run/postgresql"),
        user=os.environ.get("PGUSER", "postgres"),
        dbname="postgres",
        autocommit=True,
    ) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = 'events_celery_bench'"
        ).fetchone()
        if found is None:
            connection.execute("CREATE DATABASE events_celery_bench")


def until_published(started: float) -> float:
    """Wait until this process has published (and deleted) every row; seconds since ``started``."""
    if not background.background_publisher().flush(timeout=300):
        raise RuntimeError("the background publisher did not empty its queue in 300 s")
    elapsed = time.perf_counter() - started
    left = OutboxMessage.objects.count()
    if left:
        raise RuntimeError(f"{left} outbox rows were left behind")
    return elapsed


def save_order(order: OrderData) -> None:
    PlacedOrder.objects.create(
        order_id=order.order_id,
        email=order.customer.email,
        total=order.total,
        placed_at=order.placed_at,
    )


def timed_transactions(count: int, body: Callable[[], object]) -> tuple[float, list[float]]:
    """Run ``count`` transactions of ``body``; (seconds in all, each one's time in ms)."""
    each = []
    started = time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        with transaction.atomic():
            body()
        each.append((time.perf_counter() - began) * 1000)
    return time.perf_counter() - started, each


def kombu_rate(url: str, settings: BusSettings, count: int, *, confirm: bool) -> float:
    """Messages per second kombu publishes to the baseline exchange (its queue keeps them)."""
    message = wire_message(settings, build_order())
    options = {"confirm_publish": True} if confirm else {}
    with Connection(url, transport_options=options) as connection:
        baseline_queue(settings).bind(connection.default_channel).declare()
        producer = Producer(connection.channel())
        publish_raw(producer, message, baseline_exchange(settings).name, 100)  # warm up
        started = time.perf_counter()
        publish_raw(producer, message, baseline_exchange(settings).name, count)
        rate = count / (time.perf_counter() - started)
        connection.default_channel.queue_purge(baseline_queue(settings).name)
    return rate


def ratio_row(figure: str, ours: float, baseline: float, unit: str, target: float) -> Row:
    """A row where lower is better (times): ours / baseline, at most ``target``."""
    ratio = ours / baseline
    return Row(
        figure,
        f"{ours:.2f} {unit}",
        f"{baseline:.2f} {unit}",
        f"{ratio:.2f}",
        f"<= {target:g}",
        "ok" if ratio <= target else "MISSED",
    )


def limit_row(figure: str, value: float, limit: float) -> Row:
    return Row(
        figure, f"{value:.2f} ms", "", "", f"<= {limit:g} ms", "ok" if value <= limit else "MISSED"
    )


def run(args: argparse.Namespace, work: Path) -> int:
    settings = bus_settings()
    settings.raise_for_problems()
    order = build_order()
    rows: list[Row] = []
    with Connection(args.broker) as connection:
        # Only the topic exchange: the service's own queue is declared by its worker in the
        # latency figure, so until then everything published is kept in one queue, the sink,
        # as the baselines' messages are.
        declaring.declare(connection, topology.producer_topology(settings, ["orders"]))
        sink = Queue(
            f"{settings.topic_prefix}sink",
            exchange=topology.topic_exchange(settings.topic_prefix, "orders"),
            routing_key="#",
        )
        sink.bind(connection.default_channel).declare()

    def send() -> None:
        ORDER_PLACED.send_event(order=order)

    def save_and_send() -> None:
        save_order(order)
        ORDER_PLACED.send_event(order=order)

    def save_only() -> None:
        save_order(order)

    def purge() -> None:
        with Connection(args.broker) as connection:
            connection.default_channel.queue_purge(sink.name)

    try:
        with override_settings(EVENT_BUS_PUBLISH_MODE="outbox"):
            # Warm up: connections, declarations, the database's caches.
            timed_transactions(50, save_and_send)
            until_published(time.perf_counter())

            print("1/5 batches of 100 events per transaction", flush=True)
            events = args.batch_transactions * BATCH
            confirmed = kombu_rate(args.broker, settings, args.confirmed_baseline, confirm=True)
            for label, block in (
                ("send_event each", transaction.atomic),
                ("in batch_events()", batch_events),
            ):
                started = time.perf_counter()
                for _ in range(args.batch_transactions):
                    with block():
                        for _ in range(BATCH):
                            send()
                rate = events / until_published(started)
                rows.append(
                    rate_row(
                        f"{BATCH} ev/tx, {label}, vs kombu + confirm each",
                        rate,
                        confirmed,
                        "ev/s",
                        5.0,
                    )
                )
                purge()

            print("2/5 one event per transaction, saving a row", flush=True)
            started = time.perf_counter()
            _, with_event = timed_transactions(args.transactions, save_and_send)
            with_rate = args.transactions / until_published(started)
            without_seconds, without_event = timed_transactions(args.transactions, save_only)
            rows.append(
                rate_row(
                    "1 event/transaction vs no event",
                    with_rate,
                    args.transactions / without_seconds,
                    "tx/s",
                    0.7,
                )
            )
            rows.append(
                ratio_row(
                    "p99 transaction time vs no event",
                    percentile(with_event, 99),
                    percentile(without_event, 99),
                    "ms",
                    2.0,
                )
            )
            purge()

            print("3/5 draining a backlog", flush=True)
            background.stop_background_publisher()
            real_submit = background.BackgroundPublisher.submit
            background.BackgroundPublisher.submit = lambda self, rows: None  # type: ignore[method-assign]
            try:
                for _ in range(args.backlog // 1000):
                    with transaction.atomic():
                        for _ in range(1000):
                            send()
            finally:
                background.BackgroundPublisher.submit = real_submit  # type: ignore[method-assign]
            OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))
            backlog = OutboxMessage.objects.count()
            started = time.perf_counter()
            drained = relay.relay_pass(bus_settings()).published
            drain_rate = drained / (time.perf_counter() - started)
            if drained != backlog or OutboxMessage.objects.exists():
                raise RuntimeError(f"the relay published {drained} of {backlog} rows")
            purge()
            raw = kombu_rate(args.broker, settings, backlog, confirm=False)
            rows.append(
                rate_row(
                    f"drain {backlog:,} rows vs kombu, no confirms", drain_rate, raw, "ev/s", 0.5
                )
            )
            purge()

            print("4/5 the broker away", flush=True)
            with override_settings(EVENT_BUS_BROKER_URL=UNREACHABLE):
                _, away = timed_transactions(args.transactions, save_and_send)
                background.stop_background_publisher(timeout=10)
            OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))
            relay.relay_pass(bus_settings())
            if OutboxMessage.objects.exists():
                raise RuntimeError("rows written while the broker was away were not published")
            rows.append(
                ratio_row(
                    "p99 transaction time, broker away vs up",
                    percentile(away, 99),
                    percentile(with_event, 99),
                    "ms",
                    2.0,
                )
            )
            purge()

            print("5/5 latency at light load", flush=True)
            committed: dict[int, float] = {}  # event time (µs) -> when its commit returned
            with running_worker("latency", work / "latency") as worker:
                for _ in range(args.latency_events):
                    with transaction.atomic():
                        save_order(order)
                        sent = ORDER_PLACED.send_event(order=order)
                    assert sent.metadata is not None
                    committed[round(sent.metadata.time.timestamp() * 1e6)] = time.time()
                    time.sleep(0.02)
                worker.wait_for(args.latency_events)
            runs = [t for t in timings.read(work / "latency") if round(t.sent * 1e6) in committed]
            latencies = [(t.finished - committed[round(t.sent * 1e6)]) * 1000 for t in runs]
            from_event_time = [(t.finished - t.sent) * 1000 for t in runs]
            event_p50, event_p99 = percentile(from_event_time, 50), percentile(from_event_time, 99)
            rows.append(
                limit_row("latency p50, commit to receiver end", percentile(latencies, 50), 5)
            )
            rows.append(
                limit_row("latency p99, commit to receiver end", percentile(latencies, 99), 25)
            )
            rows.append(
                Row(
                    "latency p50/p99, event time to receiver end",
                    f"{event_p50:.2f}/{event_p99:.2f} ms",
                    "",
                    "",
                    "",
                    "",
                )
            )
    finally:
        background.stop_background_publisher()
        OutboxMessage.objects.all().delete()
        PlacedOrder.objects.all().delete()
        with Connection(args.broker) as connection:
            connection.default_channel.queue_delete(sink.name)
        delete_run_entities(settings, args.broker, RUN_ID)

    print()
    print_table(rows)
    print(
        f"\nrun {RUN_ID}: {args.batch_transactions} x {BATCH} events; "
        f"{args.transactions} one-event transactions each way; backlog {args.backlog:,}; "
        f"kombu + confirm baseline over {args.confirmed_baseline:,} messages; "
        f"latency over {len(latencies)} events (median {statistics.median(latencies):.2f} ms)"
    )
    return 1 if any(row.verdict == "MISSED" for row in rows) else 0


def main(argv: list[str] | None = None) -> int:
    """Run every figure, print the table; 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--batch-transactions", type=int, default=100)
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--confirmed-baseline", type=int, default=3000)
    parser.add_argument("--latency-events", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="a tenth of every count")
    args = parser.parse_args(argv)
    args.broker = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    if args.quick:
        for name in ("batch_transactions", "transactions", "backlog", "confirmed_baseline"):
            setattr(args, name, max(getattr(args, name) // 10, 1000 if name == "backlog" else 10))
    create_database()
    call_command("migrate", verbosity=0)
    work = Path(tempfile.mkdtemp(prefix=f"bench-outbox-{RUN_ID}-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
