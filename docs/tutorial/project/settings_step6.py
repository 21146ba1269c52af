# At the end of mysite/settings.py: publish ORDER_PLACED to RabbitMQ and consume it again.
import django

CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
# This service's own Celery queue, not "celery", which every service on the broker reads.
CELERY_TASK_DEFAULT_QUEUE = "shop.celery"

# Route the event type to the topic "orders", keyed by the order's id...
EVENT_BUS_PRODUCER_CONFIG = {
    "org.example.shop.order.placed.v1": {
        "orders": {"event_key_field": "order.id", "enabled": True},
    },
}
# ...and subscribe this service's workers to every event type of that topic.
EVENT_BUS_CONSUMER_CONFIG = {"orders": {}}

# The outbox's publisher thread writes to SQLite too, which allows one writer at a time: a
# transaction takes the write lock when it begins (Django 5.1+; see check W003).
if django.VERSION >= (5, 1):
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE"}
