"""The dashboard, driven in headless Chromium against a real warden and real shim calls."""

import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

# The README's screenshots are refreshed only on request (CLAWRDEN_SCREENSHOTS=1), so an
# ordinary test run leaves the tree clean; otherwise they go to a temporary directory.
if os.environ.get("CLAWRDEN_SCREENSHOTS") == "1":
    SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
else:
    SCREENSHOTS = Path(tempfile.mkdtemp(prefix="clawrden-screenshots-"))


def test_pages_carry_strict_csp_and_no_framing(warden):
    for path, ctype in (("/", "text/html; charset=utf-8"), ("/app.js", "text/javascript; charset=utf-8"),
                        ("/style.css", "text/css; charset=utf-8"), ("/icon.svg", "image/svg+xml")):
        status, body, headers = warden.raw("GET", path)
        assert status == 200, path
        assert headers["Content-Type"] == ctype
        assert headers["Content-Security-Policy"] == (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        etag = headers["ETag"]
        status, _, _ = warden.raw("GET", path, headers={"If-None-Match": etag})
        assert status == 304, path
    _, html, _ = warden.raw("GET", "/")
    assert "<script src=\"/app.js\" defer></script>" in html
    assert "style=" not in html and "<style" not in html


def test_login_sets_httponly_strict_cookie_and_logout_ends_it(dash, warden):
    dash.login()
    assert dash.find("#who").text == "admin (admin)"
    cookie = dash.d.get_cookie("clawrden_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain HTTP on loopback; Secure behind a trusted TLS proxy
    assert "clawrden_session" not in dash.js("return document.cookie")
    # The cookie alone, from another origin, cannot change anything.
    status, body, _ = warden.raw(
        "POST", "/api/v1/lockdown", {"on": True},
        headers={"Cookie": f"clawrden_session={cookie['value']}", "Content-Type": "application/json",
                 "Origin": "http://evil.example"})
    assert status == 403, body
    assert "cross-origin" in body
    dash.find("#logout").click()
    dash.visible("#login")
    assert dash.fetch("GET", "/api/v1/session", None)[0] == 401
    status, _, _ = warden.raw("GET", "/api/v1/status",
                              headers={"Cookie": f"clawrden_session={cookie['value']}"})
    assert status == 401


def test_wrong_token_is_refused_with_a_message(dash):
    dash.visible("#login-token").send_keys("clwd_" + "0" * 64)
    dash.find("#login-form button[type=submit]").click()
    dash.wait(lambda d: "invalid" in dash.find("#login-error").text.lower()
              or "token" in dash.find("#login-error").text.lower())
    assert not dash.find("#app").is_displayed()


def test_shim_call_appears_live_and_approve_completes_it(dash, warden):
    dash.login()
    shim = warden.call("echo", "approve-me", "with output")
    req = warden.wait_pending("approve-me")
    # Within a second of the warden queueing it, without a reload.
    card = dash.card(req["id"], timeout=1.0)
    assert card.find_element(By.CSS_SELECTOR, ".argv").text == "echo approve-me 'with output'"
    text = card.text
    assert "agent-1" in text and "uid " in text and str(warden.work) in text
    assert "no rule matched; default_action is ask" in text
    assert "Waiting" in text and "auto-deny in" in text
    left = card.find_element(By.CSS_SELECTOR, ".timers .timer:last-child").text
    assert left.startswith("9m") or left.startswith("10m"), left  # approval_timeout: 10m
    assert dash.find("#queue-count").text == "1"
    card.find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click()
    out, err = shim.communicate(timeout=30)
    assert shim.returncode == 0, err
    assert out == b"approve-me with output\n"
    dash.wait(lambda d: not dash.find_all(f'#queue li[data-id="{req["id"]}"]'), 5)
    assert dash.find("#queue-count").text == "0"
    status, view, _ = warden.api("GET", f"/api/v1/requests/{req['id']}")
    assert view["approval"]["state"] == "approved" and view["approval"]["approver"] == "admin"


def test_deny_with_reason_reaches_the_shims_stderr(dash, warden):
    dash.login()
    shim = warden.call("git", "push", "origin", "deny-me")
    req = warden.wait_pending("deny-me")
    card = dash.card(req["id"])
    assert "rule" in card.text and "git-push" in card.text
    assert "pushing publishes code; a person checks the branch" in card.text
    card.find_element(By.CSS_SELECTOR, "input[id^=reason-]").send_keys("not on a Friday")
    card.find_element(By.CSS_SELECTOR, 'button[data-action="deny"]').click()
    out, err = shim.communicate(timeout=30)
    assert shim.returncode == 126
    assert out == b""
    assert err.decode().endswith("clawrden: denied: denied by admin: not on a Friday\n"), err


def test_approve_and_remember_creates_a_grant_that_can_be_revoked(dash, warden):
    dash.login()
    shim = warden.call("echo", "remember-me")
    req = warden.wait_pending("remember-me")
    card = dash.card(req["id"])
    Select(card.find_element(By.CSS_SELECTOR, "select")).select_by_value("15m")
    card.find_element(By.CSS_SELECTOR, 'button[data-action="approve-remember"]').click()
    out, _ = shim.communicate(timeout=30)
    assert out == b"remember-me\n"
    # The same call again runs without asking.
    status, out, err = warden.run("echo", "remember-me")
    assert (status, out) == (0, "remember-me\n"), err
    dash.go("grants")
    grant = dash.visible("#grants li.grant")
    assert "remember-me" in grant.text and "expires in 14m" in grant.text
    assert "uses" in grant.text
    grant.find_element(By.CSS_SELECTOR, 'button[data-action="revoke"]').click()
    dash.confirm_dialog()
    dash.find("#confirm-ok").click()
    dash.toast("Grant revoked")
    dash.wait(lambda d: not dash.find_all("#grants li.grant") and dash.find("#grants-empty").is_displayed())
    status, data, _ = warden.api("GET", "/api/v1/grants")
    assert data["grants"] == []
    shim = warden.call("echo", "remember-me")
    warden.wait_pending("remember-me")  # asks again
    warden.deny_all_pending()
    shim.communicate(timeout=30)


def test_script_argv_renders_as_text(dash, warden):
    dash.login()
    payload = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
    shim = warden.call("echo", payload)
    req = warden.wait_pending("__pwned")
    card = dash.card(req["id"])
    argv = card.find_element(By.CSS_SELECTOR, ".argv").text
    assert argv == f"{req['argv'][0]} '{payload}'"
    assert dash.js("return window.__pwned === undefined")
    assert dash.js("return document.querySelectorAll('#queue script, #queue img').length") == 0
    warden.deny_all_pending()
    shim.communicate(timeout=30)
    dash.go("history")
    dash.wait(lambda d: any("__pwned" in r.text for r in dash.find_all("#history-rows tr")))
    assert dash.js("return document.querySelectorAll('#history-rows script, #history-rows img').length") == 0
    assert dash.js("return window.__pwned === undefined")


def test_read_only_token_sees_but_cannot_act(dash, warden):
    token = warden.create_token("viewer", "read")
    dash.login(token)
    assert dash.find("#who").text == "viewer (read)"
    assert dash.find("#readonly-note").is_displayed()
    shim = warden.call("curl", "https://example.com/read-only")
    req = warden.wait_pending("read-only")
    card = dash.card(req["id"])
    for action in ("approve", "approve-remember", "deny"):
        assert not card.find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]').is_enabled()
    assert "Read-only token" in card.text
    # Going around the disabled button does not work either.
    status, body = dash.fetch("POST", f"/api/v1/requests/{req['id']}/approve", {})
    assert status == 403, body
    assert shim.poll() is None
    dash.go("prisoners")
    assert not dash.find("#lockdown-toggle").is_enabled()
    assert dash.find("#lockdown-note").is_displayed()
    warden.deny_all_pending()
    shim.communicate(timeout=30)


def test_history_filter_pagination_and_export(dash, warden):
    for i in range(55):
        status, out, err = warden.run("printf", "%s\\n", f"page-marker-{i}")
        assert status == 0, err
    status, _, err = warden.run("rm", "-rf", "/tmp/export-marker")
    assert status == 126 and "recursive delete needs a person" in err
    dash.login()
    dash.go("history")
    form = dash.find("#history-form")
    form.find_element(By.ID, "f-q").send_keys("page-marker")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    dash.wait(lambda d: len(dash.find_all("#history-rows tr")) == 50)
    first = [r.get_attribute("data-id") for r in dash.find_all("#history-rows tr")]
    assert all("page-marker" in r.text for r in dash.find_all("#history-rows tr"))
    assert "page-marker-54" in dash.find("#history-rows tr").text  # newest first
    dash.find("#page-next").click()
    dash.wait(lambda d: len(dash.find_all("#history-rows tr")) == 5)
    assert not dash.find("#page-next").is_enabled()
    assert not set(first) & {r.get_attribute("data-id") for r in dash.find_all("#history-rows tr")}
    dash.find("#page-first").click()
    dash.wait(lambda d: len(dash.find_all("#history-rows tr")) == 50)

    # Filter by command and action: only the denied rm.
    form.find_element(By.ID, "f-q").clear()
    form.find_element(By.ID, "f-command").send_keys("rm")
    Select(form.find_element(By.ID, "f-action")).select_by_value("deny")
    form.find_element(By.ID, "f-prisoner").send_keys("agent-1")
    form.find_element(By.ID, "f-since").send_keys("1h")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    dash.wait(lambda d: len(dash.find_all("#history-rows tr")) == 1
              and "export-marker" in dash.find("#history-rows tr").text)
    row = dash.find("#history-rows tr")
    assert "deny" in row.text and "agent-1" in row.text

    # User filter: uid of this test process matches; another uid matches nothing.
    uid = str(__import__("os").getuid())
    form.find_element(By.ID, "f-uid").send_keys(uid)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    dash.wait(lambda d: len(dash.find_all("#history-rows tr")) == 1)
    form.find_element(By.ID, "f-uid").clear()
    form.find_element(By.ID, "f-uid").send_keys("4242")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    dash.wait(lambda d: dash.find("#history-status").text == "No calls match.")
    form.find_element(By.ID, "f-uid").clear()
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    dash.wait(lambda d: len(dash.find_all("#history-rows tr")) == 1)

    # Exports carry the same filters.
    csv_href = dash.find("#export-csv").get_attribute("href")
    assert "format=csv" in csv_href and "command=rm" in csv_href and "action=deny" in csv_href
    status, text = dash.fetch("GET", csv_href, None)
    assert status == 200, text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["id", "created_at", "prisoner"]
    assert len(rows) == 2 and "export-marker" in ",".join(rows[1])
    jsonl_href = dash.find("#export-jsonl").get_attribute("href")
    status, text = dash.fetch("GET", jsonl_href, None)
    assert status == 200, text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 1 and lines[0]["action"] == "deny" and lines[0]["argv"][1:] == ["-rf", "/tmp/export-marker"]

    # The detail page: decision, start/exit and duration in the timeline.
    dash.find("#history-form button[type=reset]").click()
    form.find_element(By.ID, "f-q").send_keys("page-marker-54")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    dash.wait(lambda d: len(dash.find_all("#history-rows tr")) == 1)
    dash.find("#history-rows tr a").click()
    dash.visible("#view-request")
    dash.wait(lambda d: "Finished: exit 0" in dash.find("#req-body").text)
    body = dash.find("#req-body").text
    assert "Requested" in body and "Decision: allow" in body and "rule read-only-tools" in body
    assert "Started" in body and "ran " in body
    # Charts are inline SVG built in the page.
    dash.go("history")
    dash.wait(lambda d: dash.js("return document.querySelectorAll('#chart-hourly svg rect').length") > 0)
    assert dash.js("return document.querySelectorAll('#chart-wait svg').length") == 1


def test_detail_page_shows_approver_and_nested_calls(dash, warden):
    dash.login()
    (warden.work / "nested.txt").write_text("nested-cat\n")
    # cat and sleep are not shell builtins: the approved sh runs them through the shim.
    shim = warden.call("sh", "-c", "cat nested.txt; sleep 0.01")
    req = warden.wait_pending("nested.txt")
    card = dash.card(req["id"])
    assert card.find_element(By.CSS_SELECTOR, ".argv").text == f"{req['argv'][0]} -c 'cat nested.txt; sleep 0.01'"
    card.find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click()
    # cat is allowed by the policy; sleep asks again, linked to its parent.
    child = warden.wait_pending("0.01", parent=req["id"])
    dash.card(child["id"]).find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click()
    out, err = shim.communicate(timeout=30)
    assert (shim.returncode, out) == (0, b"nested-cat\n"), err
    dash.d.get(warden.base + "/#/request/" + req["id"])
    dash.wait(lambda d: "Finished: exit 0" in dash.find("#req-body").text)
    dash.wait(lambda d: len(dash.find_all("#req-body ul.cards li.card")) == 2)
    body = dash.find("#req-body").text
    assert "Approved by admin" in body
    nested = [li.text for li in dash.find_all("#req-body ul.cards li.card")]
    assert "cat nested.txt" in nested[0] and "allow" in nested[0] and "exit 0" in nested[0]
    assert "sleep 0.01" in nested[1] and "approved by admin" in nested[1]


def test_kill_asks_for_confirmation(dash, warden):
    dash.login()
    dash.go("prisoners")
    card = dash.visible('#prisoners li[data-name="agent-1"]')
    assert "active" in card.text
    assert [li.get_attribute("data-name") for li in dash.find_all("#prisoners li")] == ["agent-1", "agent-2"]
    card.find_element(By.CSS_SELECTOR, 'button[data-action="kill"]').click()
    dialog = dash.confirm_dialog()
    assert "Kill prisoner agent-1?" in dialog.text
    dash.find("#confirm-cancel").click()
    dash.wait(lambda d: not dash.js("return document.getElementById('confirm').open"))
    _, status_view, _ = warden.api("GET", "/api/v1/status")
    assert [p["state"] for p in status_view["prisoners"]] == ["active", "active"]
    # Confirmed: the request reaches the warden, which runs no container runtime here.
    card = dash.visible('#prisoners li[data-name="agent-1"]')
    card.find_element(By.CSS_SELECTOR, 'button[data-action="kill"]').click()
    dash.confirm_dialog()
    dash.find("#confirm-reason").send_keys("runaway agent")
    dash.find("#confirm-ok").click()
    dash.toast("runtime", timeout=10)
    # Pause has its own duration choice and the same confirmation.
    card = dash.visible('#prisoners li[data-name="agent-1"]')  # re-rendered after the action
    Select(card.find_element(By.CSS_SELECTOR, "select")).select_by_value("1h")
    card.find_element(By.CSS_SELECTOR, 'button[data-action="pause"]').click()
    assert "for 1h" in dash.confirm_dialog().text
    dash.find("#confirm-cancel").click()


def test_lockdown_switch_denies_new_calls(dash, warden):
    dash.login()
    dash.go("prisoners")
    dash.visible("#lockdown-toggle").click()
    dash.confirm_dialog()
    dash.find("#confirm-reason").send_keys("incident drill")
    dash.find("#confirm-ok").click()
    dash.visible("#lockdown-badge")
    dash.wait(lambda d: "Lockdown is ON" in dash.find("#lockdown-state").text)
    assert "incident drill" in dash.find("#lockdown-state").text
    status, _, err = warden.run("printf", "locked")
    assert status == 126 and err == "clawrden: denied: lockdown\n"
    dash.find("#lockdown-toggle").click()
    dash.confirm_dialog()
    dash.find("#confirm-ok").click()
    dash.wait(lambda d: not dash.find("#lockdown-badge").is_displayed())
    assert warden.run("printf", "open")[:2] == (0, "open")


def test_policy_source_and_explain(dash, warden):
    dash.login()
    dash.go("policy")
    dash.wait(lambda d: "no-recursive-rm" in dash.find("#policy-source").text)
    dash.find("#x-argv").send_keys("rm -Rf '/tmp/some dir'")
    dash.find("#explain-form button[type=submit]").click()
    dash.wait(lambda d: dash.find("#explain-out").is_displayed()
              and "no-recursive-rm" in dash.find("#explain-out").text)
    out = dash.find("#explain-out").text
    assert "verdict: deny (rule no-recursive-rm)" in out
    # Which option matched, and in which argument.
    assert "flag `-R` is inside argument 1 `-Rf` (combined short options)" in out, out


# Every character the dashboard must never put on the page raw (a subset of the list in
# policy/src/quote.rs that covers each kind): C0 and C1 controls but the layout ones,
# bidi embeddings, overrides and isolates, zero-width characters, BOM, tags.
HIDDEN_SCAN = r"""
    const hidden = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\u{e0000}-\u{e007f}]/u;
    const found = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (hidden.test(n.data)) found.push("text: " + JSON.stringify(n.data));
    }
    for (const e of document.body.querySelectorAll("*")) {
      for (const a of e.attributes) {
        if (hidden.test(a.value)) found.push(e.tagName + "@" + a.name + ": " + JSON.stringify(a.value));
      }
    }
    return found;"""


def test_hidden_characters_are_shown_as_escapes(dash, warden):
    dash.login()
    rlo, zwsp, lri, bom = "\u202e", "\u200b", "\u2066", "\ufeff"
    # A file name that shows as "invoiceexe.pdf" where the override is honoured.
    shim = warden.call("echo", f"invoice{rlo}fdp.exe", f"a{zwsp}b{bom}")
    req = warden.wait_pending("invoice")
    card = dash.card(req["id"])
    argv = card.find_element(By.CSS_SELECTOR, ".argv").text
    assert argv == "echo $'invoice\\xe2\\x80\\xaefdp.exe' $'a\\xe2\\x80\\x8bb\\xef\\xbb\\xbf'", argv
    assert dash.js(HIDDEN_SCAN) == []
    status, _, _ = warden.api("POST", f"/api/v1/requests/{req['id']}/deny", {"reason": f"not{lri} today"})
    assert status == 200
    shim.communicate(timeout=30)
    dash.d.get(warden.base + "/#/request/" + req["id"])
    dash.wait(lambda d: "not\\u{2066} today" in dash.find("#req-body").text)
    assert dash.js(HIDDEN_SCAN) == []
    dash.go("history")
    dash.wait(lambda d: any("invoice" in r.text for r in dash.find_all("#history-rows tr")))
    assert dash.js(HIDDEN_SCAN) == []


def test_a_parent_claim_the_warden_cannot_verify_is_shown_as_unverified(dash, warden):
    dash.login()
    status, out, err = warden.run("printf", "finished-parent")
    assert status == 0, err
    _, page, _ = warden.api("GET", "/api/v1/history?q=finished-parent&limit=1")
    finished = page["requests"][0]["id"]
    # The claim comes from the caller's own environment: any process can make it.
    shim = warden.call("echo", "orphan-claim", env={"CLAWRDEN_PARENT_REQUEST": finished})
    req = warden.wait_pending("orphan-claim")
    assert req["parent_request"] is None
    assert req["unverified_parent"]["id"] == finished
    dash.d.get(warden.base + "/#/request/" + req["id"])
    reason = f"request {finished} is not running (it finished, or never existed)"
    dash.wait(lambda d: "unverified" in dash.find("#req-body").text)
    shown = dash.find("#req-body .unverified").text
    assert shown == f"claims {finished} (unverified: {reason})", shown
    assert dash.find_all(f'#req-body a[href="#/request/{finished}"]') == []
    warden.deny_all_pending()
    shim.communicate(timeout=30)


def _assert_phone_layout(dash, where):
    width = dash.js("return document.scrollingElement.scrollWidth")
    assert width <= 375, f"{where}: the page is {width}px wide at a 375px viewport"
    small = dash.js("""
        const out = [];
        for (const e of document.querySelectorAll('button, a.button, .tabs a, input:not([type=checkbox]), select, #history-rows a')) {
          const r = e.getBoundingClientRect();
          if (r.width === 0 && r.height === 0) continue;  // not shown
          if (r.height < 44 || r.width < 44) out.push((e.id || e.textContent.trim()).slice(0, 30) + ' ' + Math.round(r.width) + 'x' + Math.round(r.height));
        }
        return out;""")
    assert small == [], f"{where}: touch targets under 44px: {small}"


def test_layout_at_375px(dash, warden):
    dash.phone()
    dash.login()
    shim = warden.call("git", "push", "--force-with-lease", "origin", "feature/a-rather-long-branch-name-for-phones")
    req = warden.wait_pending("a-rather-long-branch")
    dash.card(req["id"])
    _assert_phone_layout(dash, "queue")
    for tab in ("history", "prisoners", "grants", "policy"):
        dash.go(tab)
        if tab == "history":
            dash.wait(lambda d: dash.find_all("#history-rows tr")
                      and dash.js("return document.querySelectorAll('#chart-wait svg').length") == 1)
        _assert_phone_layout(dash, tab)
    warden.deny_all_pending()
    shim.communicate(timeout=30)


def test_screenshots(dash, warden):
    """Writes {queue,history,prisoners}-{desktop,phone}.png (into docs/screenshots with
    CLAWRDEN_SCREENSHOTS=1)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Some history worth drawing.
    for args in (("printf", "build ok\\n"), ("cat", "/etc/hostname"), ("rm", "-r", "build/")):
        warden.run(*args)
    shims = [
        warden.call("git", "push", "origin", "feature/login-form"),
        warden.call("curl", "-fsSL", "https://pypi.org/simple/requests/", prisoner="agent-2"),
        warden.call("kubectl", "delete", "pod", "web-7d9f", "-n", "staging"),
    ]
    for marker in ("feature/login-form", "pypi.org", "web-7d9f"):
        warden.wait_pending(marker)
    dash.login()
    for size in ("desktop", "phone"):
        getattr(dash, size)()
        dash.d.get(warden.base + "/#/queue")
        dash.wait(lambda d: len(dash.find_all("#queue li.req")) == 3)
        dash.wait(lambda d: dash.find("#conn").text.endswith("live"))
        dash.settle()
        dash.d.save_screenshot(str(SCREENSHOTS / f"queue-{size}.png"))
        dash.go("history")
        dash.wait(lambda d: dash.find_all("#history-rows tr")
                  and dash.js("return document.querySelectorAll('#chart-hourly svg').length") == 1)
        dash.settle()
        dash.d.save_screenshot(str(SCREENSHOTS / f"history-{size}.png"))
        dash.go("prisoners")
        dash.visible('#prisoners li[data-name="agent-2"]')
        dash.settle()
        dash.d.save_screenshot(str(SCREENSHOTS / f"prisoners-{size}.png"))
    warden.deny_all_pending()
    for s in shims:
        s.communicate(timeout=30)
    for name in ("queue", "history", "prisoners"):
        for size in ("desktop", "phone"):
            data = (SCREENSHOTS / f"{name}-{size}.png").read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


CONTRAST_JS = """
function rgb(c) { const m = c.match(/[\\d.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; }
function lum({r, g, b}) {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
}
function background(e) {
  for (; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.a > 0.5) return c;
  }
  return rgb(getComputedStyle(document.documentElement).backgroundColor || 'rgb(255,255,255)');
}
const bad = [];
for (const e of document.querySelectorAll(arguments[0])) {
  const r = e.getBoundingClientRect();
  if (r.width === 0 || r.height === 0 || !e.textContent.trim() || e.disabled) continue;
  const fg = rgb(getComputedStyle(e).color), bg = background(e);
  const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
  const ratio = (hi + 0.05) / (lo + 0.05);
  if (ratio < 4.5) bad.push(e.tagName + '.' + e.className + ' "' + e.textContent.trim().slice(0, 20) + '" ' + ratio.toFixed(2));
}
return bad;
"""
TEXT = ("body, h2, h3, p, dt, dd, label, button, a, .note, .argv, .tabs a, .count, .state, "
        "[class^=act-], .timer, td, th, .badge")


def test_text_contrast_is_at_least_4_5_to_1_in_light_and_dark(dash, warden):
    shim = warden.call("git", "push", "origin", "contrast")
    warden.wait_pending("contrast")
    warden.run("rm", "-r", "contrast-dir")
    dash.login()
    try:
        for scheme in ("light", "dark"):
            dash.d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                   {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
            for tab in ("queue", "history", "prisoners", "grants", "policy"):
                dash.go(tab)
                if tab == "queue":
                    dash.visible("#queue li.req")
                if tab == "history":
                    dash.wait(lambda d: dash.find_all("#history-rows tr"))
                bad = dash.js(CONTRAST_JS, TEXT)
                assert bad == [], f"{scheme} {tab}: contrast under 4.5:1: {bad}"
    finally:
        dash.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        warden.deny_all_pending()
        shim.communicate(timeout=30)


def test_keyboard_alone_logs_in_and_approves_with_visible_focus(dash, warden):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    dash.visible("#login-token").send_keys(warden.admin_token + Keys.ENTER)
    dash.visible("#app")
    shim = warden.call("echo", "keyboard-only")
    req = warden.wait_pending("keyboard-only")
    button = dash.card(req["id"]).find_element(By.CSS_SELECTOR, 'button[data-action="approve"]')
    for _ in range(60):
        if dash.js("return document.activeElement") == button:
            break
        ActionChains(dash.d).send_keys(Keys.TAB).perform()
    else:
        raise AssertionError("Tab never reached the Approve button")
    outline = dash.js("const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]")
    assert outline == ["solid", "3px"], outline
    ActionChains(dash.d).send_keys(Keys.ENTER).perform()
    out, err = shim.communicate(timeout=30)
    assert (shim.returncode, out) == (0, b"keyboard-only\n"), err
