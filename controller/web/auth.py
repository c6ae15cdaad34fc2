"""Browser sessions and CSRF for the web UI.

A session is a row of ``web_sessions`` keyed by the SHA-256 of a random cookie value (the cookie itself is
never stored), so logout, idle timeout and locking end it at once on every replica. The cookie is
``HttpOnly``, ``SameSite=Strict`` and ``Secure`` over https.

CSRF: every POST carries the session's token (form field ``csrf_token`` or header ``X-CSRF-Token``), and
an ``Origin`` header, when the browser sends one, must name this host. The login form, which has no
session yet, uses a double-submit cookie, so that nobody can sign a victim's browser in to their account.

The password and TOTP rules themselves live in :mod:`controller.domain.users`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from controller.domain.users import needs_mfa
from controller.storage.models import User, WebSession

__all__ = [
    "ABSOLUTE_LIFETIME",
    "COOKIE",
    "IDLE_TIMEOUT",
    "LOGIN_CSRF_COOKIE",
    "Authenticated",
    "CsrfError",
    "check_csrf",
    "end",
    "load",
    "new_session",
]

COOKIE = "vigil_session"
LOGIN_CSRF_COOKIE = "vigil_login_csrf"
FLASH_COOKIE = "vigil_flash"
# TPEx-CPA 3(7)4(1)B: idle sessions time out. Requests the page makes by itself (auto-refresh) do not
# count as activity.
IDLE_TIMEOUT = dt.timedelta(minutes=15)
ABSOLUTE_LIFETIME = dt.timedelta(hours=12)
# last_active is written at most this often, so that reading pages does not write on every request.
_TOUCH_EVERY = dt.timedelta(seconds=10)
BACKGROUND_HEADER = "x-vigil-background"


class CsrfError(PermissionError):
    pass


@dataclass
class Authenticated:
    web_session: WebSession
    user: User

    @property
    def mfa_due(self) -> bool:
        return needs_mfa(self.user) and not self.web_session.mfa_passed


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def client_of(request: Request) -> str:
    return request.client.host if request.client else ""


def new_session(s: Session, user: User, now: dt.datetime, client: str, mfa_passed: bool) -> str:
    """Start a session; returns the cookie value."""
    value = secrets.token_urlsafe(32)
    s.add(WebSession(id=_digest(value), username=user.username, created_at=now, last_active=now,
                     csrf_token=secrets.token_urlsafe(32), mfa_passed=mfa_passed, client=client[:255],
                     end_reason=""))
    s.flush()
    return value


def load(s: Session, request: Request, now: dt.datetime, idle: dt.timedelta = IDLE_TIMEOUT,
         lifetime: dt.timedelta = ABSOLUTE_LIFETIME) -> Authenticated | str:
    """The live session of this request, or why there is none: ``none``, ``idle``, ``expired``, ``ended``,
    ``locked``. A session found idle or too old is ended here (``end_reason``)."""
    value = request.cookies.get(COOKIE)
    if not value:
        return "none"
    row = s.get(WebSession, _digest(value))
    if row is None:
        return "none"
    if row.ended_at is not None:
        return row.end_reason if row.end_reason in ("idle", "expired", "locked") else "ended"
    user = s.get(User, row.username)
    if user is None or user.disabled or user.locked:
        end(row, now, "locked")
        return "locked"
    if now - row.last_active > idle:
        end(row, now, "idle")
        return "idle"
    if now - row.created_at > lifetime:
        end(row, now, "expired")
        return "expired"
    if request.headers.get(BACKGROUND_HEADER) != "1" and now - row.last_active >= _TOUCH_EVERY:
        row.last_active = now
    return Authenticated(row, user)


def end(row: WebSession, now: dt.datetime, reason: str) -> None:
    if row.ended_at is None:
        row.ended_at, row.end_reason = now, reason


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


def check_csrf(request: Request, form: Mapping[str, object], expected: str) -> None:
    """Refuse a state-changing request without the expected token, or from another origin."""
    if not _same_origin(request):
        raise CsrfError(f"request from another origin ({request.headers.get('origin')}) refused")
    given = request.headers.get("x-csrf-token") or form.get("csrf_token")
    if not isinstance(given, str) or not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfError("missing or wrong CSRF token: reload the page and try again")


# -- flash messages: one message for the next page, signed with the session's CSRF token ----------------


def flash_value(key: str, message: str) -> str:
    body = base64.urlsafe_b64encode(json.dumps(message).encode()).decode()
    return body + "." + hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()


def read_flash(key: str, value: str | None) -> str | None:
    if not value or "." not in value:
        return None
    body, _, mac = value.rpartition(".")
    if not hmac.compare_digest(mac, hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()):
        return None
    try:
        message = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError:
        return None
    return message if isinstance(message, str) else None
