"""Sign-in pages: password, then the second factor (TOTP) or its enrolment for admins, and logout."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

import segno
from fastapi import APIRouter
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from common import __version__
from controller.domain import audit, users
from controller.domain.users import LoginFailed
from controller.storage.models import User
from controller.web import auth
from controller.web.pages import Ctx, Redirect, Refused, bounded_form, page, redirect, secure, state_of

router = APIRouter(include_in_schema=False)

REASONS = {
    "idle": "Your session ended after {idle} minutes without activity. Please sign in again.",
    "expired": "Your session reached its maximum length. Please sign in again.",
    "locked": "This account is locked after too many failed sign-in attempts. Ask an admin to unlock it.",
    "logout": "You are signed out.",
    "ended": "Your session has ended. Please sign in again.",
    "totp_reset": "Your authenticator was reset by an admin. Sign in to enrol a new one.",
}


def _safe_next(value: str) -> str:
    """Only a path on this site (no scheme, no host, no //) may be the target after sign-in."""
    parts = urlsplit(value)
    if not value.startswith("/") or value.startswith("//") or "\\" in value or parts.scheme or parts.netloc:
        return "/"
    return value


def _login_page(request: Request, token: str, message: str | None = None, error: str | None = None,
                status: int = 200, username: str = "") -> Response:
    st = state_of(request)
    next_url = _safe_next(request.query_params.get("next") or "/")
    response = st.templates.TemplateResponse(request, "login.html", {
        "title": "Sign in", "csrf": token, "message": message, "error": error, "username": username,
        "next": next_url, "user": None, "nav": "", "version": __version__, "flash": None, "problems": [], "form": {},
        "idle_minutes": int(st.idle_timeout.total_seconds() // 60),
    }, status_code=status)
    auth.set_cookie(response, request, auth.LOGIN_CSRF_COOKIE, token, max_age=3600)
    return secure(response)


@router.get("/login")
def login_form(request: Request) -> Response:
    st = state_of(request)
    with st.ctl.sessions.begin() as s:
        got = auth.load(s, request, st.clock(), st.idle_timeout, st.lifetime)
    if isinstance(got, auth.Authenticated) and not got.mfa_due:
        return redirect("/")
    reason = request.query_params.get("reason", "")
    message = REASONS.get(reason, "").format(idle=int(st.idle_timeout.total_seconds() // 60)) or None
    token = request.cookies.get(auth.LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    return _login_page(request, token, message=message)


@router.post("/login")
async def login_submit(request: Request) -> Response:
    form = await bounded_form(request)
    return await run_in_threadpool(_login, request, form)


def _login(request: Request, form: FormData) -> Response:
    st = state_of(request)
    token = request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")
    fresh = secrets.token_urlsafe(32)
    try:
        auth.check_csrf(request, form, token)
    except auth.CsrfError as exc:
        return _login_page(request, fresh, error=f"{exc} (cookies must be enabled)", status=403)
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    client = auth.client_of(request)
    now = st.clock()
    failure: LoginFailed | None = None
    with st.ctl.sessions.begin() as s:
        # A new sign-in ends whatever session this browser had (no session fixation).
        old = auth.load(s, request, now, st.idle_timeout, st.lifetime)
        if isinstance(old, auth.Authenticated):
            auth.end(old.web_session, now, "replaced")
        try:
            user = users.check_login(s, username, password, client, now)
        except LoginFailed as exc:
            failure = exc
        else:
            mfa = users.needs_mfa(user)
            if not mfa:
                users.complete_login(s, user, client, mfa=False, now=now)
            cookie = auth.new_session(s, user, now, client, mfa_passed=not mfa)
            enrolled = bool(user.totp_enabled)
    if failure is not None:
        # One status and one text for an unknown name, a wrong password and a locked account alike.
        return _login_page(request, fresh, error=str(failure), status=401, username=username)
    if mfa:
        target = "/login/totp" if enrolled else "/login/enrol"
        next_url = _safe_next(str(form.get("next") or "/"))
        if next_url != "/":
            target += "?" + urlencode({"next": next_url})
    else:
        target = _safe_next(str(form.get("next") or "/"))
    response = redirect(target)
    auth.set_cookie(response, request, auth.COOKIE, cookie)
    auth.clear_cookie(response, request, auth.LOGIN_CSRF_COOKIE)
    return response


def _mfa_page(c: Ctx, template: str, **context: Any) -> Response:
    next_url = _safe_next(c.request.query_params.get("next") or "/")
    return c.render(template, "Second factor", next=next_url, **context)


@router.get("/login/totp")
def totp_form(request: Request) -> Response:
    with page(request, mfa_pending=True) as c:
        if not c.ws.mfa_passed and not c.user.totp_enabled:
            raise Redirect("/login/enrol")
        if c.ws.mfa_passed:
            raise Redirect("/")
        return _mfa_page(c, "totp.html")


def _qr(uri: str) -> Markup:
    svg = segno.make(uri, error="m").svg_inline(scale=4, title="QR code for the authenticator app",
                                                svgclass="qr", lineclass="qr-line")
    return Markup(svg)


@router.get("/login/enrol")
def enrol_form(request: Request) -> Response:
    with page(request, mfa_pending=True) as c:
        return render_enrol(c)


def render_enrol(c: Ctx) -> Response:
    if c.ws.mfa_passed:
        raise Redirect("/")
    if c.user.totp_enabled:
        raise Redirect("/login/totp")
    if not c.user.totp_secret:
        c.user.totp_secret = users.new_totp_secret()
    uri = users.totp_uri(c.user, c.user.totp_secret)
    grouped = " ".join(c.user.totp_secret[i:i + 4] for i in range(0, len(c.user.totp_secret), 4))
    return _mfa_page(c, "enrol.html", secret=c.user.totp_secret, grouped=grouped, uri=uri, qr=_qr(uri))


@router.post("/login/totp")
async def totp_submit(request: Request) -> Response:
    form = await bounded_form(request)
    return await run_in_threadpool(_second_factor, request, form, False)


@router.post("/login/enrol")
async def enrol_submit(request: Request) -> Response:
    form = await bounded_form(request)
    return await run_in_threadpool(_second_factor, request, form, True)


def _second_factor(request: Request, form: FormData, enrol: bool) -> Response:
    code = str(form.get("code") or "")
    next_url = _safe_next(str(form.get("next") or "/"))
    failure: LoginFailed | None = None
    with page(request, mfa_pending=True) as c:
        try:
            auth.check_csrf(request, form, c.ws.csrf_token)
        except auth.CsrfError as exc:
            raise Refused(str(exc)) from None
        if c.ws.mfa_passed:
            raise Redirect(next_url)
        client = auth.client_of(request)
        user: User = c.user
        try:
            if enrol:
                users.enrol_totp(c.s, user, code, client, c.now)
            else:
                users.verify_totp(c.s, user, code, client, c.now)
        except LoginFailed as exc:
            failure = exc
            if exc.locked:
                auth.end(c.ws, c.now, "locked")
        else:
            c.ws.mfa_passed = True
            users.complete_login(c.s, user, client, mfa=True, now=c.now)
    if failure is None:
        return redirect(next_url)
    if failure.locked:
        response = redirect("/login?reason=locked")
        auth.clear_cookie(response, request, auth.COOKIE)
        return response
    with page(request, mfa_pending=True) as c:
        c.error, c.status = str(failure), 401
        return render_enrol(c) if enrol else _mfa_page(c, "totp.html")


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await bounded_form(request)
    return await run_in_threadpool(_logout, request, form)


def _logout(request: Request, form: FormData) -> Response:
    with page(request, mfa_pending=True) as c:
        try:
            auth.check_csrf(request, form, c.ws.csrf_token)
        except auth.CsrfError as exc:
            raise Refused(str(exc)) from None
        auth.end(c.ws, c.now, "logout")
        audit.record(c.s, c.user.username, "user.logout", "user", c.user.username,
                     {"client": auth.client_of(request)}, at=c.now)
    response = redirect("/login?reason=logout")
    auth.clear_cookie(response, request, auth.COOKIE)
    return response
