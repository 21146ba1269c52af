# At the end of mysite/settings.py: events_celery and the shop app.
INSTALLED_APPS += ["events_celery", "shop"]

# The source of every event this project sends.
EVENT_BUS_SERVICE_NAME = "shop"

# Emails are printed instead of sent: a fresh project has no SMTP server to talk to.
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
