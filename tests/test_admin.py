"""The dead letters in the Django admin: list, filters, search, the detail page, the actions."""

from __future__ import annotations

import html
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from events_celery.admin import DeadLetterAdmin
from events_celery.bus.consume.tasks import RUN_RECEIVER
from events_celery.models import DeadLetter
from tests.admin_rows import ERROR, RECEIVER, TOPIC, order_dead_letter, poison_dead_letter
from tests.task_queue import take_tasks
from tests.testapp.events import ORDER_PLACED, PING

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:events_celery_deadletter_changelist"
CHANGE = "admin:events_celery_deadletter_change"


@pytest.fixture(autouse=True)
def service(settings: Any) -> Iterator[str]:
    """This test's service on memory://, subscribed to ORDER_PLACED; its task queue is emptied."""
    name = f"admin-{uuid.uuid4().hex[:8]}"
    settings.EVENT_BUS_SERVICE_NAME = name
    settings.CELERY_BROKER_URL = "memory://"
    settings.EVENT_BUS_CONSUMER_CONFIG = {TOPIC: {"event_types": [ORDER_PLACED.event_type]}}
    yield name
    take_tasks(name)


def run_action(client: Any, action: str, rows: list[DeadLetter]) -> list[tuple[str, str]]:
    """Run an action of the list on rows; the messages the page shows, as (level, text)."""
    response = client.post(
        reverse(CHANGELIST),
        {"action": action, ACTION_CHECKBOX_NAME: [row.pk for row in rows]},
        follow=True,
    )
    assert response.status_code == 200
    return [(m.level_tag, m.message) for m in response.context["messages"]]


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
    assert "receiver failed after 3 attempt(s): RuntimeError: card" in page  # the error, escaped
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


def test_the_detail_page_shows_the_decoded_payload_readably(admin_client: Any) -> None:
    row = order_dead_letter(note="leave <b>at the door</b>")
    page = detail(admin_client, row)
    shown = page[page.index('<pre class="events-celery-payload">') :]
    shown = shown[: shown.index("</pre>")]
    assert "&lt;b&gt;at the door&lt;/b&gt;" in shown  # escaped
    payload = html.unescape(shown)
    assert '"email": "ada@example.org"' in payload
    assert '"total": "12.50"' in payload
    assert '"mode": "VERIFIED"' in payload
    assert '"note": "leave <b>at the door</b>"' in payload
    assert '{\n  "order": {\n    "id": "9f1c1b0e-8a5d-4c38-9d4e-2f0b7d5c1a11",' in payload


def test_the_detail_page_says_why_a_payload_cannot_be_decoded(admin_client: Any) -> None:
    page = detail(admin_client, poison_dead_letter())
    assert "Cannot be decoded: undecodable Avro body" in page
    assert "events-celery-payload" not in page


def test_the_detail_page_of_a_message_without_metadata_says_so(admin_client: Any) -> None:
    row = poison_dead_letter()
    DeadLetter.objects.filter(pk=row.pk).update(headers={"ce_type": PING.event_type}, event_id=None)
    page = detail(admin_client, row)
    assert "The headers do not make valid event metadata" in page
    assert "Cannot be decoded: " in page


def test_the_detail_page_says_a_cut_body_cannot_be_decoded(admin_client: Any) -> None:
    page = detail(admin_client, order_dead_letter(body_truncated=True))
    assert "Cannot be decoded: the body was too large to keep whole" in page


def test_the_detail_page_shows_metadata_error_traceback_and_body_size(admin_client: Any) -> None:
    row = order_dead_letter(traceback_truncated=True)
    page = detail(admin_client, row)
    assert f"<dt>id</dt><dd>{row.event_id}</dd>" in page  # the decoded metadata
    assert "<dt>source</dt><dd>orders</dd>" in page
    assert f"<dt>ce_id</dt><dd>{row.event_id}</dd>" in page  # the headers as stored
    assert "<dt>ce_type</dt><dd>org.example.shop.order.placed.v1</dd>" in page
    assert page.index("<dt>ce_id</dt>") < page.index("<dt>schemafingerprint</dt>")
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
    assert row.error == ERROR


def test_dead_letters_cannot_be_added_by_hand(admin_client: Any) -> None:
    response = admin_client.get(reverse("admin:events_celery_deadletter_add"))
    assert response.status_code == 403


def test_replay_starts_each_pending_dead_letter_and_says_why_others_did_not(
    admin_client: Any, service: str
) -> None:
    pending = order_dead_letter()
    discarded = order_dead_letter(status=DeadLetter.Status.DISCARDED)

    shown = run_action(admin_client, "replay", [pending, discarded])

    assert shown == [
        ("success", f"Replay started for 1 dead letter: #{pending.pk}."),
        ("warning", f"Not replayed: 1 dead letter. already discarded (#{discarded.pk})."),
    ]
    [(task, args)] = take_tasks(service)
    assert task == RUN_RECEIVER
    item, receiver, attempt = args
    assert (item["dead_letter"], receiver, attempt) == (pending.pk, RECEIVER, 1)
    pending.refresh_from_db()
    assert (pending.status, pending.replays) == ("replaying", 1)


def test_replaying_twice_names_the_replay_already_running(admin_client: Any, service: str) -> None:
    row = order_dead_letter()
    run_action(admin_client, "replay", [row])

    [(level, text)] = run_action(admin_client, "replay", [row])

    assert level == "warning"
    assert text.startswith("Not replayed: 1 dead letter. already replaying (since ")
    assert len(take_tasks(service)) == 1


def test_discard_marks_pending_dead_letters_and_counts_the_others(admin_client: Any) -> None:
    pending = [order_dead_letter(), poison_dead_letter()]
    replayed = order_dead_letter(status=DeadLetter.Status.REPLAYED)

    shown = run_action(admin_client, "discard", [*pending, replayed])

    assert shown[0] == ("success", "Discarded 2 dead letters.")
    assert shown[1][0] == "warning"
    assert shown[1][1].startswith("Not discarded: 1 dead letter, which were no longer pending")
    statuses = dict(DeadLetter.objects.values_list("pk", "status"))
    assert statuses == {
        pending[0].pk: "discarded",
        pending[1].pk: "discarded",
        replayed.pk: "replayed",
    }


def test_discarding_every_row_of_a_filter_takes_a_bounded_number_of_queries(
    admin_client: Any, django_assert_max_num_queries: Any
) -> None:
    first = order_dead_letter()
    DeadLetter.objects.bulk_create(
        DeadLetter(
            service=first.service,
            event_id=uuid.uuid4(),
            event_type=first.event_type,
            receiver=first.receiver,
            reason=first.reason,
            headers=first.headers,
            body=first.body,
            first_failed_at=first.first_failed_at,
            last_failed_at=first.last_failed_at,
        )
        for _ in range(1_200)
    )
    with django_assert_max_num_queries(20):
        response = admin_client.post(
            reverse(CHANGELIST) + f"?receiver={RECEIVER}",
            {"action": "discard", "select_across": "1", ACTION_CHECKBOX_NAME: [first.pk]},
        )
    assert response.status_code == 302
    assert DeadLetter.objects.filter(status="discarded").count() == 1_201


def test_the_actions_need_the_change_permission(client: Any, django_user_model: Any) -> None:
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(viewer)
    row = order_dead_letter()
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert "Replay the selected" not in response.content.decode()
    assert detail(client, row)
    assert run_action(client, "discard", [row]) == []
    row.refresh_from_db()
    assert row.status == "pending"
