"""Events the test suite sends: a small shop."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import attrs

from events_celery import EventSignal


class Mode(enum.Enum):
    AUDIT = "audit"
    VERIFIED = "verified"


@attrs.frozen
class CustomerData:
    id: UUID
    email: str


@attrs.frozen
class OrderData:
    id: UUID
    customer: CustomerData
    total: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})
    placed_at: datetime
    mode: Mode = Mode.AUDIT
    note: str | None = None


ORDER_PLACED = EventSignal("org.example.shop.order.placed.v1", data={"order": OrderData})
PING = EventSignal("org.example.test.ping.v1", data={"n": int})
FLAKY = EventSignal("org.example.test.flaky.v1", data={"n": int})
DOOMED = EventSignal("org.example.test.doomed.v1", data={"n": int})
SLOW = EventSignal("org.example.test.slow.v1", data={"n": int})
CRASHING = EventSignal("org.example.test.crashing.v1", data={"n": int})
PICKY = EventSignal("org.example.test.picky.v1", data={"n": int})


@attrs.frozen
class StepData:
    """One step of a thing identified by ``key``; ``seq`` counts its steps from 0."""

    key: str
    seq: int


STEPPED = EventSignal("org.example.test.stepped.v1", data={"step": StepData})
