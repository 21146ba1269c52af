"""Example Django project: three services (orders, billing, notifications) on events_celery."""

from config.celery import app as celery_app

__all__ = ["celery_app"]
