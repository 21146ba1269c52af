"""Database tables of events_celery.

:class:`OutboxMessage` is the transactional outbox: ``send_event`` writes one row per topic
in the caller's transaction, and relays publish the rows once it has committed (see
:mod:`events_celery.bus.outbox`).
"""

from __future__ import annotations

from django.db import models


class OutboxMessage(models.Model):
    """One encoded event message waiting to be published to a topic.

    The row holds everything the broker needs, so publishing it reads nothing else: the Avro
    body, the headers of the wire format, and the topic. A row belongs to whoever holds its
    lease (``locked_by`` until ``locked_until``): first the process that wrote it, which
    publishes it right after the commit; once the lease has run out, any relay may claim it.
    A row is deleted once the broker has confirmed its message.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(help_text="metadata.id of the event (the message id)")
    event_type = models.CharField(max_length=255, help_text="the routing key")
    topic = models.CharField(max_length=255)
    headers = models.TextField(help_text="message headers, a JSON object of strings")
    body = models.BinaryField(help_text="the Avro payload")
    created_at = models.DateTimeField(help_text="the event's time (metadata.time)")
    locked_until = models.DateTimeField(help_text="end of the current owner's lease")
    locked_by = models.CharField(max_length=64, help_text="the process or relay that owns it")
    attempts = models.PositiveIntegerField(
        default=0, help_text="publishes the broker refused (nack or return)"
    )
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "events_celery_outbox"
        verbose_name = "outbox message"
        indexes = [models.Index(fields=["locked_until", "id"], name="events_celery_outbox_claim")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> {self.topic}"
