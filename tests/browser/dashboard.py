"""Page helpers for the dashboard: log in, find queue cards, wait for things."""

import time

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

DESKTOP = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
PHONE = {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True}


class Dashboard:
    def __init__(self, driver, warden):
        self.d = driver
        self.w = warden

    # ----- viewport -----
    def desktop(self):
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", DESKTOP)
        self.d.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})

    def phone(self):
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        self.d.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})

    # ----- waiting -----
    def wait(self, condition, timeout=10, message=""):
        return WebDriverWait(self.d, timeout, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)

    def visible(self, css, timeout=10):
        return self.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, css)), timeout,
                         f"{css} not visible within {timeout}s")

    def find(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def fetch(self, method, path, body=None):
        """A same-origin fetch from the page (with the session cookie): [status, text]."""
        return self.d.execute_async_script(
            """
            const [method, path, body, done] = arguments;
            const init = {method, credentials: 'same-origin', referrerPolicy: 'same-origin', headers: {}};
            if (body !== null) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
            fetch(path, init).then(async r => done([r.status, await r.text()]), e => done([0, String(e)]));
            """,
            method, path, body,
        )

    # ----- session -----
    def login(self, token=None):
        self.visible("#login-token").clear()
        self.find("#login-token").send_keys(token or self.w.admin_token)
        self.find("#login-form button[type=submit]").click()
        self.visible("#app")
        self.wait(lambda d: self.find("#conn").text.endswith("live"), 10, "event stream not live")

    def go(self, tab):
        self.find(f'.tabs a[data-tab="{tab}"]').click()
        self.visible(f"#view-{tab}")

    # ----- queue -----
    def card(self, request_id, timeout=10):
        return self.visible(f'#queue li[data-id="{request_id}"]', timeout)

    def toast(self, contains, timeout=10):
        self.wait(lambda d: contains in self.find("#toast").text, timeout,
                  f"no toast containing {contains!r}; last: {self.find('#toast').text!r}")
        return self.find("#toast").text

    def confirm_dialog(self, timeout=5):
        self.wait(lambda d: self.js("return document.getElementById('confirm').open"), timeout,
                  "the confirmation dialog did not open")
        return self.find("#confirm")

    def settle(self, seconds=0.3):
        # Only used before screenshots, so that CSS transitions have finished.
        time.sleep(seconds)
