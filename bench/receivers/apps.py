"""The Django app of the benchmark's event, receiver and no-op task."""

from __future__ import annotations

from django.apps import AppConfig


class BenchReceiversConfig(AppConfig):
    """Connects the benchmark's receiver."""

    name = "bench.receivers"
    label = "bench_receivers"

    def ready(self) -> None:
        """Connect the receivers (importing the module connects them)."""
        from bench.receivers import handlers  # noqa: F401
