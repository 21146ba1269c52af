"""Ordered subscriptions through faults (private RabbitMQ node): a worker SIGKILLed mid-stream
while a second one takes over, and the broker restarted mid-stream.

Real ``celery worker`` processes of one service consume a topic ordered by key; this process
publishes 50 keys x 20 steps, interleaved, in direct mode. The receiver records every run
(key, seq, node, outcome). Each scenario counts, per key: inversions (a run of a step after a
run of a later step of the same key), lost steps (no successful run) and duplicates (more
than one successful run). A duplicate is explained by the fault only when the fault cut its
first run short: the event was running, or had run but was not acknowledged yet.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.faults.node import RabbitMQNode
from tests.faults.report import report
from tests.integration.conftest import Bus, inversions, open_bus, wait_for
from tests.integration.test_ordered import ordered_config
from tests.testapp.events import STEPPED, StepData

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

TOPIC = "steps"
KEYS = 50
STEPS = 20
#: Seconds each run takes: the stream lasts a few seconds, so a fault lands in its middle.
STEP_SLEEP = "0.02"
WAIT = 120.0


@pytest.fixture
def ordered_bus(rabbitmq_node: RabbitMQNode, tmp_path: Path, settings: Any) -> Iterator[Bus]:
    """A bus on the private node; this process publishes the steps directly, keyed by key."""
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        STEPPED.event_type: {TOPIC: {"event_key_field": "step.key"}}
    }
    with open_bus(rabbitmq_node.url, tmp_path, settings, "direct") as harness:
        yield harness


def send_steps(steps: range) -> list[str]:
    """Send ``steps`` of every key, interleaved; the ids of the events sent."""
    return [
        str(STEPPED.send_event(step=StepData(key=f"k{k}", seq=seq)).metadata.id)
        for seq in steps
        for k in range(KEYS)
    ]


@attrs.frozen
class Counts:
    """What the runs of one scenario show, per key and in total."""

    inversions: dict[str, int]
    lost: list[tuple[str, int]]
    explained: dict[tuple[str, int], int]
    unexplained: dict[tuple[str, int], int]
    ok_by_id: Counter[str]


def count_runs(bus: Bus, service: str, explain: Any) -> Counts:
    """Count the recorded runs of ``service``.

    Args:
        bus: the harness holding the records.
        service: the consuming service.
        explain: ``explain(key, seq, runs_of_key)`` says whether a duplicate of step ``seq`` is
            explained by the fault.
    """
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in bus.records(service=service, receiver="stepped"):
        by_key[run["key"]].append(run)
    ok = Counter(
        (r["key"], r["seq"]) for runs in by_key.values() for r in runs if r["outcome"] == "ok"
    )
    explained, unexplained = {}, {}
    for (key, seq), times in ok.items():
        if times > 1:
            target = explained if explain(key, seq, by_key[key]) else unexplained
            target[(key, seq)] = times - 1
    return Counts(
        inversions={key: n for key, runs in by_key.items() if (n := inversions(runs))},
        lost=[(f"k{k}", s) for k in range(KEYS) for s in range(STEPS) if (f"k{k}", s) not in ok],
        explained=explained,
        unexplained=unexplained,
        ok_by_id=Counter(
            r["event_id"] for runs in by_key.values() for r in runs if r["outcome"] == "ok"
        ),
    )


def all_steps_ran(bus: Bus, service: str) -> bool:
    return len({(r["key"], r["seq"]) for r in bus.records(service=service, outcome="ok")}) == (
        KEYS * STEPS
    )


def nodes_that_ran(bus: Bus, service: str) -> Counter[str]:
    return Counter(r["node"] for r in bus.records(service=service))


def test_a_worker_killed_mid_stream_hands_its_keys_on_in_order(ordered_bus: Bus) -> None:
    service = ordered_bus.service_name("ledger")
    env = {"TEST_STEP_SLEEP": STEP_SLEEP}
    workers = [
        ordered_bus.start(service, ordered_config(), node=f"{service}-{n}", env=env, wait=False)
        for n in range(2)
    ]
    for worker in workers:
        worker.wait_ready()
    sent = send_steps(range(STEPS))
    # The first worker holds every partition until it counts two workers and hands half of
    # those that deliver events on (every few seconds): then both run steps.
    wait_for(lambda: len(nodes_that_ran(ordered_bus, service)) == 2, "both workers to run steps")
    wait_for(
        lambda: len(ordered_bus.records(service=service, outcome="ok")) >= KEYS * STEPS // 4,
        "a quarter of the steps to run",
        timeout=WAIT,
    )
    ran = nodes_that_ran(ordered_bus, service)
    killed = max(workers, key=lambda w: ran[w.node])
    killed.kill()  # SIGKILL, pool processes included, with events running and prefetched
    wait_for(lambda: all_steps_ran(ordered_bus, service), "every step to run", timeout=WAIT)

    def explain(key: str, seq: int, runs: list[dict[str, Any]]) -> bool:
        # The killed worker ran this step first and no later step of its key: it was running,
        # or finished but not acknowledged, when the worker died. A step it ran before a later
        # one of its key was acknowledged before that one started, and must not run again.
        first = next(r for r in runs if r["seq"] == seq and r["outcome"] == "ok")
        later = [r for r in runs if r["node"] == killed.node and r["seq"] > seq]
        return first["node"] == killed.node and not later

    counts = count_runs(ordered_bus, service, explain)
    row = report(
        f"ordered: worker SIGKILL mid-stream ({len(counts.explained)} step(s) it had in hand "
        "ran again)",
        sent,
        counts.ok_by_id,
        [],
        inversions=sum(counts.inversions.values()),
    )
    assert counts.inversions == {}, counts.inversions
    assert counts.lost == []
    assert counts.unexplained == {}
    assert row.duplicates == sum(counts.explained.values())
    # Each key has at most one step in hand at a time.
    assert len(counts.explained) == len({key for key, _ in counts.explained})


def test_a_broker_restart_mid_stream_keeps_every_key_in_order(
    ordered_bus: Bus, rabbitmq_node: RabbitMQNode
) -> None:
    service = ordered_bus.service_name("ledger")
    ordered_bus.start(service, ordered_config(), env={"TEST_STEP_SLEEP": STEP_SLEEP})
    sent = send_steps(range(STEPS // 2))
    wait_for(
        lambda: len(ordered_bus.records(service=service, outcome="ok")) >= KEYS * STEPS // 8,
        "some steps to run",
        timeout=WAIT,
    )
    # Publishing while the broker is away fails (direct mode): the rest is sent once it is back.
    rabbitmq_node.stop_app()
    rabbitmq_node.start_app()  # nobody is restarted: the worker reconnects
    sent += send_steps(range(STEPS // 2, STEPS))
    wait_for(lambda: all_steps_ran(ordered_bus, service), "every step to run", timeout=WAIT)

    def explain(key: str, seq: int, runs: list[dict[str, Any]]) -> bool:
        # The connection closed while this step ran (or before its acknowledgement went out):
        # the broker delivered it again. No later step of its key ran before the second run.
        positions = [n for n, r in enumerate(runs) if r["seq"] == seq]
        return all(r["seq"] == seq for r in runs[positions[0] : positions[-1] + 1])

    counts = count_runs(ordered_bus, service, explain)
    report(
        "ordered: broker restart mid-stream",
        sent,
        counts.ok_by_id,
        [],
        inversions=sum(counts.inversions.values()),
    )
    assert counts.inversions == {}, counts.inversions
    assert counts.lost == []
    assert counts.unexplained == {}
    # The restart cut at most one running step of each key short.
    assert len(counts.explained) == len({key for key, _ in counts.explained})
