"""The Celery app of every service: ``celery -A config worker`` starts a service's worker.

Which service a process plays is its ``DJANGO_SETTINGS_MODULE``. events_celery adds its
event consumer to the worker when the settings subscribe to a topic.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.orders")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
