"""An operator works with dead letters in the admin, in a real headless chromium."""

from __future__ import annotations

import json

import pytest

from tests.admin_browser.conftest import AdminPages
from tests.admin_rows import order_dead_letter, poison_dead_letter

pytestmark = pytest.mark.browser


def test_an_operator_filters_searches_and_opens_a_dead_letter(pages: AdminPages) -> None:
    wanted = order_dead_letter()
    order_dead_letter(note="another order")
    poison_dead_letter()
    pages.open_list()
    assert len(pages.rows()) == 3

    pages.click_link("message cannot become an event", within="#changelist-filter")
    (poison,) = pages.rows()
    assert "org.example.test.ping.v1" in poison
    assert "undecodable Avro body" in poison

    pages.open_list()
    pages.search(str(wanted.event_id))
    (row,) = pages.rows()
    assert "tests.admin.charge_order" in row
    assert "3 attempt(s): RuntimeError: card declined <script>" in row  # as text

    pages.click_link(pages.find("#result_list tbody tr th a").text)
    assert pages.text("#content h1") == "View dead letter"
    payload = json.loads(pages.text("pre.events-celery-payload"))
    assert payload["order"]["customer"]["email"] == "ada@example.org"
    assert payload["order"]["note"] == "gift wrap"
    assert str(wanted.event_id) in pages.text("div.field-event_metadata")
    assert pages.text("div.field-traceback_text pre").startswith("Traceback (most recent call")
    assert f"{len(wanted.body)} bytes" in pages.text("div.field-body_size")
