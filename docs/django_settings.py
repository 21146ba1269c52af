"""Minimal Django settings that let autodoc import events_celery while the docs build."""

SECRET_KEY = "docs-only-not-secret"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "events_celery",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
EVENT_BUS_SERVICE_NAME = "docs"
