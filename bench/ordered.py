"""Benchmark: an ordered subscription against the same events unordered, end to end.

Run it from the repository root, with RabbitMQ on 127.0.0.1:5672 (guest/guest)::

    .venv/bin/python bench/throughput.py --ordered                 # about a minute
    .venv/bin/python bench/throughput.py --ordered --events 2000   # a quick look

Four services of one run subscribe to the benchmark's topic, one after the other, each with a
fresh ``celery worker`` (prefork) of its own:

1. ordered by key (``order_by_key``, 4 partitions), 4 pool processes, events over 50 keys;
2. unordered, 4 pool processes, the same events: the baseline of (1). Target: ratio >= 0.7;
3. ordered, 4 pool processes, every event of one key (they run one at a time);
4. unordered, 1 pool process, the same events: the baseline of (3); no target.

For each, the worker starts idle; then this process publishes ``--events`` events in the
library's wire format with kombu (no confirms, fresh metadata each, the key in
``ce_partitionkey``), and the rate is events / (last receiver finished - first publish). The
CPU time of the worker (its main and pool processes, from ``/proc/<pid>/stat``) between the
first publish and the last run, divided by the events, is printed beside it. Every queue and
exchange of a service is deleted once its figure is taken; those of the run at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import attrs
from kombu import Connection, Exchange, Producer, Queue

from bench.receivers import timings
from bench.throughput import (
    Row,
    Worker,
    build_order,
    compare_row,
    delete_run_entities,
    print_table,
    publish_raw,
    rate_row,
    set_up_run,
    wire_message,
)
from events_celery.bus.broker import topology
from events_celery.conf import BusSettings

ORDERED_TARGET = 0.7  # ordered / unordered events per second, 4 pool processes, 50 keys
KEYS = 50
PARTITIONS = 4
SETTLE = 1.0  # seconds an idle worker gets before the events come (pool started, queues bound)


@dataclass(frozen=True)
class Figures:
    """One service's run: events per second end to end, and worker CPU time per event."""

    rate: float
    cpu_us: float


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes ``pids``, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # the process just exited
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def service_entities(service: str, topic: str) -> tuple[list[Queue], list[Exchange]]:
    """The queues and exchanges a worker of ``service`` declares for ``topic``."""
    ordered = topology.ordered_name(service, topic)
    queues = [
        f"{service}.{topic}",
        ordered,
        f"{ordered}.workers",
        *(f"{ordered}.{n}" for n in range(PARTITIONS)),
        f"{service}.events_celery.tasks",
        f"{service}.events_celery.dead_letters",
    ]
    exchanges = [ordered, f"{service}.events_celery.tasks", f"{service}.events_celery.dead_letters"]
    return [Queue(q) for q in queues], [Exchange(e) for e in exchanges]


def delete_service(url: str, service: str, topic: str, run_id: str) -> None:
    """Delete the queues and exchanges of ``service`` (they hold the run id)."""
    queues, exchanges = service_entities(service, topic)
    with Connection(url) as connection:
        for entity in [*queues, *exchanges]:
            assert run_id in entity.name, f"refusing to delete {entity.name!r}: not of this run"
            try:
                with connection.channel() as channel:
                    entity.bind(channel).delete()
            except Exception as exc:  # report it and go on deleting the others
                print(f"could not delete {entity.name!r}: {exc}", file=sys.stderr)


def measure(
    settings: BusSettings,
    url: str,
    work: Path,
    name: str,
    *,
    ordered: bool,
    concurrency: int,
    keys: int,
    events: int,
) -> Figures:
    """Start an idle worker of a service of its own, publish ``events``, time them end to end."""
    run_id = os.environ["BENCH_RUN_ID"]
    env = {"BENCH_SERVICE": name}
    if ordered:
        env["BENCH_PARTITIONS"] = str(PARTITIONS)
    orders = [attrs.evolve(build_order(), order_id=uuid.UUID(int=k + 1)) for k in range(keys)]
    messages = [wire_message(settings, orders[n % keys]) for n in range(events)]
    topic = settings.subscriptions[0].topic
    exchange = topology.exchange_name(settings.topic_prefix, topic)
    worker = Worker(name, work / name, concurrency, env)
    try:
        worker.start()
        time.sleep(SETTLE)
        with Connection(url) as connection:
            producer = Producer(connection.channel())
            cpu_before = cpu_seconds(worker.pids())
            first_publish = time.time()
            for message in messages:
                publish_raw(producer, message, exchange, 1)
            worker.wait_for(events)
            cpu = cpu_seconds(worker.pids()) - cpu_before
        last = max(t.finished for t in timings.read(worker.results))
    finally:
        worker.stop()
        delete_service(url, f"bench-{run_id}-{name}", topic, run_id)
    return Figures(events / (last - first_publish), cpu / events * 1e6)


def rows(figures: dict[str, Figures]) -> list[Row]:
    """The result table: each ordered figure against its unordered baseline."""
    table = []
    for ordered, unordered, label, target in (
        ("ordered", "unordered", f"ordered -c 4, {KEYS} keys vs unordered -c 4", ORDERED_TARGET),
        ("one-key", "unordered-c1", "ordered -c 4, one key vs unordered -c 1", None),
    ):
        ours, baseline = figures[ordered], figures[unordered]
        table.append(rate_row(f"end to end, {label}", ours.rate, baseline.rate, "/s", target))
        table.append(compare_row("  worker CPU per event", ours.cpu_us, baseline.cpu_us, "us", 0))
    return table


def run(args: argparse.Namespace) -> int:
    """Measure the four services, print the table; 1 when the target is missed."""
    run_id, settings, work = set_up_run(args)
    print(f"run {run_id}: ordered subscriptions, --events {args.events:,}; logs in {work}")
    began = time.monotonic()
    figures: dict[str, Figures] = {}
    scenarios = (
        ("ordered", True, 4, KEYS),
        ("unordered", False, 4, KEYS),
        ("one-key", True, 4, 1),
        ("unordered-c1", False, 1, 1),
    )
    try:
        for n, (name, ordered, concurrency, keys) in enumerate(scenarios, 1):
            print(f"{n}/{len(scenarios)} {name}: -c {concurrency}, {keys} key(s)", flush=True)
            figures[name] = measure(
                settings,
                args.broker,
                work,
                name,
                ordered=ordered,
                concurrency=concurrency,
                keys=keys,
                events=args.events,
            )
    finally:
        delete_run_entities(settings, args.broker, run_id)
    table = rows(figures)
    print()
    print_table(table)
    print()
    print(
        f"{args.events:,} events per service, published with kombu (no confirms) to an idle "
        f"worker; rate = events / (last receiver finished - first publish)\n"
        f"worker CPU: main + pool processes, user + system, first publish to last run\n"
        f"took {time.monotonic() - began:.0f} s"
    )
    shutil.rmtree(work)
    return 1 if any(row.verdict == "MISSED" for row in table) else 0
