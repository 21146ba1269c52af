"""Django settings of the test suite.

``EVENTS_CELERY_TEST_DB`` picks the database: ``sqlite`` (default, a file in the temp
directory, so threads and worker processes share it) or ``postgresql`` (the local server on
127.0.0.1:5432, user ``postgres``). ``TEST_DB_NAME`` makes a process started by a test use the
test database its parent created.
"""

import os
import tempfile

import django

SECRET_KEY = "events-celery-tests"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "events_celery",
    "tests.testapp",
]
# The admin, for the dead letters' pages (tests/test_admin.py, tests/admin_browser/).
ROOT_URLCONF = "tests.urls"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
# Fast password hashing: each admin test creates and logs in a superuser.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STATIC_URL = "static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
TEST_DB = os.environ.get("EVENTS_CELERY_TEST_DB", "sqlite")
if TEST_DB == "postgresql":
    _NAME = os.environ.get("TEST_DB_NAME", "events_celery")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _NAME,
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "TEST": {"NAME": f"test_{_NAME}"},
        }
    }
elif TEST_DB == "sqlite":
    _PATH = os.environ.get("TEST_DB_NAME") or os.path.join(
        tempfile.gettempdir(), f"events_celery_tests_{os.getpid()}.sqlite3"
    )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _PATH,
            "TEST": {"NAME": _PATH},
            # IMMEDIATE (Django 5.1+): the outbox publisher thread writes too (check W003).
            "OPTIONS": {"timeout": 20}
            | ({"transaction_mode": "IMMEDIATE"} if django.VERSION >= (5, 1) else {}),
        }
    }
else:
    raise ValueError(f"EVENTS_CELERY_TEST_DB is {TEST_DB!r}; use 'sqlite' or 'postgresql'")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EVENT_BUS_SERVICE_NAME = "tests"
CELERY_BROKER_URL = "memory://"
CELERY_TASK_DEFAULT_QUEUE = "tests.celery"
LOGGING_CONFIG = None
