"""A real headless browser for the admin tests: Debian's chromium, driven by chromedriver.

``.ci/run`` installs both (apt packages ``chromium`` and ``chromium-driver``). Under ``CI=true``
a missing browser fails the tests; elsewhere they are skipped, saying what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Headless, and nothing a test does not need: no sandbox (CI runs as root), no GPU, no /dev/shm
#: (small in containers), no background traffic, updates, sync or first-run pages.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


def _missing() -> str | None:
    """What keeps the browser tests from running, or None."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if absent:
        return (
            f"{' and '.join(absent)} not found; install them with "
            "`apt-get install chromium chromium-driver` (.ci/run does)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed; install the test extra: pip install -e '.[test]'"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless chromium with a fresh profile, closed after the test."""
    problem = _missing()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; CI runs the browser tests and cannot skip them")
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


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

    def status_of(self, pk: int) -> str:
        """The status column of a dead letter's row in the list."""
        row = f"//input[@name='_selected_action'][@value='{pk}']/ancestor::tr"
        return str(self.find_xpath(f"{row}//td[contains(@class, 'field-status')]").text)

    def find_xpath(self, xpath: str) -> Any:
        return self.wait.until(lambda browser: browser.find_element(self.by.XPATH, xpath))

    def click_link(self, text: str, within: str = "body") -> None:
        previous = self.browser.current_url
        self.find(within).find_element(self.by.LINK_TEXT, text).click()
        self.wait.until(lambda browser: browser.current_url != previous)

    def run_action(self, action: str, *pks: int) -> list[tuple[str, str]]:
        """Tick rows, choose an action, press Go; the messages shown, as (level, text)."""
        from selenium.webdriver.support.expected_conditions import staleness_of
        from selenium.webdriver.support.ui import Select

        for pk in pks:
            self.find(f"input[name=_selected_action][value='{pk}']").click()
        Select(self.find("select[name=action]")).select_by_visible_text(action)
        page = self.find("html")
        self.find("#changelist-form button[name=index]").click()
        self.wait.until(staleness_of(page))  # the page the action's redirect led to
        self.find("ul.messagelist")
        return [
            (str(item.get_attribute("class")), item.text)
            for item in self.browser.find_elements(self.by.CSS_SELECTOR, "ul.messagelist li")
        ]

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
