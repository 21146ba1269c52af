"""The baseline: a plain Celery task that does what the receiver does, and nothing else."""

from __future__ import annotations

import time

from celery import shared_task

from bench.receivers.timings import record


@shared_task(name="bench.noop", ignore_result=True)
def noop(sent: float) -> None:
    """Record when the task was sent (its argument) and when it ran."""
    record(sent, time.time())
