"""Fixtures: one warden and one headless Chromium for the session, a logged-in page per test.

Without chromium, chromedriver or selenium every test is skipped with the reason, unless
CLAWRDEN_REQUIRE_BROWSER=1, in which case they fail.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

REQUIRE = os.environ.get("CLAWRDEN_REQUIRE_BROWSER") == "1"


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"browser tests required (CLAWRDEN_REQUIRE_BROWSER=1) but {reason}", pytrace=False)
    pytest.skip(f"browser tests: {reason}")


@pytest.fixture(scope="session")
def warden():
    try:
        w = harness.Warden()
    except RuntimeError as e:
        _unavailable(str(e))
    yield w
    w.stop()


@pytest.fixture(scope="session")
def browser():
    try:
        harness.browser_paths()
    except RuntimeError as e:
        _unavailable(str(e))
    driver = harness.start_browser()
    yield driver
    driver.quit()


@pytest.fixture
def dash(warden, browser):
    """The dashboard at desktop size, logged out, with an empty queue."""
    from dashboard import Dashboard

    warden.deny_all_pending()
    d = Dashboard(browser, warden)
    d.desktop()
    browser.get(warden.base + "/")
    browser.delete_all_cookies()
    browser.execute_script("localStorage.clear()")
    browser.get(warden.base + "/")
    yield d
    warden.deny_all_pending()
    # A test that ends on an open dialog must not leave it for the next one.
    browser.execute_script("const d = document.getElementById('confirm'); if (d && d.open) d.close();")
