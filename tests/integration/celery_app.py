"""Celery app of a service process started by the integration tests."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.service_settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

if os.environ.get("TEST_METRICS_PORT"):
    from events_celery.contrib.prometheus import serve_from_workers

    serve_from_workers(app, port=int(os.environ["TEST_METRICS_PORT"]), addr="127.0.0.1")

if os.environ.get("TEST_TRACING"):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())  # spans are made (and dropped: no exporter)
