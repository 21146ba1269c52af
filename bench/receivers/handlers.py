"""The receiver the benchmark's worker runs: it records when it ran, and nothing else."""

from __future__ import annotations

import time
from typing import Any

from django.dispatch import receiver

from bench.receivers.events import ORDER_PLACED
from bench.receivers.timings import record
from events_celery import EventMetadata


@receiver(ORDER_PLACED)
def on_order_placed(metadata: EventMetadata, from_event_bus: bool, **kwargs: Any) -> None:
    """Record the event's send time (its metadata) and when this receiver ran."""
    started = time.time()
    if from_event_bus:  # the benchmark's own process sends the events too; only count the worker
        record(metadata.time.timestamp(), started)
