"""Signing in: passwords, lockout per source and for everyone, TOTP for admins, CSRF, idle timeout, cookies."""

from __future__ import annotations

import json

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select

from controller.cli import controller as cli
from controller.domain.users import MAX_FAILED_LOGINS, MAX_FAILED_TOTAL
from controller.storage.models import AuditEntry, User, WebSession
from tests.web.conftest import PASSWORD, Web, csrf_of, enrol_admin, login, signed_in


def _actions(web: Web) -> list[str]:
    with web.ctl.sessions() as s:
        return [e.action for e in s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars()]


def _user(web: Web, name: str) -> User:
    with web.ctl.sessions() as s:
        user = s.get(User, name)
        assert user is not None
        return user


def _sessions(web: Web, name: str) -> list[WebSession]:
    with web.ctl.sessions() as s:
        return list(s.execute(select(WebSession).where(WebSession.username == name)).scalars())


def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(web: Web) -> None:
    client = web.client()
    r = login(client, "analyst")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("vigil_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain http on loopback; https requests get Secure
    assert client.get("/").status_code == 200
    user = _user(web, "analyst")
    assert user.last_login_at is not None and user.failed_logins == 0

    page = client.get("/tickets")
    r = client.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/login?reason=logout"
    (row,) = _sessions(web, "analyst")
    assert row.ended_at is not None and row.end_reason == "logout"
    client.cookies.set("vigil_session", cookie.split(";")[0].split("=", 1)[1])  # the old cookie is worth nothing now
    assert client.get("/").status_code == 303
    assert {"user.login", "user.logout"} <= set(_actions(web))


def test_https_requests_get_a_secure_cookie(web: Web) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(web.app, base_url="https://vigil.example", follow_redirects=False)  # type: ignore[arg-type]
    r = login(client, "analyst")
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("vigil_session="))
    assert "Secure" in cookie


def test_unknown_user_and_wrong_password_get_the_same_answer(web: Web) -> None:
    client = web.client()
    a = login(client, "nobody", "whatever-it-is")
    b = login(client, "analyst", "wrong-password-1")
    assert a.status_code == b.status_code == 401
    assert "wrong username or password" in a.text and "wrong username or password" in b.text
    assert _error(a.text) == _error(b.text)
    assert "nobody" not in a.text.split("<main")[1].split("</main>")[0].replace('value="nobody"', "")
    assert _actions(web).count("user.login_failed") == 2


def _error(html: str) -> str:
    """The page's message, without the username echoed back into the form."""
    return html.split('id="error-summary"')[1].split("</div>")[0]


def _from(web: Web, address: str) -> TestClient:
    return TestClient(web.app, follow_redirects=False, client=(address, 50000))  # type: ignore[arg-type]


def test_five_wrong_passwords_lock_the_name_for_that_source_and_say_nothing_more(web: Web) -> None:
    attacker, ghost_answers, analyst_answers = _from(web, "203.0.113.9"), [], []
    for _ in range(MAX_FAILED_LOGINS + 1):
        analyst_answers.append(login(attacker, "analyst", "not-the-password"))
        ghost_answers.append(login(attacker, "ghost", "not-the-password"))
    # Existing or not, before the lock or after it: one status, one text.
    assert {r.status_code for r in analyst_answers + ghost_answers} == {401}
    assert len({_error(r.text) for r in analyst_answers + ghost_answers}) == 1
    # The right password does not help from that source now; from another source it does.
    r = login(attacker, "analyst")
    assert r.status_code == 401 and _error(r.text) == _error(ghost_answers[0].text)
    assert login(_from(web, "198.51.100.7"), "analyst").status_code == 303
    assert not _user(web, "analyst").locked
    assert "user.lock_source" in _actions(web) and "user.lock" not in _actions(web)
    # An admin's unlock lifts the lock for that source too.
    assert cli.main(["user", "unlock", "--data-dir", str(web.tmp), "--username", "analyst"]) == 0
    assert login(attacker, "analyst").status_code == 303


def test_twenty_wrong_passwords_lock_the_account_for_everyone_until_an_admin_unlocks_it(web: Web) -> None:
    holder = signed_in(web, "analyst")  # a session that the lock must end
    for i in range(MAX_FAILED_TOTAL):
        r = login(_from(web, f"203.0.113.{i // MAX_FAILED_LOGINS}"), "analyst", "not-the-password")
        assert r.status_code == 401, (i, r.status_code)
    user = _user(web, "analyst")
    assert user.locked and user.locked_at is not None
    assert "user.lock" in _actions(web)
    r = login(_from(web, "198.51.100.7"), "analyst")
    assert r.status_code == 401 and "wrong username or password" in r.text
    r = holder.get("/tickets")
    assert r.status_code == 303 and "reason=locked" in r.headers["location"]

    assert cli.main(["user", "unlock", "--data-dir", str(web.tmp), "--username", "analyst"]) == 0
    r = login(web.client(), "analyst")
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "user.unlock" in _actions(web)


def test_a_success_resets_the_failure_count(web: Web) -> None:
    client = web.client()
    for _ in range(4):
        login(client, "analyst", "not-the-password")
    assert login(client, "analyst").status_code == 303
    assert _user(web, "analyst").failed_logins == 0
    for _ in range(4):
        assert login(web.client(), "analyst", "not-the-password").status_code == 401
    assert not _user(web, "analyst").locked
    assert login(web.client(), "analyst").status_code == 303


def test_admin_must_enrol_totp_before_any_page(web: Web) -> None:
    client = web.client()
    r = login(client, "admin")
    assert r.status_code == 303 and r.headers["location"] == "/login/enrol"
    for path in ("/", "/tickets", "/audit", "/login/totp"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login/enrol", path
    page = client.get("/login/enrol")
    assert page.status_code == 200 and "<svg" in page.text and "otpauth://totp/Vigil:admin" in page.text
    # A POST to a page is refused too (the session has not passed the second factor).
    assert client.post("/tickets/1/transition", data={"csrf_token": csrf_of(page.text), "to": "acknowledged"}
                       ).status_code == 303
    assert "user.login" not in _actions(web)


def test_totp_login_refuses_a_replayed_code_and_accepts_one_step_of_drift(web: Web) -> None:
    client = web.client()
    secret = enrol_admin(web, client)
    assert _user(web, "admin").totp_enabled
    page = client.get("/")
    client.post("/logout", data={"csrf_token": csrf_of(page.text)})

    r = login(client, "admin")
    assert r.status_code == 303 and r.headers["location"] == "/login/totp"
    assert client.get("/").headers["location"] == "/login/totp"
    page = client.get("/login/totp")
    token = csrf_of(page.text)
    totp = pyotp.TOTP(secret)
    # The code used at enrolment, in the same 30-second step: a replay.
    r = client.post("/login/totp", data={"code": totp.at(web.clock.now), "csrf_token": token})
    assert r.status_code == 401 and "already used" in r.text
    r = client.post("/login/totp", data={"code": "000000" if totp.at(web.clock.now) != "000000" else "111111",
                                         "csrf_token": token})
    assert r.status_code == 401 and "wrong authentication code" in r.text
    assert _user(web, "admin").failed_logins == 2
    web.clock.advance(seconds=30)
    r = client.post("/login/totp", data={"code": totp.at(web.clock.now.timestamp() + 30), "csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert client.get("/audit").status_code == 200
    user = _user(web, "admin")
    assert user.failed_logins == 0
    assert _actions(web).count("user.login") == 2 and "user.totp_enrol" in _actions(web)


def test_wrong_totp_codes_lock_the_admin(web: Web) -> None:
    client = web.client()
    secret = enrol_admin(web, client)
    good = pyotp.TOTP(secret)
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/").text)})
    login(client, "admin")
    token = csrf_of(client.get("/login/totp").text)
    wrong = "123456" if good.at(web.clock.now) != "123456" else "654321"
    for attempt in range(1, 6):
        r = client.post("/login/totp", data={"code": wrong, "csrf_token": token})
        assert r.status_code == (303 if attempt == 5 else 401)
    assert r.headers["location"] == "/login?reason=locked"
    assert _user(web, "admin").locked
    assert login(client, "admin").status_code == 401

    assert cli.main(["user", "unlock", "--data-dir", str(web.tmp), "--username", "admin"]) == 0
    assert cli.main(["user", "reset-totp", "--data-dir", str(web.tmp), "--username", "admin"]) == 0
    assert login(client, "admin").headers["location"] == "/login/enrol"
    assert {"user.unlock", "user.totp_reset"} <= set(_actions(web))


def test_posts_without_the_csrf_token_or_from_another_origin_are_refused(web: Web) -> None:
    client = signed_in(web, "analyst")
    token = csrf_of(client.get("/tickets").text)
    url = f"/tickets/{web.ticket_id}/transition"
    assert client.post(url, data={"to": "acknowledged"}).status_code == 403
    assert client.post(url, data={"to": "acknowledged", "csrf_token": "forged"}).status_code == 403
    assert client.post(url, data={"to": "acknowledged", "csrf_token": token},
                       headers={"Origin": "https://evil.example"}).status_code == 403
    r = client.get(f"/tickets/{web.ticket_id}")
    assert "acknowledged" not in r.text.split('id="ticket-status"')[1][:200]
    # The header works for scripts, and the same origin is fine.
    r = client.post(url, data={"to": "acknowledged"}, headers={"X-CSRF-Token": token, "Origin": "http://testserver"})
    assert r.status_code == 303


def test_login_form_needs_its_double_submit_cookie(web: Web) -> None:
    client = web.client()
    page = client.get("/login")
    token = csrf_of(page.text)
    client.cookies.clear()
    r = client.post("/login", data={"username": "analyst", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 403 and "CSRF" in r.text
    assert _user(web, "analyst").last_login_at is None


def test_idle_sessions_end_and_background_refreshes_do_not_keep_them_alive(web: Web) -> None:
    client = signed_in(web, "analyst")
    web.clock.advance(minutes=10)
    assert client.get("/tickets").status_code == 200  # activity
    web.clock.advance(minutes=10)
    assert client.get("/tickets", headers={"X-Vigil-Background": "1"}).status_code == 200  # auto-refresh
    web.clock.advance(minutes=6)  # 16 minutes after the last activity
    r = client.get("/tickets")
    assert r.status_code == 303 and r.headers["location"] == "/login?reason=idle&next=%2Ftickets"
    (row,) = _sessions(web, "analyst")
    assert row.end_reason == "idle"
    assert "15 minutes" in client.get(r.headers["location"]).text


def test_sessions_end_after_twelve_hours_however_active(web: Web) -> None:
    client = signed_in(web, "analyst")
    for _ in range(12 * 6 + 1):
        web.clock.advance(minutes=10)
        r = client.get("/baselines")
        if r.status_code != 200:
            break
    assert r.status_code == 303 and "reason=expired" in r.headers["location"]


def test_after_login_only_local_targets(web: Web) -> None:
    client = web.client()
    r = login(client, "analyst", next_url="//evil.example/x")
    assert r.headers["location"] == "/"
    client = web.client()
    r = login(client, "analyst", next_url=f"/tickets/{web.ticket_id}")
    assert r.headers["location"] == f"/tickets/{web.ticket_id}"


def test_the_controller_cli_disables_users_and_revokes_keys(web: Web, capsys) -> None:
    holder = signed_in(web, "analyst")
    assert cli.main(["apikey", "create", "--data-dir", str(web.tmp), "--username", "analyst"]) == 0
    key = capsys.readouterr().out.strip()
    key_id = key.split("_")[1]
    assert cli.main(["user", "disable", "--data-dir", str(web.tmp), "--username", "analyst"]) == 0
    assert capsys.readouterr().err.strip() == "disabled analyst"
    r = holder.get("/tickets")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert login(web.client(), "analyst").status_code == 401
    assert cli.main(["user", "enable", "--data-dir", str(web.tmp), "--username", "analyst"]) == 0
    assert login(web.client(), "analyst").status_code == 303

    assert cli.main(["apikey", "list", "--data-dir", str(web.tmp), "--username", "analyst"]) == 0
    out = capsys.readouterr().out
    assert key_id in out and key.split("_", 2)[2] not in out
    assert cli.main(["apikey", "revoke", "--data-dir", str(web.tmp), key_id]) == 0
    assert cli.main(["apikey", "list", "--data-dir", str(web.tmp), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["id"], k["revoked_at"] is not None) for k in listed] == [(key_id, True)]
    assert cli.main(["apikey", "revoke", "--data-dir", str(web.tmp), "nope"]) == 1
    assert "no API key 'nope'" in capsys.readouterr().err
    # The only admins are admin and admin2: both cannot be disabled.
    assert cli.main(["user", "disable", "--data-dir", str(web.tmp), "--username", "admin2"]) == 0
    assert cli.main(["user", "disable", "--data-dir", str(web.tmp), "--username", "admin"]) == 1
    assert "last enabled admin" in capsys.readouterr().err
    assert {"user.disable", "user.enable", "apikey.revoke"} <= set(_actions(web))
