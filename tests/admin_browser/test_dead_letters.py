"""An operator works with dead letters in the admin, in a real headless chromium."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin_rows import order_dead_letter, poison_dead_letter

LIST = "/admin/events_celery/deadletter/"


class AdminPages:
    """The admin as an operator sees it: pages, links, forms, the rows of the list."""

    def __init__(self, browser: Any, url: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.browser, self.url, self.by = browser, url, By
        self.wait = WebDriverWait(browser, 30)

    def log_in(self, username: str, password: str) -> None:
        self.browser.get(f"{self.url}/admin/login/?next={LIST}")
        self.find("#id_username").send_keys(username)
        self.find("#id_password").send_keys(password)
        self.find("#login-form input[type=submit]").click()
        self.wait.until(lambda _: self.browser.current_url.endswith(LIST))

    def open_list(self) -> None:
        self.browser.get(f"{self.url}{LIST}")

    def find(self, css: str) -> Any:
        return self.wait.until(lambda browser: browser.find_element(self.by.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def rows(self) -> list[str]:
        """The text of each row of the list (after the page has loaded)."""
        self.find("#changelist")
        return [
            row.text
            for row in self.browser.find_elements(self.by.CSS_SELECTOR, "#result_list tbody tr")
        ]

    def click_link(self, text: str, within: str = "body") -> None:
        previous = self.browser.current_url
        self.find(within).find_element(self.by.LINK_TEXT, text).click()
        self.wait.until(lambda browser: browser.current_url != previous)

    def search(self, term: str) -> None:
        from selenium.webdriver.common.keys import Keys

        previous = self.browser.current_url
        box = self.find("#searchbar")
        box.clear()
        box.send_keys(term, Keys.ENTER)
        self.wait.until(lambda browser: browser.current_url != previous)


@pytest.fixture
def pages(live_server: Any, admin_user: Any, browser: Any) -> AdminPages:
    """The admin in the browser, logged in as a superuser through the login form."""
    admin_pages = AdminPages(browser, live_server.url)
    admin_pages.log_in("admin", "password")
    return admin_pages


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
    assert "tests.testapp.receivers.charge_order" in row
    assert "RuntimeError: card declined <script>alert(1)</script>" in row  # shown as text

    pages.click_link(pages.find("#result_list tbody tr th a").text)
    assert pages.text("#content h1") == "View dead letter"
    assert str(wanted.event_id) in pages.text("dl.events-celery")
    assert pages.text("div.field-traceback_text pre").startswith("Traceback (most recent call")
    assert f"{len(wanted.body)} bytes" in pages.text("div.field-body_size")
