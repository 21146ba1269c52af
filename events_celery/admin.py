"""The dead-letter store in the Django admin: find, read, replay and discard dead letters.

Django's admin imports this module only in projects that install ``django.contrib.admin``; a
service without the admin never loads it. :class:`DeadLetterAdmin` is registered on the default
site (``admin.site``); a project with its own ``AdminSite`` registers it there:
``my_site.register(DeadLetter, DeadLetterAdmin)``.

A dead letter is a record of what the broker delivered, so nothing in it can be edited here: the
detail page is read-only, and no row is added by hand. The actions "replay" and "discard" change
a row's status through :mod:`events_celery.bus.dead_letters.replay`.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from events_celery.bus.dead_letters.replay import (
    DecodedDeadLetter,
    decode_dead_letter,
    discard_dead_letters,
    replay_dead_letters,
)
from events_celery.models import DeadLetter
from events_celery.wire import DEAD_LETTER_PREFIX, REQUIRED_HEADERS, WIRE_HEADERS

#: Characters of the error shown in the list (its first line).
SHORT_ERROR = 80
#: Most reasons, and dead letters per reason, that an action's message names.
NAMED_IN_MESSAGE = 10


class DistinctValueFilter(admin.SimpleListFilter):
    """Filter by one of the values a text column holds, blank included under its own label."""

    field: str
    blank_label: str

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """The distinct values of the column, in order (one query, on the column's index)."""
        values = (
            model_admin.get_queryset(request)
            .order_by(self.field)
            .values_list(self.field, flat=True)
            .distinct()
        )
        return [(value, value or self.blank_label) for value in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """The rows holding the chosen value; all rows when none is chosen."""
        value = self.value()
        return queryset if value is None else queryset.filter(**{self.field: value})


class EventTypeFilter(DistinctValueFilter):
    title = "event type"
    parameter_name = field = "event_type"
    blank_label = "(no type: the message did not name one)"


class ReceiverFilter(DistinctValueFilter):
    title = "receiver"
    parameter_name = field = "receiver"
    blank_label = "(none: the whole event)"


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[DeadLetter]
else:  # the admin's classes take no type arguments at run time
    _ModelAdmin = admin.ModelAdmin


class DeadLetterAdmin(_ModelAdmin):
    """Dead letters, newest failure first, read-only; replay and discard are actions."""

    list_display = (
        "last_failed_at",
        "event_type",
        "receiver",
        "reason",
        "status",
        "failures",
        "short_error",
    )
    list_display_links = ("last_failed_at", "event_type")
    list_filter = (
        EventTypeFilter,
        ReceiverFilter,
        "reason",
        "status",
        ("last_failed_at", admin.DateFieldListFilter),
        "service",
    )
    search_fields = ("event_type", "receiver", "error")
    search_help_text = (
        "An event id finds its dead letters exactly; other text is looked for in the event type, "
        "receiver and error."
    )
    list_per_page = 50
    show_full_result_count = False  # COUNT(*) of a large table on every page is not needed
    actions = ("replay", "discard")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "event_id",
                    "event_type",
                    "service",
                    "receiver",
                    ("reason", "status", "status_changed_at"),
                    ("first_failed_at", "last_failed_at"),
                    ("failures", "attempts", "replays"),
                    "origin",
                )
            },
        ),
        ("Payload", {"fields": ("payload",)}),
        ("Error", {"fields": ("error", "traceback_text", "traceback_truncated")}),
        ("Metadata", {"fields": ("event_metadata", "metadata", "headers_truncated")}),
        ("Message", {"fields": ("content_type", "body_size", "body_truncated")}),
    )
    readonly_fields = (
        "event_id",
        "event_type",
        "service",
        "receiver",
        "reason",
        "status",
        "status_changed_at",
        "first_failed_at",
        "last_failed_at",
        "failures",
        "attempts",
        "replays",
        "origin",
        "payload",
        "error",
        "traceback_text",
        "traceback_truncated",
        "event_metadata",
        "metadata",
        "headers_truncated",
        "content_type",
        "body_size",
        "body_truncated",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        """The rows; the list reads neither bodies, headers nor tracebacks (they can be large)."""
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name == self._url_name("changelist"):
            return queryset.defer("body", "headers", "traceback")
        return queryset

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter], search_term: str
    ) -> tuple[QuerySet[DeadLetter], bool]:
        """Rows matching the search: an event id exactly, any other text in the text columns."""
        try:
            event_id = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(Q(event_id=event_id)), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        """No one adds dead letters by hand: workers write them."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        """A dead letter is never edited; the change permission allows the actions."""
        if obj is not None:
            return False
        return super().has_change_permission(request)

    @admin.display(description="error", ordering="error")
    def short_error(self, obj: DeadLetter) -> str:
        """The error's first line, cut to :data:`SHORT_ERROR` characters."""
        line = obj.error.strip().partition("\n")[0]
        return line if len(line) <= SHORT_ERROR else line[: SHORT_ERROR - 1] + "…"

    @admin.display(description="traceback")
    def traceback_text(self, obj: DeadLetter) -> SafeString | str:
        """The traceback as the worker printed it."""
        return format_html("<pre>{}</pre>", obj.traceback) if obj.traceback else "-"

    @admin.display(description="body size")
    def body_size(self, obj: DeadLetter) -> str:
        """Size of the body as received, in bytes."""
        return f"{len(obj.body or b'')} bytes"

    @admin.display(description="headers")
    def metadata(self, obj: DeadLetter) -> SafeString | str:
        """The message headers: the event's metadata first, then the dead-lettering's, then any
        other."""
        headers = obj.headers if isinstance(obj.headers, Mapping) else {}
        if not headers:
            return "-"
        return definition_list(ordered_headers(headers))

    @admin.display(description="payload")
    def payload(self, obj: DeadLetter) -> SafeString:
        """The payload decoded with the schemas this service knows now, or why it cannot be."""
        decoded = _decoded(obj)
        if decoded.payload is None:
            return format_html(
                '<p class="errornote">Cannot be decoded: {}</p>', decoded.error or "no payload"
            )
        return format_html(
            '<pre class="events-celery-payload">{}</pre>',
            json.dumps(decoded.payload, indent=2, ensure_ascii=False, default=str),
        )

    @admin.display(description="event metadata")
    def event_metadata(self, obj: DeadLetter) -> SafeString | str:
        """The event's metadata read from the headers, or why the headers do not make it."""
        decoded = _decoded(obj)
        if decoded.metadata is None:
            return "The headers do not make valid event metadata (see the headers below)."
        return definition_list((name, str(value)) for name, value in decoded.metadata.items())

    @admin.action(description="Replay the selected dead letters", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        """Start the replay of the selected rows; say which started and why others did not."""
        result = replay_dead_letters(queryset)
        if result.started:
            self.message_user(
                request,
                f"Replay started for {_count(len(result.started))}: {_ids(result.started)}.",
                messages.SUCCESS,
            )
        if result.skipped:
            self.message_user(
                request,
                f"Not replayed: {_count(len(result.skipped))}. " + _reasons(result.skipped),
                messages.WARNING,
            )

    @admin.action(description="Discard the selected dead letters", permissions=["change"])
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        """Mark the selected pending rows discarded; say how many were and why others were not."""
        selected = queryset.count()
        discarded = discard_dead_letters(queryset)
        if discarded:
            self.message_user(request, f"Discarded {_count(discarded)}.", messages.SUCCESS)
        if selected > discarded:
            self.message_user(
                request,
                f"Not discarded: {_count(selected - discarded)}, which were no longer pending "
                "(replaying, replayed or already discarded); only pending dead letters are "
                "discarded.",
                messages.WARNING,
            )

    def _url_name(self, view: str) -> str:
        meta = self.opts
        return f"{meta.app_label}_{meta.model_name}_{view}"


def _decoded(obj: DeadLetter) -> DecodedDeadLetter:
    """The row decoded once per page (each field of the page asks for it)."""
    cached: DecodedDeadLetter | None = obj.__dict__.get("_events_celery_decoded")
    if cached is None:
        cached = obj.__dict__["_events_celery_decoded"] = decode_dead_letter(obj)
    return cached


def _count(number: int) -> str:
    return f"{number} dead letter{'' if number == 1 else 's'}"


def _ids(ids: Iterable[int]) -> str:
    """``#1, #2, ...``: the first :data:`NAMED_IN_MESSAGE` ids, and how many more."""
    ids = sorted(ids)
    named = ", ".join(f"#{pk}" for pk in ids[:NAMED_IN_MESSAGE])
    more = len(ids) - NAMED_IN_MESSAGE
    return named + (f" and {more} more" if more > 0 else "")


def _reasons(skipped: Mapping[int, str]) -> str:
    """Each reason with the dead letters it applies to, the commonest first."""
    by_reason: defaultdict[str, list[int]] = defaultdict(list)
    for pk, why in skipped.items():
        by_reason[why].append(pk)
    ordered = sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0]))
    text = " ".join(f"{why} ({_ids(ids)})." for why, ids in ordered[:NAMED_IN_MESSAGE])
    rest = len(ordered) - NAMED_IN_MESSAGE
    return text + (f" {rest} other reasons." if rest > 0 else "")


def ordered_headers(headers: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Headers in reading order: the wire format's, events_celery's dead-lettering ones, others."""
    required = list(REQUIRED_HEADERS)

    def rank(key: str) -> tuple[int, int, str]:
        if key in WIRE_HEADERS:
            return (0, required.index(key) if key in required else len(required), key)
        if key.startswith(DEAD_LETTER_PREFIX):
            return (1, 0, key)
        return (2, 0, key)

    return [(key, str(headers[key])) for key in sorted(headers, key=rank)]


def definition_list(items: Iterable[tuple[str, str]]) -> SafeString:
    """An HTML ``<dl>`` of name/value pairs (escaped); multi-line values keep their lines."""
    rows = format_html_join(
        "", "<dt>{}</dt><dd>{}</dd>", ((name, _value_html(value)) for name, value in items)
    )
    return format_html('<dl class="events-celery">{}</dl>', rows)


def _value_html(value: str) -> SafeString | str:
    return format_html("<pre>{}</pre>", value) if "\n" in value else value


if apps.is_installed("django.contrib.admin"):
    admin.site.register(DeadLetter, DeadLetterAdmin)
