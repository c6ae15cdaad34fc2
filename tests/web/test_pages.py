"""The pages: each renders for each role, the security headers, role refusals, and the forms that call the
controller's rules (tickets, baselines, changes, exceptions), with their errors shown on the page."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.storage.models import AuditEntry, Baseline, ComplianceSnapshot, RiskException, Ticket
from controller.storage.serialize import rfc3339
from controller.web import stats
from tests.web.conftest import Web, csrf_of, signed_in

PAGES = ["/", "/tickets", "/tickets?status=all&severity=high&check=ports&q=8000", "/tickets/{tid}", "/agents",
         "/agents/agt-1", "/devices", "/baselines", "/baselines/tw-securities-linux", "/changes", "/exceptions",
         "/audit", "/audit?actor=test&action=user.&object=user"]
TEMPLATES = Path(__file__).resolve().parents[2] / "controller" / "web" / "templates"


@pytest.mark.parametrize("role", ["viewer", "analyst", "admin"])
def test_every_page_renders_for_every_role_with_security_headers(web: Web, role: str) -> None:
    client = signed_in(web, role)
    for path in PAGES:
        r = client.get(path.format(tid=web.ticket_id))
        assert r.status_code == 200, (path, r.text[:500])
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "same-origin"
        assert r.headers["cache-control"] == "no-store"
        assert 'href="#main"' in r.text and '<main id="main"' in r.text


def test_pages_need_a_session(web: Web) -> None:
    client = web.client()
    for path in PAGES:
        r = client.get(path.format(tid=web.ticket_id))
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
    assert client.get("/static/vigil.css").status_code == 200
    assert client.get("/static/vigil.js").status_code == 200


def test_templates_have_no_inline_script_or_style_and_every_input_a_label() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert " style=" not in text and "<style" not in text, path
        assert not re.search(r"\son[a-z]+=", text), path
        for m in re.finditer(r"<(input|select|textarea)\b[^>]*>", text):
            tag = m.group(0)
            if 'type="hidden"' in tag:
                continue
            ident = re.search(r'\bid="([^"]+)"', tag)
            assert ident, (path.name, tag)
            assert f'for="{ident.group(1)}"' in text, (path.name, tag)


def test_ticket_detail_shows_evidence_diff_timeline_and_report_countdown(web: Web) -> None:
    client = signed_in(web, "viewer")
    with web.ctl.sessions() as s:
        fim = s.execute(select(Ticket).where(Ticket.check_id == "fim")).scalar_one()
    r = client.get(f"/tickets/{fim.id}")
    assert '<span class="d-add">+&lt;h1&gt;Hacked&lt;/h1&gt;</span>' in r.text
    assert '<span class="d-del">-&lt;h1&gt;Hello&lt;/h1&gt;</span>' in r.text
    assert "data-countdown" in r.text and "due in" in r.text
    assert "Incident reports" in r.text and "initial" in r.text
    assert 'class="timeline"' in r.text and "opened" in r.text


def test_viewer_sees_no_controls_and_the_server_refuses_anyway(web: Web) -> None:
    client = signed_in(web, "viewer")
    page = client.get(f"/tickets/{web.ticket_id}")
    assert "/transition" not in page.text and "Acknowledge" not in page.text
    assert "working it needs the analyst role" in page.text
    token = csrf_of(page.text)
    for action, data in (("transition", {"to": "acknowledged"}), ("assign", {"assignee": "analyst"}),
                         ("comment", {"text": "hi"}), ("report", {"stage": "initial", "text": "x"})):
        r = client.post(f"/tickets/{web.ticket_id}/{action}", data={**data, "csrf_token": token})
        assert r.status_code == 403, action
        assert "needs the analyst role; viewer is viewer" in r.text
    with web.ctl.sessions() as s:
        t = s.get(Ticket, web.ticket_id)
        assert t is not None and t.status == "open" and t.assignee is None


def test_analyst_works_a_ticket_to_closed_and_the_audit_log_verifies(web: Web) -> None:
    client = signed_in(web, "analyst")
    url = f"/tickets/{web.ticket_id}"
    token = csrf_of(client.get(url).text)
    steps = [("assign", {"assignee": "analyst"}), ("comment", {"text": "looking at it"}),
             ("transition", {"to": "acknowledged"}), ("report", {"stage": "initial", "text": "first look"}),
             ("transition", {"to": "in_progress"}), ("transition", {"to": "resolved", "reason": "closed the port"}),
             ("report", {"stage": "formal", "text": "root cause: test service"}),
             ("report", {"stage": "closure", "text": "done"}), ("transition", {"to": "closed"})]
    for action, data in steps:
        r = client.post(f"{url}/{action}", data={**data, "csrf_token": token})
        assert r.status_code == 303 and r.headers["location"] == url, (action, r.text[:2000])
        page = client.get(url)
        assert 'role="status"' in page.text, action  # the flash message
    assert 'class="badge st-closed"' in page.text
    for stage in ("initial", "formal", "closure"):
        assert re.search(rf"<th scope=\"row\">{stage}</th>\s*<td>analyst</td>", page.text), stage
    audit = client.get("/audit").text
    assert "Verified:" in audit
    for action in ("ticket.assign", "ticket.comment", "ticket.transition", "ticket.report"):
        assert action in audit


def test_illegal_transition_and_false_positive_without_reason_are_explained(web: Web) -> None:
    client = signed_in(web, "analyst")
    url = f"/tickets/{web.ticket_id}"
    token = csrf_of(client.get(url).text)
    r = client.post(f"{url}/transition", data={"to": "closed", "csrf_token": token})
    assert r.status_code == 409 and "cannot go from open to closed" in r.text and 'role="alert"' in r.text
    r = client.post(f"{url}/transition", data={"to": "false_positive", "reason": "", "csrf_token": token})
    assert r.status_code == 422 and "needs a reason" in r.text


def test_false_positive_offers_the_exception_and_the_baseline_change(web: Web) -> None:
    client = signed_in(web, "analyst")
    url = f"/tickets/{web.ticket_id}"
    page = client.get(url)
    assert 'add &#34;tcp/8000 rogue&#34; to expect.listening.allow' in page.text
    assert 'href="/baselines/tw-securities-linux#rule-PORTS-ALLOWED"' in page.text
    token = csrf_of(page.text)
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).date().isoformat()
    # A bad exception (owner unknown) refuses the whole step, keeping what was typed.
    r = client.post(f"{url}/transition", data={
        "to": "false_positive", "reason": "lab box", "exception": "yes", "exc_owner": "nobody",
        "exc_expires": expires, "csrf_token": token})
    assert r.status_code == 422 and "owner &#39;nobody&#39; is not a Vigil user" in r.text
    assert ">lab box</textarea>" in r.text
    r = client.post(f"{url}/transition", data={
        "to": "false_positive", "reason": "lab box", "exception": "yes", "exc_owner": "admin",
        "exc_expires": expires, "exc_subject": "tcp/0.0.0.0:8000", "csrf_token": token})
    assert r.status_code == 303
    assert "exception exc-" in client.get(url).text
    with web.ctl.sessions() as s:
        (exc,) = s.execute(select(RiskException)).scalars()
        assert exc.owner == "admin" and exc.reason == "lab box" and exc.ticket_id == web.ticket_id
        assert rfc3339(exc.expires_at) == f"{expires}T23:59:59Z"
    assert exc.id in client.get("/exceptions").text


def test_analyst_reads_baselines_but_cannot_apply_one(web: Web) -> None:
    client = signed_in(web, "analyst")
    page = client.get("/baselines/tw-securities-linux")
    assert "Read only" in page.text and 'name="yaml"' not in page.text
    r = client.post("/baselines/tw-securities-linux", data={"yaml": "baseline: x\n", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 403 and "applying a baseline needs the admin role" in r.text


def test_admin_sees_baseline_problems_by_line_and_the_running_baseline_stays(web: Web) -> None:
    client = signed_in(web, "admin")
    with web.ctl.sessions() as s:
        b = s.get(Baseline, "tw-securities-linux")
        assert b is not None
        source, version = b.source, b.version
    page = client.get("/baselines/tw-securities-linux")
    token = csrf_of(page.text)
    bad = source.replace(f"version: {version}\n", f"version: {version + 1}\n", 1).replace(
        "severity: high", "severity: urgent", 1)
    r = client.post("/baselines/tw-securities-linux", data={"yaml": bad, "filename": "mine.yaml", "csrf_token": token})
    assert r.status_code == 422 and "nothing was changed" in r.text
    assert re.search(r"<code>mine\.yaml:\d+: rules\[\d+\]\.severity: ", r.text), r.text[:3000]
    with web.ctl.sessions() as s:
        b = s.get(Baseline, "tw-securities-linux")
        assert b is not None and b.version == version
    good = source.replace(f"version: {version}\n", f"version: {version + 1}\n", 1)
    r = client.post("/baselines/tw-securities-linux", data={"yaml": good, "csrf_token": token})
    assert r.status_code == 303
    assert f"version {version + 1} applied" in client.get("/baselines/tw-securities-linux").text


def test_changes_need_two_people(web: Web) -> None:
    admin = signed_in(web, "admin")
    token = csrf_of(admin.get("/changes").text)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    data = {"assets": "web1", "paths": "/var/www/html/**", "start": rfc3339(start),
            "end": rfc3339(start + dt.timedelta(hours=2)), "reason": "release 2.4", "csrf_token": token}
    r = admin.post("/changes", data={**data, "end": "tomorrow"})
    assert r.status_code == 422 and "not an RFC 3339 time" in r.text
    r = admin.post("/changes", data=data)
    assert r.status_code == 303
    page = admin.get("/changes").text
    found = re.search(r'<tr id="([^"]+)">', page)
    assert found
    change_id = found.group(1)
    assert "another admin must approve" in page and f"/changes/{change_id}/approve" not in page
    r = admin.post(f"/changes/{change_id}/approve", data={"csrf_token": token})
    assert r.status_code == 403 and "cannot approve it" in r.text

    analyst = signed_in(web, "analyst")
    r = analyst.post(f"/changes/{change_id}/approve", data={"csrf_token": csrf_of(analyst.get("/changes").text)})
    assert r.status_code == 403 and "needs the admin role" in r.text

    other = signed_in(web, "admin2")
    page = other.get("/changes").text
    assert f"/changes/{change_id}/approve" in page
    assert other.post(f"/changes/{change_id}/approve", data={"csrf_token": csrf_of(page)}).status_code == 303
    assert "approved by admin2" in other.get("/changes").text


def test_exceptions_create_and_revoke(web: Web) -> None:
    client = signed_in(web, "analyst")
    token = csrf_of(client.get("/exceptions").text)
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=5)).date().isoformat()
    r = client.post("/exceptions", data={"rule_id": "PORTS-ALLOWED", "assets": "web1", "subject": "*",
                                         "owner": "analyst", "reason": "", "expires": expires, "csrf_token": token})
    assert r.status_code == 422 and "reason is required" in r.text
    r = client.post("/exceptions", data={"rule_id": "PORTS-ALLOWED", "assets": "web1", "subject": "*",
                                         "owner": "analyst", "reason": "maintenance", "expires": expires,
                                         "csrf_token": token})
    assert r.status_code == 303
    with web.ctl.sessions() as s:
        (exc,) = s.execute(select(RiskException)).scalars()
    page = client.get("/exceptions").text
    assert f"/exceptions/{exc.id}/revoke" in page
    viewer = signed_in(web, "viewer")
    r = viewer.post(f"/exceptions/{exc.id}/revoke", data={"csrf_token": csrf_of(viewer.get("/exceptions").text)})
    assert r.status_code == 403
    r = client.post(f"/exceptions/{exc.id}/revoke", data={"reason": "done", "csrf_token": token})
    assert r.status_code == 303 and f"exception {exc.id} revoked" in client.get("/exceptions").text


def test_audit_page_says_when_the_chain_is_broken(web: Web) -> None:
    client = signed_in(web, "viewer")
    assert "Verified:" in client.get("/audit").text
    with web.ctl.sessions.begin() as s:
        entry = s.execute(select(AuditEntry).order_by(AuditEntry.seq).limit(1)).scalar_one()
        entry.details = {**entry.details, "tampered": True}
    page = client.get("/audit").text
    assert "Broken at entry 1:" in page and "altered" in page


def test_snapshots_feed_the_dashboard_and_it_works_without_any(web: Web) -> None:
    now = dt.datetime.now(dt.UTC)
    client = signed_in(web, "viewer")
    page = client.get("/").text
    assert "0 recorded snapshot(s)" in page and "0.0 %" in page and "0 of 2 findings passing" in page
    with web.ctl.sessions.begin() as s:
        snap = stats.take_snapshot(s, now - dt.timedelta(hours=1))
        assert (snap.findings_total, snap.findings_passing) == (2, 0)
        assert snap.open_tickets == {"critical": 1, "high": 1, "medium": 0, "low": 0}
        assert snap.agents == {"online": 1, "offline": 0, "lost": 0}
        assert stats.take_snapshot_if_due(s, now - dt.timedelta(minutes=55)) is None
        assert stats.take_snapshot_if_due(s, now) is not None
    with web.ctl.sessions() as s:
        assert len(list(s.execute(select(ComplianceSnapshot)).scalars())) == 2
        daily = stats.daily_tickets(s, now)
        assert daily[-1].opened == 2 and len(daily) == 14
    page = client.get("/").text
    assert "2 recorded snapshot(s)" in page and page.count("<svg class=\"chart\"") == 4


def test_a_finding_that_cannot_be_judged_shows_as_its_own_state_and_never_as_passing(web: Web) -> None:
    from controller.domain.tickets import RuleRef, apply_outcomes
    from controller.judges.base import cannot_judge

    now = dt.datetime.now(dt.UTC)
    ntp = RuleRef("NTP-SYNC", "ntp", "medium", ("TPEx-CPA 3(8)4(4)",), "tw-securities-linux", 1)
    with web.ctl.sessions.begin() as s:
        apply_outcomes(s, "agt-1", "web1", ntp, [cannot_judge(
            "check-status", "the ntp check reported TIMEOUT, so NTP-SYNC could not be evaluated")], now, None,
            complete=False)
    client = signed_in(web, "viewer")
    dashboard = client.get("/").text
    assert "0 of 3 findings passing; 1 cannot be judged (counted as not passing)" in dashboard
    agent = client.get("/agents/agt-1").text
    assert '<span class="badge st-unknown">cannot judge</span>' in agent
    assert '<span class="badge st-unknown">unknown</span>' in agent
    assert "cannot judge: the ntp check reported TIMEOUT" in agent
    agents = client.get("/agents").text
    assert "2 failing, 1 cannot judge of 3" in agents
    tickets = client.get("/tickets").text
    assert "NTP-SYNC on web1: cannot judge: the ntp check reported TIMEOUT" in tickets


def test_a_form_post_is_bounded_before_it_is_parsed(web: Web) -> None:
    client = signed_in(web, "admin")
    token = csrf_of(client.get("/baselines/tw-securities-linux").text)
    with web.ctl.sessions() as s:
        before = s.get(Baseline, "tw-securities-linux")
        assert before is not None
        version = before.version
    huge = "a" * (4 * 1024 * 1024)
    r = client.post("/baselines/tw-securities-linux", data={"yaml": huge, "csrf_token": token})
    assert r.status_code == 413 and "more than the 3 MiB a form may send" in r.text
    chunked = client.post("/baselines/tw-securities-linux", content=iter([b"yaml=x&csrf_token=", token.encode()]),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 411
    login = web.client().post("/login", content=b"u" * (4 * 1024 * 1024),
                              headers={"content-type": "application/x-www-form-urlencoded"})
    assert login.status_code == 413
    with web.ctl.sessions() as s:
        after = s.get(Baseline, "tw-securities-linux")
        assert after is not None and after.version == version


# -- ids out of range -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**63, 2**64, -1])
def test_every_page_route_with_an_integer_id_answers_404_out_of_range(web: Web, value: int) -> None:
    from tests.controller.test_limits import fill, int_routes

    client = signed_in(web, "analyst")
    token = csrf_of(client.get("/tickets").text)
    walked = [(m, p, n) for m, p, n, kind in int_routes(web.app.routes)  # type: ignore[attr-defined]
              if kind == "path" and not p.startswith("/api/")]
    assert ("GET", "/tickets/{ticket_id}", "ticket_id") in walked
    for method, path, name in walked:
        url = fill(path.replace("{" + name + "}", str(value)))
        r = client.request(method, url, data={"csrf_token": token, "to": "acknowledged", "text": "x"})
        assert r.status_code == 404 and f"no ticket {value}" in r.text, (method, url, r.status_code)
    r = client.get(f"/audit?before={2**64}")
    assert r.status_code == 200


# -- users and API keys -----------------------------------------------------------------------------------


def test_the_users_page_is_for_admins_and_linked_for_them_only(web: Web) -> None:
    for role in ("viewer", "analyst"):
        client = signed_in(web, role)
        assert 'href="/users"' not in client.get("/").text
        r = client.get("/users")
        assert r.status_code == 403 and "needs the admin role" in r.text
        r = client.post("/users/viewer/disable", data={"csrf_token": csrf_of(client.get("/tickets").text)})
        assert r.status_code == 403
    admin = signed_in(web, "admin")
    assert 'href="/users"' in admin.get("/").text


def test_admins_disable_enable_unlock_and_revoke_keys_from_the_users_page(web: Web) -> None:
    from controller.domain import users
    from controller.domain.users import create_api_key
    from controller.storage.models import ApiKey, User

    with web.ctl.sessions.begin() as s:
        key_id = create_api_key(s, "analyst", "test").split("_")[1]
        viewer = s.get(User, "viewer")
        assert viewer is not None
        users.lock(s, viewer, "test")
    victim = signed_in(web, "analyst")
    admin = signed_in(web, "admin")
    page = admin.get("/users")
    assert page.status_code == 200
    row = page.text.split('id="user-analyst"')[1].split("</tr>")[0]
    assert "analyst" in row and f"<code>{key_id}</code>" in row and "Disable" in row
    viewer_row = page.text.split('id="user-viewer"')[1].split("</tr>")[0]
    assert "locked" in viewer_row and "Unlock" in viewer_row
    token = csrf_of(page.text)

    assert admin.post("/users/analyst/disable", data={}).status_code == 403  # no CSRF token
    r = admin.post("/users/analyst/disable", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/users"
    assert victim.get("/tickets").status_code == 303  # the session is over
    assert "Enable" in admin.get("/users").text.split('id="user-analyst"')[1].split("</tr>")[0]
    assert admin.post("/users/analyst/enable", data={"csrf_token": token}).status_code == 303
    assert admin.post("/users/viewer/unlock", data={"csrf_token": token}).status_code == 303
    assert admin.post(f"/apikeys/{key_id}/revoke", data={"csrf_token": token}).status_code == 303
    r = admin.post("/users/admin2/disable", data={"csrf_token": token})
    assert r.status_code == 303
    r = admin.post("/users/admin/disable", data={"csrf_token": token})
    assert r.status_code == 409 and "last enabled admin" in r.text
    r = admin.post("/users/ghost/frobnicate", data={"csrf_token": token})
    assert r.status_code == 404

    with web.ctl.sessions() as s:
        key = s.get(ApiKey, key_id)
        analyst, viewer = s.get(User, "analyst"), s.get(User, "viewer")
        assert key is not None and key.revoked_at is not None
        assert analyst is not None and not analyst.disabled and viewer is not None and not viewer.locked
        got = [(e.actor, e.action, e.object_id) for e in s.execute(
            select(AuditEntry).where(AuditEntry.action.in_(
                ["user.disable", "user.enable", "user.unlock", "apikey.revoke"])).order_by(AuditEntry.seq)).scalars()]
    assert got == [("admin", "user.disable", "analyst"), ("admin", "user.enable", "analyst"),
                   ("admin", "user.unlock", "viewer"), ("admin", "apikey.revoke", key_id),
                   ("admin", "user.disable", "admin2")]


def test_an_out_of_range_ticket_post_without_a_session_goes_to_sign_in(web: Web) -> None:
    r = web.client().post(f"/tickets/{2**64}/comment", data={"text": "x"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_a_device_tickets_page_names_the_device_and_links_no_agent(web: Web) -> None:
    from controller.domain.tickets import RuleRef, apply_outcomes
    from controller.judges.base import Observation

    ref = RuleRef("NET-DEVICES", "ssh_device", "high", ("TWSE-CC CC-17010 a(j)",), "tw-network", 1)
    with web.ctl.sessions.begin() as s:
        (ticket,) = apply_outcomes(s, "dev:fw-hq", "dev:fw-hq", ref, [Observation(
            "eol", "fail", "fw-hq runs 5.6.3 (fortios before 6.0): end of life", {"version": "5.6.3"})],
            dt.datetime.now(dt.UTC), None)
        tid = ticket.id
    r = signed_in(web, "viewer").get(f"/tickets/{tid}")
    assert r.status_code == 200
    assert "fw-hq <span class=\"muted\">network device, collected by a sensor</span>" in r.text
    assert 'href="/agents/dev:fw-hq"' not in r.text
