from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("events_celery", "0005_outbox_ordering_key"),
    ]

    operations = [
        migrations.CreateModel(
            name="ReturnedEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "consumer",
                    models.CharField(
                        help_text="the service (or consume_events group) that runs it",
                        max_length=255,
                    ),
                ),
                ("event_id", models.CharField(help_text="metadata.id", max_length=64)),
                (
                    "starts",
                    models.PositiveIntegerField(default=0, help_text="starts after it came back"),
                ),
                ("last_started_at", models.DateTimeField()),
            ],
            options={
                "db_table": "events_celery_returned_event",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("consumer", "event_id"),
                        name="events_celery_returned_one_per_event",
                    )
                ],
            },
        ),
    ]
