"""Payload validation: every wrong value is caught before encoding, and named precisely."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import attrs
import pytest

from events_celery.avro import PayloadSerializer
from events_celery.exceptions import PayloadValidationError

from .payloads import EVENT_TYPE, LineData, Mode, OrderData, UserData

USER = UserData(id=UUID(int=1), username="ada")


def order(**changes: Any) -> OrderData:
    fields: dict[str, Any] = {"order_id": UUID(int=2), "user": USER, "total": Decimal("12.50")}
    return OrderData(**{**fields, **changes})


def invalid(data: dict[str, Any], payload: dict[str, Any]) -> PayloadValidationError:
    """The error validating ``payload`` raises (fails the test if it raises none)."""
    with pytest.raises(PayloadValidationError) as info:
        PayloadSerializer(EVENT_TYPE, data).validate(payload)
    return info.value


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (int, 0),
        (float, 0.0),
        (str, ""),
        (bool, False),
        (bytes, b""),
        (list[int], []),
        (dict[str, int], {}),
        (int | None, None),
        (float, 0),
    ],
)
def test_falsy_values_are_not_missing(annotation: Any, value: Any) -> None:
    PayloadSerializer(EVENT_TYPE, {"value": annotation}).validate({"value": value})


def test_missing_kwarg_is_reported_by_name() -> None:
    error = invalid({"order": OrderData, "count": int}, {"count": 1})
    assert error.field == "order"
    assert str(error).startswith(f"{EVENT_TYPE}: field 'order' is missing")


def test_extra_kwarg_is_reported_by_name() -> None:
    error = invalid({"count": int}, {"count": 1, "colour": "red"})
    assert error.field == "colour"
    assert "not a field of this event" in str(error)


def test_wrong_type_message_names_event_field_expected_and_actual() -> None:
    error = invalid({"order": OrderData}, {"order": order(total="12.5")})
    assert str(error) == (
        "org.example.shop.order.placed.v1: field 'order.total' expects Decimal, got str ('12.5')"
    )
    assert (error.event_type, error.field) == (EVENT_TYPE, "order.total")
    assert error.problem == "expects Decimal, got str ('12.5')"


def test_nested_uuid_given_as_str_fails_validation() -> None:
    bad_user = UserData(id="00000000-0000-0000-0000-000000000001", username="ada")  # type: ignore[arg-type]
    error = invalid({"order": OrderData}, {"order": order(user=bad_user)})
    assert error.field == "order.user.id"
    assert "expects UUID, got str" in error.problem


def test_list_item_is_named_by_its_index() -> None:
    lines = [LineData("a", 1, Decimal(1)), LineData("b", "2", Decimal(1))]  # type: ignore[arg-type]
    error = invalid({"order": OrderData}, {"order": order(lines=lines)})
    assert error.field == "order.lines[1].quantity"


def test_map_value_is_named_by_its_key() -> None:
    error = invalid({"scores": dict[str, int]}, {"scores": {"a": 1, "b": "x"}})
    assert error.field == "scores['b']"


def test_map_keys_must_be_str() -> None:
    error = invalid({"scores": dict[str, int]}, {"scores": {1: 1}})
    assert error.problem == "expects dict with str keys, got key int (1)"


@pytest.mark.parametrize(("annotation", "value"), [(int, True), (float, False), (int | None, True)])
def test_bool_is_not_accepted_as_a_number(annotation: Any, value: Any) -> None:
    assert "got bool" in invalid({"value": annotation}, {"value": value}).problem


def test_int_is_not_accepted_as_bool() -> None:
    assert invalid({"flag": bool}, {"flag": 1}).problem == "expects bool, got int (1)"


def test_int_is_accepted_as_float() -> None:
    PayloadSerializer(EVENT_TYPE, {"ratio": float}).validate({"ratio": 3})


def test_int_too_large_for_a_double_is_rejected() -> None:
    assert "too large" in invalid({"ratio": float}, {"ratio": 10**400}).problem


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_int_outside_signed_64_bits_is_rejected(value: int) -> None:
    assert "64-bit" in invalid({"count": int}, {"count": value}).problem


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_int_at_the_64_bit_limits_is_valid(value: int) -> None:
    PayloadSerializer(EVENT_TYPE, {"count": int}).validate({"count": value})


def test_naive_datetime_is_rejected() -> None:
    error = invalid({"at": datetime}, {"at": datetime(2024, 1, 1)})
    assert "timezone-aware" in error.problem
    assert "timezone.utc" in error.problem


def test_aware_datetime_in_any_zone_is_valid() -> None:
    zone = timezone(timedelta(hours=-3))
    PayloadSerializer(EVENT_TYPE, {"at": datetime}).validate(
        {"at": datetime(2024, 1, 1, tzinfo=zone)}
    )


def test_datetime_that_does_not_exist_in_utc_is_rejected() -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert "exists in UTC" in invalid({"at": datetime}, {"at": early}).problem


def test_datetime_is_not_a_date() -> None:
    error = invalid({"day": date}, {"day": datetime(2024, 1, 1, tzinfo=UTC)})
    assert error.problem.startswith("expects date, got datetime")


@attrs.frozen
class PriceData:
    amount: Decimal = attrs.field(metadata={"precision": 5, "scale": 2})


@pytest.mark.parametrize("text", ["1.234", "1000.00", "1E+3", "NaN", "Infinity", "-1000"])
def test_decimal_that_does_not_fit_is_rejected_never_rounded(text: str) -> None:
    error = invalid({"price": PriceData}, {"price": PriceData(Decimal(text))})
    assert error.field == "price.amount"
    assert "at most 5 digits, 2 after the point" in error.problem


@pytest.mark.parametrize("text", ["999.99", "-999.99", "0", "1.5", "1.500", "1E+2", "-0"])
def test_decimal_that_fits_is_valid(text: str) -> None:
    PayloadSerializer(EVENT_TYPE, {"price": PriceData}).validate(
        {"price": PriceData(Decimal(text))}
    )


def test_float_is_not_a_decimal() -> None:
    error = invalid({"price": PriceData}, {"price": PriceData(1.5)})  # type: ignore[arg-type]
    assert error.problem == "expects Decimal, got float (1.5)"


def test_none_is_rejected_where_the_type_is_not_optional() -> None:
    assert invalid({"name": str}, {"name": None}).problem == "expects str, got None"


def test_none_is_valid_where_the_type_is_optional() -> None:
    PayloadSerializer(EVENT_TYPE, {"order": OrderData}).validate({"order": order(note=None)})


def test_value_of_the_wrong_type_in_an_optional_is_rejected() -> None:
    error = invalid({"order": OrderData}, {"order": order(note=5)})
    assert (error.field, error.problem) == ("order.note", "expects str or None, got int (5)")


def test_enum_value_must_be_a_member() -> None:
    assert invalid({"mode": Mode}, {"mode": "AUDIT"}).problem == "expects Mode, got str ('AUDIT')"


def test_tuple_is_not_a_list() -> None:
    assert invalid({"tags": list[str]}, {"tags": ("a",)}).problem.startswith(
        "expects list, got tuple"
    )


def test_record_of_another_class_is_rejected() -> None:
    error = invalid({"order": OrderData}, {"order": USER})
    assert error.problem.startswith("expects OrderData, got UserData")


def test_subclass_of_a_payload_class_is_rejected_with_a_reason() -> None:
    @attrs.frozen
    class SpecialUser(UserData):
        level: int = 0

    error = invalid({"user": UserData}, {"user": SpecialUser(UUID(int=1), "ada")})
    assert "subclass" in error.problem


def test_long_values_are_truncated_in_messages() -> None:
    error = invalid({"count": int}, {"count": "x" * 10_000})
    assert len(str(error)) < 200
    assert "..." in error.problem


def test_string_with_a_lone_surrogate_is_rejected() -> None:
    assert "UTF-8" in invalid({"name": str}, {"name": "bad \ud800"}).problem


def test_non_ascii_text_is_valid() -> None:
    PayloadSerializer(EVENT_TYPE, {"name": str}).validate({"name": "Zoë 日本 🎉"})
