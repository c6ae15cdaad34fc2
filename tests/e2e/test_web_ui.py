"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright against a real controller
process fed by a real (hand-driven) agent stream over mutual TLS.

With ``VIGIL_SCREENSHOTS=1`` the test also writes screenshots of the main pages at 1366x768 into
``docs/screenshots/`` (``VIGIL_SCREENSHOTS=1 .venv/bin/pytest tests/e2e/test_web_ui.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import PASSWORD, ROOT, AgentProc, AgentStream, Controller, cli, ports_report

CHROMIUM = os.environ.get("VIGIL_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1366, "height": 768}


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install '.[dev]')")
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set VIGIL_CHROMIUM); "
                    "the browser test never downloads one")
    return sync_playwright


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            yield b
        finally:
            b.close()


def _user(ctl: Controller, name: str, role: str) -> None:
    cli("vigil-controller", "user", "create", "--data-dir", str(ctl.data_dir), "--username", name, "--role", role,
        "--password-stdin", input=PASSWORD + "\n")


def _page(browser: Any) -> Any:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("dialog", lambda d: d.accept())
    return page


def _sign_in(page: Any, ctl: Controller, username: str, password: str = PASSWORD) -> None:
    page.goto(ctl.url + "/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_analyst_works_a_ticket_admin_uses_totp_viewer_reads_and_lockout(controller: Controller, browser: Any,
                                                                         tmp_path: Path) -> None:
    import pyotp
    from playwright.sync_api import expect

    ctl = controller
    ctl.admin()
    for name, role in (("alice", "analyst"), ("victor", "viewer"), ("ada", "admin"), ("mallory", "analyst")):
        _user(ctl, name, role)
    agent = AgentProc(tmp_path / "agent")
    agent_id = agent.enroll(ctl)

    # -- the analyst signs in and watches the ticket list, which is empty so far
    page = _page(browser)
    _sign_in(page, ctl, "alice")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("link", name="Tickets", exact=True).click()
    expect(page.get_by_text("No tickets match these filters.")).to_be_visible()

    # -- the agent reports a rogue listener; the list refreshes itself and the ticket appears
    with AgentStream.of(ctl.address, agent.data_dir) as stream:
        stream.hello()
        stream.next("policy")
        stream.send(ports_report(1, port=2222))
        stream.next("ack")
    row = page.locator("table.tickets tbody tr").filter(has_text=":2222")
    expect(row).to_be_visible(timeout=20_000)
    expect(row).to_contain_text("high")
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(":2222")
    ticket_id = int(re.search(r"/tickets/(\d+)$", page.url).group(1))  # type: ignore[union-attr]
    expect(page.locator(".deadline time[data-countdown]")).to_contain_text("due in")

    # -- acknowledge
    page.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status")).to_contain_text(f"ticket {ticket_id} is now acknowledged")
    expect(page.locator("#ticket-status")).to_contain_text("acknowledged")

    # -- the initial report stage, with who filed it
    page.get_by_label("Initial report").fill("Rogue listener on 2222 under investigation.")
    page.get_by_role("button", name="File the initial report").click()
    expect(page.get_by_role("status")).to_contain_text("initial report filed")
    expect(page.locator("table").filter(has_text="Filed by").locator("tr", has_text="initial")).to_contain_text(
        "alice")

    # -- a false positive needs a reason; it offers the exception and the baseline change
    page.get_by_text("Mark as false positive…").click()
    expect(page.locator(".hint-box")).to_contain_text("expect.listening.allow")
    page.get_by_label("Why is this a false positive?").fill("Lab box: 2222 is the sanctioned test sshd.")
    page.get_by_label("Also create an exception").check()
    page.get_by_role("button", name="Mark false positive").click()
    expect(page.get_by_role("status")).to_contain_text("false positive; exception exc-")
    expect(page.locator("#ticket-status")).to_contain_text("false positive")
    page.get_by_role("button", name="Close").click()
    expect(page.locator("#ticket-status")).to_contain_text("closed")
    timeline = page.locator("ol.timeline")
    for text in ("opened", "acknowledged", "report", "false positive", "exception", "closed"):
        expect(timeline).to_contain_text(text)
    page.context.close()

    # -- a viewer reads the ticket but gets no controls to work it
    viewer = _page(browser)
    _sign_in(viewer, ctl, "victor")
    viewer.goto(f"{ctl.url}/tickets/{ticket_id}")
    expect(viewer.get_by_text("working it needs the analyst role")).to_be_visible()
    assert viewer.get_by_role("button", name="Reopen").count() == 0
    assert viewer.locator("form[action$='/transition']").count() == 0
    viewer.goto(f"{ctl.url}/baselines/tw-securities-linux")
    expect(viewer.get_by_text("Read only: applying a baseline needs the admin role.")).to_be_visible()
    viewer.context.close()

    # -- five wrong passwords refuse an account from this address; then even the right one is refused, with
    # the one answer an unknown name gets too
    locked = _page(browser)
    refused = "wrong username or password, or too many failed sign-in attempts"
    for _ in range(5):
        _sign_in(locked, ctl, "mallory", "not-the-password")
        expect(locked.get_by_role("alert")).to_contain_text(refused)
    _sign_in(locked, ctl, "mallory")
    expect(locked.get_by_role("alert")).to_contain_text(refused)
    _sign_in(locked, ctl, "nobody-here", "whatever")
    expect(locked.get_by_role("alert")).to_contain_text(refused)
    locked.context.close()

    # -- an admin enrols an authenticator, then signs in with password and code
    admin = _page(browser)
    _sign_in(admin, ctl, "ada")
    expect(admin.get_by_role("heading", name="Set up your authenticator")).to_be_visible()
    secret = admin.locator("#totp-secret").get_attribute("data-secret")
    assert secret and admin.locator(".qr-box svg").count() == 1
    admin.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    admin.get_by_role("button", name="Confirm and continue").click()
    expect(admin.get_by_role("heading", name="Dashboard")).to_be_visible()
    admin.get_by_role("button", name="Sign out").click()
    expect(admin.get_by_role("status")).to_contain_text("You are signed out")
    _sign_in(admin, ctl, "ada")
    expect(admin.get_by_role("heading", name="Authentication code")).to_be_visible()
    # The enrolment used this 30-second step's code and a code is good once: take the next step's, which the
    # controller accepts as one step of clock drift.
    admin.get_by_label("6-digit code").fill(pyotp.TOTP(secret).at(time.time() + 30))
    admin.get_by_role("button", name="Verify").click()
    expect(admin.get_by_role("heading", name="Dashboard")).to_be_visible()

    # -- the audit log shows every step and verifies
    admin.get_by_role("link", name="Audit log").click()
    expect(admin.locator("#audit-verify")).to_contain_text("Verified")
    body = admin.locator("table.audit")
    for action in ("ticket.transition", "ticket.report", "exception.create", "user.lock", "user.login_failed",
                   "user.totp_enrol", "user.login", "user.logout"):
        expect(body).to_contain_text(action)

    if os.environ.get("VIGIL_SCREENSHOTS") == "1":
        _screenshots(admin, ctl, agent_id, ticket_id)
    admin.context.close()


def _screenshots(page: Any, ctl: Controller, agent_id: str, ticket_id: int) -> None:
    """Fill the remaining pages a little (a change request, a second ticket) and photograph them."""
    import datetime as dt

    from controller.storage.serialize import rfc3339
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    ctl.api("POST", "/changes", {"assets": [agent_id], "paths": ["/var/www/html/**"], "start": rfc3339(start),
                                 "end": rfc3339(start + dt.timedelta(hours=2)),
                                 "reason": "Deploy release 2.4.1 of the customer portal (CR-1042)"})
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in (("dashboard", "/"), ("tickets", "/tickets?status=all"), ("ticket", f"/tickets/{ticket_id}"),
                       ("agents", "/agents"), ("agent", f"/agents/{agent_id}"),
                       ("baselines", "/baselines/tw-securities-linux"), ("changes", "/changes"),
                       ("exceptions", "/exceptions"), ("audit", "/audit")):
        page.goto(ctl.url + path)
        page.screenshot(path=str(SHOTS / f"{name}.png"))
    signed_out = page.context.browser.new_context(viewport=VIEWPORT).new_page()
    signed_out.goto(ctl.url + "/login")
    signed_out.screenshot(path=str(SHOTS / "login.png"))
    signed_out.context.close()


def test_a_ticket_can_be_worked_with_the_keyboard_alone(controller: Controller, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    ctl = controller
    _user(ctl, "kim", "analyst")
    agent = AgentProc(tmp_path / "agent")
    agent.enroll(ctl)
    with AgentStream.of(ctl.address, agent.data_dir) as stream:
        stream.hello()
        stream.next("policy")
        stream.send(ports_report(1, port=2323))
        stream.next("ack")
    page = _page(browser)
    page.goto(ctl.url + "/login")
    # No clicks from here on: Tab moves focus, typing fills the focused field, Enter activates.
    page.keyboard.press("Tab")
    for _ in range(10):
        if page.evaluate("document.activeElement && document.activeElement.name") == "username":
            break
        page.keyboard.press("Tab")
    page.keyboard.type("kim")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    def tab_to(predicate: str, limit: int = 80) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(f"(() => {{ const e = document.activeElement; return !!e && ({predicate}); }})()"):
                return
        raise AssertionError(f"Tab never reached an element where {predicate}")

    # The first Tab stop is the skip link, so keyboard users need not walk the navigation on every page.
    page.keyboard.press("Tab")
    assert "skip" in (page.evaluate("document.activeElement.textContent") or "").lower()
    tab_to("e.tagName === 'A' && e.textContent.trim() === 'Tickets'")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Tickets", exact=True)).to_be_visible()
    tab_to("e.tagName === 'A' && e.textContent.includes(':2323')")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text(":2323")
    tab_to("e.tagName === 'BUTTON' && e.textContent.trim() === 'Acknowledge'")
    # Where the focus is can be seen.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("is now acknowledged")
