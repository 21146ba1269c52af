"""Django settings of the test suite."""

SECRET_KEY = "events-celery-tests"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "events_celery",
    "tests.testapp",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EVENT_BUS_SERVICE_NAME = "tests"
CELERY_BROKER_URL = "memory://"
LOGGING_CONFIG = None
