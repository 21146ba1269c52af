"""Celery app of the worker that ``bench/throughput.py`` starts.

``celery -A bench.celery_app worker`` with the variables of :mod:`bench.settings` set. When the
worker's event loop starts, it writes the time to ``<BENCH_RESULTS_DIR>/ready-<pid>``, the zero
of the drain measurements.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def ready_file(results_dir: Path, pid: int) -> Path:
    """Where the worker with main process ``pid`` writes when it started consuming."""
    return results_dir / f"ready-{pid}"


@worker_ready.connect
def _write_ready_time(**kwargs: Any) -> None:
    results = os.environ.get("BENCH_RESULTS_DIR")
    if results:
        target = ready_file(Path(results), os.getpid())
        partial = target.with_suffix(".partial")
        partial.write_text(f"{time.time():.6f}\n")
        partial.replace(target)  # the benchmark never reads a half-written file
