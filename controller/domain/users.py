"""Users, roles and API keys.

Passwords are stored as scrypt hashes; API keys as SHA-256 of a random secret (they are long and
random, so a slow hash adds nothing). Roles nest: viewer reads; analyst also works tickets and requests
changes; admin also manages baselines, users, approvals and tokens.

Interactive login (the web UI) lives here too, so that every door shares one set of rules:
:func:`check_login` (password), :func:`verify_totp` (RFC 6238 second factor, required for admins and for
anyone who enrolled), :func:`complete_login`. :data:`MAX_FAILED_LOGINS` consecutive failures, wrong
passwords and wrong codes alike, lock the account (TSA-ET Art.9, SFA-ETG Art.36) until an admin runs
``vigil-controller user unlock``; locking ends the user's browser sessions at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.errors import UsageError
from controller.domain import audit
from controller.errors import Conflict, ControllerError, Forbidden, NotFound
from controller.storage.models import ApiKey, User, WebSession

ROLES = ("viewer", "analyst", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
MIN_PASSWORD = 12
_N, _R, _P = 2**14, 8, 1
MAX_FAILED_LOGINS = 5
TOTP_STEP = 30
TOTP_DIGITS = 6
TOTP_ISSUER = "Vigil"


def role_allows(role: str, needed: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[needed]


def require(user: User, role: str, what: str) -> None:
    """Refuse ``what`` (e.g. "working a ticket") unless ``user`` has at least ``role``."""
    if not role_allows(user.role, role):
        raise Forbidden(f"{what} needs the {role} role; {user.username} is {user.role}")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def validate_password(password: str) -> None:
    """Strong passwords (TSA-ET Art.9): length and at least three character classes."""
    classes = sum(
        [any(c.islower() for c in password), any(c.isupper() for c in password),
         any(c.isdigit() for c in password), any(not c.isalnum() for c in password)]
    )
    if len(password) < MIN_PASSWORD or classes < 3:
        raise UsageError(
            f"password too weak: use at least {MIN_PASSWORD} characters from at least three of lower case, "
            "upper case, digits and symbols"
        )


def create_user(session: Session, username: str, role: str, password: str, actor: str) -> User:
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not username or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"invalid username {username!r}: use letters, digits, '.', '-' and '_'")
    validate_password(password)
    if session.get(User, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, role=role, password_hash=hash_password(password),
                created_at=dt.datetime.now(dt.UTC), failed_logins=0, locked=False, disabled=False)
    session.add(user)
    session.flush()
    audit.record(session, actor, "user.create", "user", username, {"role": role})
    return user


def create_api_key(session: Session, username: str, actor: str) -> str:
    if session.get(User, username) is None:
        raise NotFound(f"no user {username!r}: create it first with 'vigil-controller user create'")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    session.add(ApiKey(id=key_id, username=username, key_hash=hashlib.sha256(secret.encode()).hexdigest(),
                       created_at=dt.datetime.now(dt.UTC)))
    audit.record(session, actor, "apikey.create", "apikey", key_id, {"username": username})
    return f"vk_{key_id}_{secret}"


def user_for_api_key(session: Session, key: str) -> User | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "vk":
        return None
    row = session.execute(select(ApiKey).where(ApiKey.id == parts[1])).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, hashlib.sha256(parts[2].encode()).hexdigest()):
        return None
    user = session.get(User, row.username)
    if user is None or user.disabled:
        return None
    return user


# -- interactive login ---------------------------------------------------------------------------------


@functools.cache
def _dummy_hash() -> str:
    """Compared against when the username is unknown, so the answer takes as long as for a real user."""
    return hash_password(secrets.token_hex(16))


class LoginFailed(ControllerError, PermissionError):
    """A login was refused. ``locked`` says the (existing) account is locked; the message never says
    whether an unknown username exists."""

    def __init__(self, message: str, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


WRONG_CREDENTIALS = "wrong username or password"


def locked_message(username: str) -> str:
    return (f"account {username} is locked after {MAX_FAILED_LOGINS} failed sign-in attempts; ask an admin to "
            "unlock it (vigil-controller user unlock)")


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def needs_mfa(user: User) -> bool:
    """Admins must use a second factor (SFA-ETG Art.8-2(3)); anyone who enrolled uses theirs."""
    return user.role == "admin" or bool(user.totp_enabled)


def check_login(session: Session, username: str, password: str, client: str = "",
                now: dt.datetime | None = None) -> User:
    """The user whose password this is, or :class:`LoginFailed`. A wrong password counts towards the
    lockout; a locked account is refused even with the right password. The failure is audited; the
    success is not yet (see :func:`complete_login`), since a second factor may still be due."""
    when = _now(now)
    name = username.strip()[:128]
    user = session.get(User, name) if name else None
    if user is None or user.disabled:
        check_password(password, _dummy_hash())
        audit.record(session, name or "-", "user.login_failed", "user", name or "-",
                     {"reason": "unknown or disabled user", "client": client}, at=when)
        raise LoginFailed(WRONG_CREDENTIALS)
    if user.locked:
        check_password(password, _dummy_hash())
        audit.record(session, name, "user.login_failed", "user", name, {"reason": "locked", "client": client},
                     at=when)
        raise LoginFailed(locked_message(name), locked=True)
    if not check_password(password, user.password_hash):
        if record_failure(session, user, "wrong password", client, when):
            raise LoginFailed(locked_message(name), locked=True)
        raise LoginFailed(WRONG_CREDENTIALS)
    return user


def record_failure(session: Session, user: User, reason: str, client: str = "", now: dt.datetime | None = None
                   ) -> bool:
    """Count one failed attempt (audited); lock the account at the limit. True when it is now locked."""
    when = _now(now)
    user.failed_logins = (user.failed_logins or 0) + 1
    audit.record(session, user.username, "user.login_failed", "user", user.username,
                 {"reason": reason, "failed_logins": user.failed_logins, "client": client}, at=when)
    if user.failed_logins >= MAX_FAILED_LOGINS and not user.locked:
        lock(session, user, f"{user.failed_logins} consecutive failed sign-in attempts", when)
    return bool(user.locked)


def lock(session: Session, user: User, reason: str, now: dt.datetime | None = None) -> None:
    when = _now(now)
    user.locked, user.locked_at = True, when
    audit.record(session, "system", "user.lock", "user", user.username, {"reason": reason}, at=when)
    end_sessions(session, user.username, "locked", when)


def end_sessions(session: Session, username: str, reason: str, now: dt.datetime | None = None) -> int:
    when = _now(now)
    rows = session.execute(select(WebSession).where(WebSession.username == username,
                                                    WebSession.ended_at.is_(None))).scalars().all()
    for row in rows:
        row.ended_at, row.end_reason = when, reason
    return len(rows)


def complete_login(session: Session, user: User, client: str = "", mfa: bool = False,
                   now: dt.datetime | None = None) -> None:
    """All factors given: reset the failure count, remember the time, audit ``user.login``."""
    when = _now(now)
    user.failed_logins = 0
    user.last_login_at = when
    audit.record(session, user.username, "user.login", "user", user.username,
                 {"mfa": "totp" if mfa else "none", "client": client}, at=when)


def unlock(session: Session, username: str, actor: str) -> User:
    user = session.get(User, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    was = bool(user.locked)
    user.locked, user.locked_at, user.failed_logins = False, None, 0
    audit.record(session, actor, "user.unlock", "user", username, {"was_locked": was})
    return user


# -- TOTP (RFC 6238: 30 s steps, 6 digits, one step of drift either way, each step used once) ---------


def new_totp_secret() -> str:
    import pyotp

    return str(pyotp.random_base32())


def totp_uri(user: User, secret: str) -> str:
    import pyotp

    return str(pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP).provisioning_uri(
        name=user.username, issuer_name=TOTP_ISSUER))


def _matching_step(secret: str, code: str, when: dt.datetime) -> int | None:
    import pyotp

    code = code.strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP)
    step = int(when.timestamp()) // TOTP_STEP
    for candidate in (step - 1, step, step + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


def verify_totp(session: Session, user: User, code: str, client: str = "", now: dt.datetime | None = None) -> None:
    """Accept a code of the enrolled secret once; a wrong or replayed code counts towards the lockout.
    Raises :class:`LoginFailed`."""
    when = _now(now)
    if user.locked:
        raise LoginFailed(locked_message(user.username), locked=True)
    if not user.totp_enabled or not user.totp_secret:
        raise LoginFailed("no authenticator is enrolled for this account")
    step = _matching_step(user.totp_secret, code, when)
    if step is None or step <= (user.totp_last_step or 0):
        why = "wrong authentication code" if step is None else "authentication code already used"
        if record_failure(session, user, why, client, when):
            raise LoginFailed(locked_message(user.username), locked=True)
        raise LoginFailed(f"{why}; enter the current 6-digit code from your authenticator app")
    user.totp_last_step = step


def enrol_totp(session: Session, user: User, code: str, client: str = "", now: dt.datetime | None = None) -> None:
    """Confirm the pending secret (``user.totp_secret``) with a code from the authenticator."""
    when = _now(now)
    if not user.totp_secret:
        raise LoginFailed("no authenticator secret is pending; reload the enrolment page")
    step = _matching_step(user.totp_secret, code, when)
    if step is None:
        if record_failure(session, user, "wrong authentication code at enrolment", client, when):
            raise LoginFailed(locked_message(user.username), locked=True)
        raise LoginFailed("that code does not match the secret; check the clock of the device and try the next code")
    user.totp_enabled, user.totp_last_step = True, step
    audit.record(session, user.username, "user.totp_enrol", "user", user.username, {"client": client}, at=when)


def reset_totp(session: Session, username: str, actor: str) -> User:
    """Forget the user's authenticator (a lost phone): they enrol a new one at their next login."""
    user = session.get(User, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    user.totp_secret, user.totp_enabled, user.totp_last_step = None, False, 0
    audit.record(session, actor, "user.totp_reset", "user", username, {})
    end_sessions(session, username, "totp_reset")
    return user
