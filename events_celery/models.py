"""Database tables of events_celery.

:class:`OutboxMessage` is the transactional outbox: ``send_event`` writes one row per topic
in the caller's transaction, and relays publish the rows once it has committed (see
:mod:`events_celery.bus.publish.outbox`).
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

    A row whose topic has an ``event_key_field`` carries its ordering key (a digest of the
    topic and the key's value): of the rows of one ordering key, only the oldest still in the
    table may be published, or a later one together with it, in order, by the same publisher
    (see :mod:`events_celery.bus.publish.claims`).
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
    user_id = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="the broker user that publishes it (the message's user_id); blank: none",
    )
    ordering_key = models.CharField(
        max_length=40,
        null=True,
        blank=True,
        default=None,
        help_text="digest of the topic and the partition key; blank: no order kept",
    )

    class Meta:
        db_table = "events_celery_outbox"
        verbose_name = "outbox message"
        indexes = [
            models.Index(fields=["locked_until", "id"], name="events_celery_outbox_claim"),
            models.Index(fields=["ordering_key", "id"], name="events_celery_outbox_key"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> {self.topic}"


class DeadLetter(models.Model):
    """A message that will not be delivered without an operator: the dead-letter store.

    One row per service, event and receiver: a receiver that used up its attempts, gave up
    or is gone; an event whose receivers kept killing its worker, or a poison message that
    never became an event (``receiver`` blank: the whole event). Dead-lettering the same
    event and receiver again, or a replay that fails again, updates the row
    (``last_failed_at``, ``failures``, status back to pending) instead of adding one. A whole
    event gets a row each time it is dead-lettered (two messages may claim one event id).
    The row keeps the original body and headers, so it can be replayed once the cause is
    fixed (:mod:`events_celery.bus.dead_letters.replay`).
    """

    class Reason(models.TextChoices):
        RECEIVER_FAILED = "receiver-failed", "receiver used up its attempts"
        GAVE_UP = "gave-up", "receiver raised an error it gives up on"
        REDELIVERED = "redelivered", "event killed its worker too often"
        RECEIVER_GONE = "receiver-gone", "receiver no longer connected"
        POISON = "poison", "message cannot become an event"
        KEY_HELD = "key-held", "held: an earlier event of its key is a dead letter"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        REPLAYING = "replaying", "replaying"
        REPLAYED = "replayed", "replayed"
        DISCARDED = "discarded", "discarded"

    id = models.BigAutoField(primary_key=True)
    service = models.CharField(max_length=255, help_text="the service that dead-lettered it")
    event_id = models.UUIDField(
        null=True, blank=True, help_text="metadata.id, when the message carried a valid one"
    )
    event_type = models.CharField(max_length=255, blank=True, default="")
    receiver = models.CharField(
        max_length=500, blank=True, default="", help_text="the receiver's name; blank: all"
    )
    reason = models.CharField(max_length=32, choices=Reason.choices)
    error = models.TextField(blank=True, default="", help_text="what went wrong, in one text")
    traceback = models.TextField(blank=True, default="")
    traceback_truncated = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0, help_text="runs of the receiver")
    headers = models.JSONField(default=dict, help_text="the message headers, as text")
    headers_truncated = models.BooleanField(default=False)
    body = models.BinaryField(help_text="the message body as received (Avro for an event)")
    body_truncated = models.BooleanField(
        default=False, help_text="above EVENT_BUS_MAX_MESSAGE_SIZE: its start is kept"
    )
    content_type = models.CharField(max_length=255, blank=True, default="")
    origin = models.CharField(
        max_length=500, blank=True, default="", help_text="exchange/routing key it came by"
    )
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    failures = models.PositiveIntegerField(default=1, help_text="times it was dead-lettered")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    replays = models.PositiveIntegerField(default=0, help_text="replays started")

    class Meta:
        db_table = "events_celery_dead_letter"
        verbose_name = "dead letter"
        ordering = ["-last_failed_at", "-id"]
        indexes = [
            models.Index(fields=["status", "last_failed_at"], name="events_celery_dl_status"),
            models.Index(fields=["event_type"], name="events_celery_dl_type"),
            models.Index(fields=["event_id"], name="events_celery_dl_event"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "event_id", "receiver"],
                condition=models.Q(event_id__isnull=False) & ~models.Q(receiver=""),
                name="events_celery_dl_one_per_receiver",
            )
        ]

    def __str__(self) -> str:
        who = self.receiver or "all receivers"
        return f"{self.event_type or '(no type)'} {self.event_id or ''} -> {who}: {self.reason}"


class ReturnedEvent(models.Model):
    """An event of an ordered partition that came back unfinished and was started again.

    A partition's events cannot go back to the end of their queue with a count, as unordered
    ones do: later events of their key would overtake them. So before a worker (or a
    ``consume_events`` process) starts an event its queue delivered again, it counts the start
    here, and dead-letters the event once the count passes ``EVENT_BUS_MAX_REDELIVERIES``: an
    event that kills whatever runs it stops coming back. The row goes when the event is
    finished or dead-lettered.
    """

    id = models.BigAutoField(primary_key=True)
    consumer = models.CharField(
        max_length=255, help_text="the service (or consume_events group) that runs it"
    )
    event_id = models.CharField(max_length=64, help_text="metadata.id")
    starts = models.PositiveIntegerField(default=0, help_text="starts after it came back")
    last_started_at = models.DateTimeField()

    class Meta:
        db_table = "events_celery_returned_event"
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "event_id"], name="events_celery_returned_one_per_event"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_id} in {self.consumer}: started {self.starts} time(s) after a return"
