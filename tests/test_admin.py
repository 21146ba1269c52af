"""The dead letters in the Django admin: list, filters, search and the read-only detail page."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from events_celery.admin import DeadLetterAdmin
from events_celery.models import DeadLetter
from tests.admin_rows import RECEIVER, order_dead_letter, poison_dead_letter

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:events_celery_deadletter_changelist"
CHANGE = "admin:events_celery_deadletter_change"


def listed(client: Any, **query: str) -> list[int]:
    """Ids of the dead letters the list page shows for a query string."""
    response = client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    return [row.pk for row in response.context["cl"].result_list]


def detail(client: Any, dead_letter: DeadLetter) -> str:
    response = client.get(reverse(CHANGE, args=[dead_letter.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_dead_letters_are_registered_on_the_default_admin_site() -> None:
    assert isinstance(admin.site._registry[DeadLetter], DeadLetterAdmin)


def test_a_project_without_the_admin_imports_the_module_and_registers_nothing() -> None:
    code = (
        "import django; from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['django.contrib.contenttypes', 'events_celery'])\n"
        "django.setup()\n"
        "import events_celery.admin\n"
        "from django.apps import apps\n"
        "print(apps.is_installed('django.contrib.admin'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_list_shows_what_an_operator_triages_by_newest_failure_first(admin_client: Any) -> None:
    older = order_dead_letter(age=timedelta(hours=2))
    newer = poison_dead_letter()
    response = admin_client.get(reverse(CHANGELIST))
    page = response.content.decode()
    assert [row.pk for row in response.context["cl"].result_list] == [newer.pk, older.pk]
    for header in ("Last failed at", "Event type", "Receiver", "Reason", "Status", "Failures"):
        assert header in page
    assert "receiver used up its attempts" in page
    assert "message cannot become an event" in page
    assert "RuntimeError: card declined &lt;script&gt;" in page  # the error, escaped
    assert "<script>alert" not in page


def test_the_list_does_not_read_bodies_headers_or_tracebacks(admin_client: Any) -> None:
    order_dead_letter()
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(reverse(CHANGELIST))
    selects = [q["sql"] for q in queries if "events_celery_dead_letter" in q["sql"]]
    assert selects
    for sql in selects:
        for column in ('"body"', '"headers"', '"traceback"'):
            assert f'"events_celery_dead_letter".{column}' not in sql


def test_a_long_error_is_cut_to_its_first_line_in_the_list() -> None:
    row = DeadLetter(error="ValueError: " + "x" * 200 + "\nsecond line")
    short = DeadLetterAdmin(DeadLetter, admin.site).short_error(row)
    assert short.startswith("ValueError: xxx")
    assert short.endswith("…")
    assert len(short) == 80


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"event_type": "org.example.test.ping.v1"}, {"poison"}),
        ({"event_type": "org.example.shop.order.placed.v1"}, {"failed", "old", "discarded"}),
        ({"receiver": RECEIVER}, {"failed", "old", "discarded"}),
        ({"receiver": ""}, {"poison"}),
        ({"reason__exact": "poison"}, {"poison"}),
        ({"status__exact": "discarded"}, {"discarded"}),
        ({"status__exact": "pending"}, {"failed", "old", "poison"}),
    ],
)
def test_each_filter_narrows_the_list(
    admin_client: Any, query: dict[str, str], expected: set[str]
) -> None:
    rows = {
        "failed": order_dead_letter(),
        "old": order_dead_letter(age=timedelta(days=30)),
        "discarded": order_dead_letter(status=DeadLetter.Status.DISCARDED),
        "poison": poison_dead_letter(),
    }
    names = {row.pk: name for name, row in rows.items()}
    assert {names[pk] for pk in listed(admin_client, **query)} == expected


def test_the_date_filter_keeps_recent_failures(admin_client: Any) -> None:
    recent = order_dead_letter()
    order_dead_letter(age=timedelta(days=30))
    changelist = admin_client.get(reverse(CHANGELIST)).context["cl"]
    (dates,) = (spec for spec in changelist.filter_specs if spec.title == "last failed at")
    (past_week,) = (c for c in dates.choices(changelist) if c["display"] == "Past 7 days")
    response = admin_client.get(reverse(CHANGELIST) + past_week["query_string"])
    assert [row.pk for row in response.context["cl"].result_list] == [recent.pk]


def test_the_filter_lists_name_the_blank_receiver(admin_client: Any) -> None:
    poison_dead_letter()
    order_dead_letter()
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "(none: the whole event)" in page
    assert RECEIVER in page


def test_searching_an_event_id_finds_exactly_its_dead_letters(admin_client: Any) -> None:
    wanted = order_dead_letter()
    order_dead_letter()
    poison_dead_letter()
    assert listed(admin_client, q=str(wanted.event_id)) == [wanted.pk]
    assert listed(admin_client, q=f"  {wanted.event_id.hex.upper()} ") == [wanted.pk]


def test_searching_text_looks_in_event_type_receiver_and_error(admin_client: Any) -> None:
    failed = order_dead_letter()
    poison = poison_dead_letter()
    assert listed(admin_client, q="charge_order") == [failed.pk]
    assert listed(admin_client, q="undecodable") == [poison.pk]
    assert listed(admin_client, q="test.ping") == [poison.pk]
    assert listed(admin_client, q="no such thing") == []


def test_the_detail_page_shows_metadata_error_traceback_and_body_size(admin_client: Any) -> None:
    row = order_dead_letter(traceback_truncated=True)
    page = detail(admin_client, row)
    assert f"<dt>ce_id</dt><dd>{row.event_id}</dd>" in page
    assert "<dt>ce_type</dt><dd>org.example.shop.order.placed.v1</dd>" in page
    assert "<dt>x-events-celery-receiver</dt>" in page
    assert page.index("<dt>ce_id</dt>") < page.index("<dt>x-events-celery-reason</dt>")
    assert "<pre>Traceback (most recent call last):" in page
    assert "RuntimeError: card declined &lt;script&gt;alert(1)&lt;/script&gt;</pre>" in page
    assert "<script>alert" not in page
    assert f"{len(row.body)} bytes" in page
    assert 'alt="True"' in page  # traceback_truncated, shown as Django's boolean icon


def test_the_detail_page_is_read_only(admin_client: Any) -> None:
    row = order_dead_letter()
    page = detail(admin_client, row)
    assert "View dead letter" in page
    assert 'name="_save"' not in page
    assert "<textarea" not in page
    response = admin_client.post(reverse(CHANGE, args=[row.pk]), {"error": "edited"})
    assert response.status_code == 403
    row.refresh_from_db()
    assert row.error.startswith("RuntimeError")


def test_dead_letters_cannot_be_added_by_hand(admin_client: Any) -> None:
    response = admin_client.get(reverse("admin:events_celery_deadletter_add"))
    assert response.status_code == 403
