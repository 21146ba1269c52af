"""The row the outbox benchmark's transactions save beside their event."""

from __future__ import annotations

from django.db import models


class PlacedOrder(models.Model):
    """An order as a service would save it when it is placed."""

    order_id = models.UUIDField()
    email = models.CharField(max_length=200)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    placed_at = models.DateTimeField()

    def __str__(self) -> str:
        return str(self.order_id)
