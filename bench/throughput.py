"""Benchmark: events_celery on a real RabbitMQ, against raw kombu and plain Celery.

Run it from the repository root, with RabbitMQ on 127.0.0.1:5672 (guest/guest)::

    .venv/bin/python bench/throughput.py                      # about 2-3 minutes
    .venv/bin/python bench/throughput.py --events 5000 --rss-events 20000   # a quick look
    .venv/bin/python bench/throughput.py --ordered --events 5000   # ordered subscriptions

``--ordered`` measures ordered subscriptions against the same events unordered instead (see
:mod:`bench.ordered`).

Each figure is printed next to a baseline measured in the same run, with their ratio:

1. **Publishing.** Confirmed publishes per second through ``ORDER_PLACED.send_event(...)``
   (``EVENT_BUS_PUBLISH_MODE = "direct"``, routed to one topic), against kombu publishing the
   same Avro body with the same headers and properties to an exchange with a bound queue,
   (a) without publisher confirms and (b) with one confirm per message
   (``transport_options={"confirm_publish": True}``). send_event and (b) take turns,
   ``--rounds`` times, and the median round counts, so a busy neighbour hurts both alike; (a)
   runs afterwards, as the broker is still persisting its bursts when the calls return.
   Target: send_event / (b) >= 1.0.
2. **End to end.** The ``--events`` events sent in (1) wait in the service's queue; then one
   worker node starts (``celery -A bench.celery_app worker``, prefork, 2 processes, settings
   :mod:`bench.settings`), and the rate is events / (last receiver finished - worker's event
   loop started). The baseline is as many plain Celery no-op tasks (``apply_async``) queued
   first and drained the same way by the same kind of worker. Target: ratio >= 0.8.
   Then, at light load (``--latency-events``, one every ``--latency-interval`` ms, worker
   idle), the latency from send (``metadata.time``; the no-op task's argument) to the start of
   the receiver (task), p50 and p99; it has no target.
3. **Worker memory.** VmRSS of the worker's main process plus its pool processes, summed
   (pages shared since the fork count in each process, alike for both), when the worker starts
   consuming and after ``--rss-events`` more events, against the same worker running as many no-op
   tasks. These events are published with kombu in the library's wire format (``encode_event``,
   fresh metadata each), without confirms, to feed the worker fast. Target: growth <= 10 %.

Receivers and no-op tasks record their times with one ``write`` each
(:mod:`bench.receivers.timings`). Every queue and exchange of a run has the run id in its name
and is deleted at the end. The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import django  # after the path set-up
from kombu import Connection, Exchange, Producer, Queue

from bench.celery_app import ready_file
from bench.receivers import timings
from bench.receivers.events import ORDER_PLACED, CustomerData, OrderData
from bench.receivers.tasks import noop
from events_celery import EventMetadata
from events_celery.bus.broker import declaring, topology
from events_celery.conf import BusSettings, bus_settings
from events_celery.wire import OutgoingMessage, encode_event

ROOT = Path(__file__).resolve().parents[1]  # the repository root, put on sys.path above
PUBLISH_TARGET = 1.0  # send_event / kombu with a confirm per message, at least
END_TO_END_TARGET = 0.8  # events / no-op tasks drained per second, at least
RSS_GROWTH_TARGET = 10.0  # percent, at most
WARMUP = 100  # publishes of each kind before the timed rounds (connections, declarations)


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    figure: str
    ours: str
    baseline: str
    ratio: str
    target: str
    verdict: str


def rate_row(figure: str, ours: float, baseline: float, unit: str, target: float | None) -> Row:
    """A row comparing two rates (higher is better) against a minimum ratio."""
    ratio = ours / baseline
    verdict = "" if target is None else ("ok" if ratio >= target else "MISSED")
    return Row(
        figure,
        f"{ours:,.0f} {unit}",
        f"{baseline:,.0f} {unit}",
        f"{ratio:.2f}",
        "" if target is None else f">= {target:.1f}",
        verdict,
    )


def compare_row(figure: str, ours: float, baseline: float, unit: str, digits: int = 1) -> Row:
    """A row comparing two figures without a target."""
    return Row(
        figure,
        f"{ours:.{digits}f} {unit}",
        f"{baseline:.{digits}f} {unit}",
        f"{ours / baseline:.2f}",
        "",
        "",
    )


def print_table(rows: list[Row]) -> None:
    """Print ``rows`` under a header, columns aligned."""
    header = Row("figure", "events_celery", "baseline", "ratio", "target", "result")
    table = [astuple(row) for row in (header, *rows)]
    widths = [max(len(cell) for cell in column) for column in zip(*table, strict=True)]
    for index, (first, *rest) in enumerate(table):
        cells = (cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True))
        print("  ".join([first.ljust(widths[0]), *cells]))
        if index == 0:
            print("  ".join("-" * width for width in widths))


class Worker:
    """One ``celery worker`` node of the benchmark's service: prefork, 2 pool processes.

    ``concurrency`` and ``env`` (added to the benchmark's environment) change that.
    """

    def __init__(
        self, name: str, results: Path, concurrency: int = 2, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.results = results
        self.concurrency = concurrency
        self.env = env or {}
        self.log_path = results / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_at = 0.0

    def start(self) -> None:
        """Start the node and wait until its event loop runs (:attr:`ready_at`, epoch seconds)."""
        self.results.mkdir(parents=True)
        env = {
            **os.environ,
            "BENCH_RESULTS_DIR": str(self.results),
            "PYTHONPATH": str(ROOT),
            **self.env,
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.celery_app",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    str(self.concurrency),
                    "--loglevel",
                    "WARNING",
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                    "--hostname",
                    f"bench-{os.environ['BENCH_RUN_ID']}-{self.name}@%h",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        path = ready_file(self.results, self.process.pid)
        deadline = time.monotonic() + 60.0
        while not path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{self.log_tail()}")
            time.sleep(0.02)
        self.ready_at = float(path.read_text())

    @property
    def pid(self) -> int:
        """The main process."""
        assert self.process is not None, "the worker is not started"
        return self.process.pid

    def alive(self) -> bool:
        """Whether the main process runs."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the worker's output."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def pids(self) -> list[int]:
        """The main process, then its pool processes."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:  # the process just exited
                continue
            if int(fields[1]) == self.pid:
                children.append(int(stat.parent.name))
        return [self.pid, *sorted(children)]

    def rss_kib(self) -> int:
        """VmRSS of the main process and the pool processes, summed, in KiB."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def wait_for(self, count: int) -> None:
        """Wait until ``count`` runs are recorded; raise if the worker stalls or dies."""
        deadline = time.monotonic() + 60.0 + count / 500
        while timings.count(self.results) < count:
            if not self.alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{timings.count(self.results)} of {count} runs recorded; worker log:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Warm shutdown; kill the node (main and pool processes) if it does not stop."""
        if self.process is None or not self.alive():
            return
        pids = self.pids()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in reversed(pids):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()


@contextmanager
def running_worker(name: str, results: Path) -> Iterator[Worker]:
    """A started worker (ready to consume), stopped on exit."""
    worker = Worker(name, results)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


def build_order() -> OrderData:
    """The payload every event carries (about 100 bytes of Avro)."""
    return OrderData(
        order_id=uuid.UUID("6f1c9ad0-2f4b-4c8e-9a51-0d5a3c7e8b21"),
        customer=CustomerData(
            id=uuid.UUID("0d5a3c7e-8b21-4c8e-9a51-6f1c9ad02f4b"), email="ada@ex.org"
        ),
        total=Decimal("129.90"),
        placed_at=datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=UTC),
        note="leave at the door",
    )


def wire_message(settings: BusSettings, order: OrderData) -> OutgoingMessage:
    """An event message in the library's wire format, with fresh metadata."""
    metadata = EventMetadata.create(ORDER_PLACED.event_type, source=settings.require_service_name())
    body = ORDER_PLACED.serializer.encode({"order": order})
    return encode_event(ORDER_PLACED, metadata, body, partition_key=str(order.order_id))


def publish_raw(producer: Producer, message: OutgoingMessage, exchange: str, count: int) -> None:
    """Publish ``message`` ``count`` times with kombu: the least any client can do."""
    for _ in range(count):
        producer.publish(
            message.body,
            exchange=exchange,
            routing_key=ORDER_PLACED.event_type,
            headers=message.headers,
            retry=False,
            **message.properties,
        )


def baseline_exchange(settings: BusSettings) -> Exchange:
    """The exchange kombu publishes to in the publishing baselines."""
    return Exchange(f"{settings.topic_prefix}kombu-baseline", type="topic", durable=True)


def baseline_queue(settings: BusSettings) -> Queue:
    """The queue bound to :func:`baseline_exchange` (it keeps what the baselines publish)."""
    return Queue(
        f"{settings.require_service_name()}.kombu-baseline",
        exchange=baseline_exchange(settings),
        routing_key="#",
        durable=True,
    )


@dataclass(frozen=True)
class PublishFigures:
    """Publishing rates (messages per second) of every round, by publisher."""

    rounds: dict[str, list[float]]
    events_queued: int

    def median(self, publisher: str) -> float:
        """The median round of ``publisher``."""
        return statistics.median(self.rounds[publisher])

    def spread(self, publisher: str) -> str:
        """The slowest and the fastest round of ``publisher``."""
        return f"{min(self.rounds[publisher]):,.0f}-{max(self.rounds[publisher]):,.0f}"


def timed_rounds(
    publishers: dict[str, Callable[[int], object]], rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Rates of ``rounds`` turns of each publisher; the order rotates, nobody always goes first."""
    rates: dict[str, list[float]] = {name: [] for name in publishers}
    turns = list(publishers)
    for _ in range(rounds):
        for name in turns:
            started = time.perf_counter()
            publishers[name](per_round)
            rates[name].append(per_round / (time.perf_counter() - started))
        turns.append(turns.pop(0))
    return rates


def measure_publishing(settings: BusSettings, url: str, events: int, rounds: int) -> PublishFigures:
    """Figure 1: send_event against kombu with and without confirms."""
    order = build_order()
    message = wire_message(settings, order)
    exchange = baseline_exchange(settings).name
    per_round = max(1, events // rounds)

    def send_events(count: int) -> None:
        for _ in range(count):
            ORDER_PLACED.send_event(order=order)

    with (
        Connection(url) as plain,
        Connection(url, transport_options={"confirm_publish": True}) as confirmed,
    ):
        baseline_queue(settings).bind(plain.default_channel).declare()
        unconfirmed_producer = Producer(plain.channel())
        confirmed_producer = Producer(confirmed.channel())
        send_events(WARMUP)
        publish_raw(confirmed_producer, message, exchange, WARMUP)
        rates = timed_rounds(
            {
                "send_event": send_events,
                "kombu_confirmed": lambda n: publish_raw(confirmed_producer, message, exchange, n),
            },
            rounds,
            per_round,
        )
        # Unconfirmed publishing returns while the broker still persists the burst; measured
        # last, that backlog slows none of the confirmed rounds.
        publish_raw(unconfirmed_producer, message, exchange, WARMUP)
        rates |= timed_rounds(
            {
                "kombu_unconfirmed": lambda n: publish_raw(
                    unconfirmed_producer, message, exchange, n
                )
            },
            rounds,
            per_round,
        )
    return PublishFigures(rates, events_queued=WARMUP + per_round * rounds)


@dataclass(frozen=True)
class DrainFigures:
    """One worker draining a queue, then serving a light load."""

    rate: float  # runs per second from the worker's start to the last run's end
    latencies_ms: list[float]  # send -> start of the receiver or task, at light load


def paced(count: int, interval: float, send: Callable[[], object]) -> None:
    """Call ``send`` ``count`` times, ``interval`` seconds apart."""
    next_at = time.perf_counter()
    for _ in range(count):
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send()
        next_at += interval


def measure_drain(
    name: str,
    results: Path,
    queued: int,
    send_one: Callable[[], object],
    latency_count: int,
    latency_interval: float,
) -> DrainFigures:
    """Start a worker on ``queued`` waiting runs; time the drain, then the light-load latency."""
    with running_worker(name, results) as worker:
        worker.wait_for(queued)
        last = max(t.finished for t in timings.read(results))
        rate = queued / (last - worker.ready_at)
        light_load_from = time.time()
        paced(latency_count, latency_interval, send_one)
        worker.wait_for(queued + latency_count)
    latencies = [
        (t.started - t.sent) * 1000 for t in timings.read(results) if t.sent >= light_load_from
    ]
    return DrainFigures(rate, latencies)


def publish_tasks(count: int) -> float:
    """Queue ``count`` no-op tasks; returns the publishing rate (tasks per second)."""
    started = time.perf_counter()
    for _ in range(count):
        noop.apply_async(args=(time.time(),))
    return count / (time.perf_counter() - started)


@dataclass(frozen=True)
class MemoryFigures:
    """Worker RSS (KiB) when it starts consuming and after the runs."""

    start_kib: int
    end_kib: int

    @property
    def growth(self) -> float:
        """Growth in percent."""
        return (self.end_kib - self.start_kib) / self.start_kib * 100


def measure_memory(
    name: str, results: Path, count: int, feed: Callable[[int], object]
) -> MemoryFigures:
    """Start an idle worker, note its RSS, feed it ``count`` runs, note its RSS again."""
    with running_worker(name, results) as worker:
        time.sleep(1.0)  # let the pool processes settle
        start = worker.rss_kib()
        feed(count)
        worker.wait_for(count)
        time.sleep(1.0)
        return MemoryFigures(start, worker.rss_kib())


def feed_events(settings: BusSettings, url: str, count: int) -> None:
    """Publish ``count`` events in the wire format to the topic, as fast as kombu can."""
    order = build_order()
    exchange = topology.exchange_name(settings.topic_prefix, settings.subscriptions[0].topic)
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        for _ in range(count):
            publish_raw(producer, wire_message(settings, order), exchange, 1)


def delete_run_entities(settings: BusSettings, url: str, run_id: str) -> None:
    """Delete every queue and exchange this run declared (their names hold the run id)."""
    declared = topology.service_topology(settings)
    tasks_queue = str(noop.app.conf.task_default_queue)  # Celery names its exchange alike
    queues: list[Queue] = [*declared.queues, baseline_queue(settings), Queue(tasks_queue)]
    exchanges: list[Exchange] = [
        *declared.exchanges,
        *(q.exchange for q in queues if q.exchange is not None and q.exchange.name),
        Exchange(tasks_queue),
    ]
    candidates: list[Queue | Exchange] = [*queues, *exchanges]
    entities: dict[str, Queue | Exchange] = {}
    for entity in candidates:
        entities.setdefault(f"{type(entity).__name__.lower()} {entity.name!r}", entity)
    with Connection(url) as connection:
        for what, entity in entities.items():
            assert run_id in entity.name, f"refusing to delete {what}: not of this run"
            try:
                with connection.channel() as channel:
                    entity.bind(channel).delete()
            except Exception as exc:  # report it and go on deleting the others
                print(f"could not delete {what}: {exc}", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="events (and tasks) to drain")
    parser.add_argument("--rss-events", type=int, default=100_000, help="events for the RSS figure")
    parser.add_argument("--rounds", type=int, default=10, help="publishing rounds per publisher")
    parser.add_argument("--latency-events", type=int, default=200)
    parser.add_argument("--latency-interval", type=float, default=20.0, help="milliseconds")
    parser.add_argument(
        "--ordered",
        action="store_true",
        help="only the figures of ordered subscriptions (bench/ordered.py), --events each",
    )
    parser.add_argument(
        "--broker", default="amqp://guest:guest@127.0.0.1:5672//", help="AMQP URL of RabbitMQ"
    )
    args = parser.parse_args(argv)
    if min(args.events, args.rss_events, args.rounds) < 1 or args.latency_events < 2:
        parser.error("counts must be positive, and --latency-events at least 2")
    return args


def percentile(values: list[float], p: int) -> float:
    """The ``p``-th percentile of ``values`` (inclusive method)."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def report(
    publishing: PublishFigures,
    events: DrainFigures,
    tasks: DrainFigures,
    events_rss: MemoryFigures,
    tasks_rss: MemoryFigures,
) -> list[Row]:
    """The result table."""
    rows = [
        rate_row(
            "publish, send_event vs kombu + confirm each",
            publishing.median("send_event"),
            publishing.median("kombu_confirmed"),
            "msg/s",
            PUBLISH_TARGET,
        ),
        rate_row(
            "publish, send_event vs kombu, no confirms",
            publishing.median("send_event"),
            publishing.median("kombu_unconfirmed"),
            "msg/s",
            None,
        ),
        rate_row(
            "end to end, events vs no-op tasks", events.rate, tasks.rate, "/s", END_TO_END_TARGET
        ),
    ]
    for p in (50, 99):
        rows.append(
            compare_row(
                f"latency p{p}, light load",
                percentile(events.latencies_ms, p),
                percentile(tasks.latencies_ms, p),
                "ms",
            )
        )
    mib = 1024
    rows.append(
        compare_row(
            "worker RSS at start", events_rss.start_kib / mib, tasks_rss.start_kib / mib, "MiB"
        )
    )
    rows.append(
        compare_row(
            "worker RSS after the runs", events_rss.end_kib / mib, tasks_rss.end_kib / mib, "MiB"
        )
    )
    rows.append(
        Row(
            "worker RSS growth",
            f"{events_rss.growth:+.1f} %",
            f"{tasks_rss.growth:+.1f} %",
            "",
            f"<= {RSS_GROWTH_TARGET:.0f} %",
            "ok" if events_rss.growth <= RSS_GROWTH_TARGET else "MISSED",
        )
    )
    return rows


def set_up_run(args: argparse.Namespace) -> tuple[str, BusSettings, Path]:
    """A new run id, the benchmark's Django settings checked, and a folder for its logs."""
    run_id = uuid.uuid4().hex[:8]
    os.environ["BENCH_RUN_ID"] = run_id
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["BENCH_BROKER_URL"] = args.broker
    django.setup()
    settings = bus_settings()
    settings.raise_for_problems()
    return run_id, settings, Path(tempfile.mkdtemp(prefix=f"bench-{run_id}-"))


def main(argv: list[str] | None = None) -> int:
    """Run every measurement, print the table; 1 when a target is missed."""
    args = parse_args(argv)
    if args.ordered:
        from bench.ordered import run  # it builds on this module

        return run(args)
    run_id, settings, work = set_up_run(args)
    interval = args.latency_interval / 1000
    order = build_order()
    print(
        f"run {run_id}: --events {args.events:,} --rss-events {args.rss_events:,}; "
        f"worker logs in {work}",
        flush=True,
    )
    began = time.monotonic()
    try:
        with Connection(args.broker) as connection:
            declaring.declare(connection, topology.service_topology(settings))
        print("1/4 publishing", flush=True)
        publishing = measure_publishing(settings, args.broker, args.events, args.rounds)
        print("2/4 end to end: events", flush=True)
        events = measure_drain(
            "events",
            work / "events",
            publishing.events_queued,
            lambda: ORDER_PLACED.send_event(order=order),
            args.latency_events,
            interval,
        )
        print("2/4 end to end: no-op tasks", flush=True)
        apply_async_rate = publish_tasks(publishing.events_queued)
        tasks = measure_drain(
            "tasks",
            work / "tasks",
            publishing.events_queued,
            lambda: noop.apply_async(args=(time.time(),)),
            args.latency_events,
            interval,
        )
        print("3/4 worker memory: events", flush=True)
        events_rss = measure_memory(
            "events-rss",
            work / "events-rss",
            args.rss_events,
            lambda n: feed_events(settings, args.broker, n),
        )
        print("4/4 worker memory: no-op tasks", flush=True)
        tasks_rss = measure_memory("tasks-rss", work / "tasks-rss", args.rss_events, publish_tasks)
    finally:
        from events_celery.bus.broker.retrying import retrying_publisher  # needs the apps loaded

        retrying_publisher().close()
        delete_run_entities(settings, args.broker, run_id)

    rows = report(publishing, events, tasks, events_rss, tasks_rss)
    print()
    print_table(rows)
    print()
    per_round = (publishing.events_queued - WARMUP) // args.rounds
    print(
        f"publishing: {args.rounds} rounds of {per_round:,} each; rounds ranged "
        f"{publishing.spread('send_event')} (send_event), "
        f"{publishing.spread('kombu_confirmed')} (kombu + confirm), "
        f"{publishing.spread('kombu_unconfirmed')} (kombu) msg/s\n"
        f"end to end: {publishing.events_queued:,} events and as many tasks drained; "
        f"Celery apply_async queued the tasks at {apply_async_rate:,.0f}/s\n"
        f"latency: {len(events.latencies_ms)} events and {len(tasks.latencies_ms)} tasks, "
        f"{args.latency_interval:g} ms apart, to an idle worker\n"
        f"worker RSS: main + 2 pool processes, before and after {args.rss_events:,} runs\n"
        f"took {time.monotonic() - began:.0f} s"
    )
    shutil.rmtree(work)
    return 1 if any(row.verdict == "MISSED" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
