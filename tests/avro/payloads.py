"""Payload classes shared by the Avro tests.

This module uses ``from __future__ import annotations`` on purpose: every annotation here is a
string until the serializer resolves it.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

import attrs

EVENT_TYPE = "org.example.shop.order.placed.v1"


class CourseKey:
    """An opaque key type of the kind a custom codec carries (like opaque-keys' CourseKey)."""

    def __init__(self, org: str, course: str, run: str) -> None:
        self.org, self.course, self.run = org, course, run

    @classmethod
    def from_string(cls, text: str) -> CourseKey:
        org, course, run = text.removeprefix("course-v1:").split("+")
        return cls(org, course, run)

    def __str__(self) -> str:
        return f"course-v1:{self.org}+{self.course}+{self.run}"

    def __repr__(self) -> str:
        return f"CourseKey({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CourseKey) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class Mode(enum.Enum):
    AUDIT = "audit"
    VERIFIED = "verified"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class UserData:
    id: UUID
    username: str
    email: str | None = None


@attrs.frozen
class LineData:
    sku: str
    quantity: int
    price: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})


@attrs.frozen
class OrderData:
    order_id: UUID
    user: UserData
    total: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})
    lines: list[LineData] = attrs.Factory(list)
    note: str | None = None


@attrs.frozen
class OrderV1:
    """An order as its first version sends it; OrderV2 and BreakingOrderV2 change it."""

    order_id: UUID
    total: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})


@attrs.frozen
class OrderV2:
    """OrderV1 with fields added with defaults: each version reads the other's data."""

    order_id: UUID
    total: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})
    note: str | None = None
    lines: list[str] = attrs.Factory(list)


@attrs.frozen
class BreakingOrderV2:
    """OrderV1 with a field added without a default: a reader of it cannot read OrderV1 data."""

    order_id: UUID
    total: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})
    coupon: str


@attrs.frozen
class AddressData:
    street: str
    zip_code: str | None = None


@attrs.frozen
class KitchenSinkData:
    """One field of every supported kind."""

    flag: bool
    count: int
    ratio: float
    name: str
    blob: bytes
    at: datetime
    day: date
    ident: UUID
    amount: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})
    big: Decimal = attrs.field(metadata={"precision": 38, "scale": 10})
    whole: Decimal = attrs.field(metadata={"precision": 5, "scale": 0})
    mode: Mode
    level: Level
    tags: list[str]
    scores: dict[str, float]
    home: AddressData
    work: AddressData | None
    history: list[AddressData]
    nested: dict[str, list[AddressData | None]]
    when: list[datetime | None]
    maybe_amount: Decimal | None = attrs.field(default=None, metadata={"precision": 6, "scale": 3})
    maybe_mode: Mode | None = None
    maybe_tags: list[str] | None = None
    maybe_map: dict[str, int] | None = None
