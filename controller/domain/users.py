"""Users, roles and API keys.

Passwords are stored as scrypt hashes; API keys as SHA-256 of a random secret (they are long and
random, so a slow hash adds nothing). Roles nest: viewer reads; analyst also works tickets and requests
changes; admin also manages baselines, users, approvals and tokens.

Interactive login (the web UI) lives here too, so that every door shares one set of rules:
:func:`check_login` (password), :func:`verify_totp` (RFC 6238 second factor, required for admins and for
anyone who enrolled), :func:`complete_login`.

The lockout (TSA-ET Art.9, SFA-ETG Art.36) never tells whether an account exists and does not let a stranger
lock anyone out from one address: failed passwords are counted per (account name, source address) in
``login_throttle``, for names that exist and names that do not alike. :data:`MAX_FAILED_LOGINS` of them from
one source refuse that name from that source for :data:`SOURCE_LOCK` (or until an admin unlocks it);
:data:`MAX_FAILED_TOTAL` for one account within :data:`THROTTLE_WINDOW`, from any sources, lock the account
for everyone (``users.locked``) until an admin unlocks it. Every refusal of a password sign-in is the same
:data:`REFUSED` text and costs one password hash. A wrong second-factor code comes from someone who knows the
password: :data:`MAX_FAILED_LOGINS` consecutive ones lock the account. Locking and disabling end the user's
browser sessions at once, and a locked or disabled user's API keys are refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import secrets

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from common.errors import UsageError
from controller.domain import audit
from controller.errors import Conflict, ControllerError, Forbidden, NotFound
from controller.storage.models import ApiKey, LoginThrottle, User, WebSession

ROLES = ("viewer", "analyst", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
MIN_PASSWORD = 12
_N, _R, _P = 2**14, 8, 1
MAX_FAILED_LOGINS = 5
MAX_FAILED_TOTAL = 20
SOURCE_LOCK = dt.timedelta(minutes=15)
THROTTLE_WINDOW = dt.timedelta(hours=24)
# Rows older than THROTTLE_WINDOW are deleted as sign-ins arrive, at most this many per sign-in.
_PRUNE_BATCH = 500
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


def check_api_key(session: Session, key: str) -> tuple[User | None, ApiKey | None, str]:
    """(the key's user, the key row, "") for a key that may be used now; else (None, the row if the key id is
    known, why it is refused). A key is refused when revoked, when its secret is wrong and when its user is
    locked or disabled."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "vk" or not parts[1] or len(parts[1]) > 32:
        return None, None, "malformed key"
    row = session.execute(select(ApiKey).where(ApiKey.id == parts[1])).scalar_one_or_none()
    if row is None:
        return None, None, "unknown key id"
    if not hmac.compare_digest(row.key_hash, hashlib.sha256(parts[2].encode()).hexdigest()):
        return None, row, "wrong secret"
    if row.revoked_at is not None:
        return None, row, "revoked"
    user = session.get(User, row.username)
    if user is None or user.disabled:
        return None, row, "user disabled"
    if user.locked:
        return None, row, "user locked"
    return user, row, ""


def user_for_api_key(session: Session, key: str) -> User | None:
    """The user of a key that may be used now (see :func:`check_api_key`), else None."""
    return check_api_key(session, key)[0]


def audit_rejected_key(session: Session, row: ApiKey, reason: str, client: str = "") -> None:
    """Record that a known key was refused (revoked, wrong secret, user locked or disabled)."""
    audit.record(session, f"apikey:{row.id}", "apikey.rejected", "apikey", row.id,
                 {"username": row.username, "reason": reason, "client": client})


def list_api_keys(session: Session, username: str | None = None) -> list[ApiKey]:
    """Every API key (never its secret), or those of ``username``, oldest first."""
    q = select(ApiKey)
    if username:
        if session.get(User, username) is None:
            raise NotFound(f"no user {username!r}")
        q = q.where(ApiKey.username == username)
    return list(session.execute(q.order_by(ApiKey.created_at, ApiKey.id)).scalars())


def revoke_api_key(session: Session, key_id: str, actor: str) -> ApiKey:
    """Revoke a key for good (audited); revoking a revoked key changes nothing and records nothing."""
    row = session.get(ApiKey, key_id.removeprefix("vk_").split("_", 1)[0]) if key_id else None
    if row is None:
        raise NotFound(f"no API key {key_id!r}; 'vigil-controller apikey list' shows the ids")
    if row.revoked_at is None:
        row.revoked_at = dt.datetime.now(dt.UTC)
        audit.record(session, actor, "apikey.revoke", "apikey", row.id, {"username": row.username})
    return row


# -- users ---------------------------------------------------------------------------------------------


def list_users(session: Session) -> list[User]:
    return list(session.execute(select(User).order_by(User.username)).scalars())


def _user(session: Session, username: str) -> User:
    user = session.get(User, username) if username else None
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def disable(session: Session, username: str, actor: str) -> User:
    """Disable an account: it can no longer sign in, its sessions end now and its API keys are refused.
    The last enabled admin cannot be disabled (nobody could manage users any more)."""
    user = _user(session, username)
    if user.disabled:
        return user
    enabled_admins = select(User.username).where(User.role == "admin", User.disabled.is_(False))
    if user.role == "admin":
        # Two admins disabling each other at once must not both succeed: PostgreSQL locks the enabled
        # admins' rows here; on SQLite the flush below takes the one write lock before the count.
        session.execute(enabled_admins.with_for_update()).all()
    user.disabled = True
    session.flush()
    if user.role == "admin" and not session.execute(enabled_admins.limit(1)).first():
        user.disabled = False  # nothing changed, even for a caller that goes on in this transaction
        session.flush()
        raise Conflict(f"{username} is the last enabled admin; enable or create another admin first")
    ended = end_sessions(session, username, "disabled")
    audit.record(session, actor, "user.disable", "user", username, {"sessions_ended": ended})
    return user


def enable(session: Session, username: str, actor: str) -> User:
    user = _user(session, username)
    if user.disabled:
        user.disabled = False
        audit.record(session, actor, "user.enable", "user", username, {})
    return user


# -- interactive login ---------------------------------------------------------------------------------


@functools.cache
def _dummy_hash() -> str:
    """Compared against when the username is unknown, so the answer takes as long as for a real user."""
    return hash_password(secrets.token_hex(16))


class LoginFailed(ControllerError, PermissionError):
    """A login was refused. ``locked`` says the account is now locked for everyone (only ever set after the
    password was right, by a wrong second factor); a refused password never says more than :data:`REFUSED`."""

    def __init__(self, message: str, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


# One answer for an unknown name, a wrong password and a locked account alike.
REFUSED = ("wrong username or password, or too many failed sign-in attempts: wait 15 minutes or ask an admin "
           "to unlock the account")
WRONG_CREDENTIALS = REFUSED


def locked_message(username: str) -> str:
    return (f"account {username} is locked after {MAX_FAILED_LOGINS} failed sign-in attempts; ask an admin to "
            "unlock it (vigil-controller user unlock)")


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def needs_mfa(user: User) -> bool:
    """Admins must use a second factor (SFA-ETG Art.8-2(3)); anyone who enrolled uses theirs."""
    return user.role == "admin" or bool(user.totp_enabled)


def _prune_throttle(session: Session, when: dt.datetime) -> None:
    """Forget counts older than :data:`THROTTLE_WINDOW`, at most :data:`_PRUNE_BATCH` rows per sign-in."""
    old = select(LoginThrottle.username, LoginThrottle.source).where(
        LoginThrottle.last_at < when - THROTTLE_WINDOW).limit(_PRUNE_BATCH)
    session.execute(delete(LoginThrottle).where(tuple_(LoginThrottle.username, LoginThrottle.source).in_(old)))


def _count_failure(session: Session, name: str, source: str, when: dt.datetime) -> int:
    """One more failure for (name, source), atomically (two sign-ins at once both count); the new count."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(LoginThrottle).values(username=name, source=source, failures=1, first_at=when, last_at=when)
    session.execute(stmt.on_conflict_do_update(
        index_elements=[LoginThrottle.username, LoginThrottle.source],
        set_={"failures": LoginThrottle.failures + 1, "last_at": when}))
    count = session.execute(select(LoginThrottle.failures).where(
        LoginThrottle.username == name, LoginThrottle.source == source)).scalar_one()
    return int(count)


def _source_locked(row: LoginThrottle | None, when: dt.datetime) -> bool:
    return row is not None and row.failures >= MAX_FAILED_LOGINS and when - row.last_at < SOURCE_LOCK


def _total_failures(session: Session, name: str, when: dt.datetime) -> int:
    total = session.execute(select(func.coalesce(func.sum(LoginThrottle.failures), 0)).where(
        LoginThrottle.username == name, LoginThrottle.last_at >= when - THROTTLE_WINDOW)).scalar_one()
    return int(total)


def check_login(session: Session, username: str, password: str, client: str = "",
                now: dt.datetime | None = None) -> User:
    """The user whose password this is, or :class:`LoginFailed` with :data:`REFUSED`, whether the name is
    unknown, the password wrong or the account locked (for everyone, or for this source); each costs one
    password hash. Failures are counted per (name, source) and audited; the success is not audited yet (see
    :func:`complete_login`), since a second factor may still be due."""
    when = _now(now)
    name = username.strip()[:128]
    source = (client or "-")[:255]
    _prune_throttle(session, when)
    user = session.get(User, name) if name else None
    row = session.get(LoginThrottle, (name, source)) if name else None
    if user is None or user.disabled or user.locked or _source_locked(row, when):
        check_password(password, _dummy_hash())
        if user is None or user.disabled:
            reason = "unknown or disabled user"
        elif user.locked:
            reason = "locked"
        else:
            reason = "locked for this source"
        details: dict[str, object] = {"reason": reason, "client": client}
        if name and not _source_locked(row, when):
            # Attempts already refused for the source lock do not count again: hammering from one address
            # must not add up to the lock for everyone.
            details["failures_from_source"] = _count_failure(session, name, source, when)
        audit.record(session, name or "-", "user.login_failed", "user", name or "-", details, at=when)
        raise LoginFailed(REFUSED)
    if not check_password(password, user.password_hash):
        failures = _count_failure(session, name, source, when)
        total = _total_failures(session, name, when)
        audit.record(session, name, "user.login_failed", "user", name,
                     {"reason": "wrong password", "client": client, "failures_from_source": failures,
                      "failures_total": total}, at=when)
        if total >= MAX_FAILED_TOTAL:
            lock(session, user, f"{total} failed sign-in attempts within {THROTTLE_WINDOW.total_seconds() / 3600:g} h",
                 when)
        elif failures >= MAX_FAILED_LOGINS:
            audit.record(session, "system", "user.lock_source", "user", name,
                         {"client": client, "failures": failures, "for_s": int(SOURCE_LOCK.total_seconds())},
                         at=when)
        raise LoginFailed(REFUSED)
    return user


def record_failure(session: Session, user: User, reason: str, client: str = "", now: dt.datetime | None = None
                   ) -> bool:
    """Count one failed second factor (audited); lock the account at the limit. True when it is now locked."""
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
    session.execute(delete(LoginThrottle).where(LoginThrottle.username == user.username,
                                                LoginThrottle.source == (client or "-")[:255]))
    audit.record(session, user.username, "user.login", "user", user.username,
                 {"mfa": "totp" if mfa else "none", "client": client}, at=when)


def unlock(session: Session, username: str, actor: str) -> User:
    """Lift the lock for everyone and every per-source lock of the account, and forget its failures."""
    user = _user(session, username)
    was = bool(user.locked)
    user.locked, user.locked_at, user.failed_logins = False, None, 0
    sources = session.execute(delete(LoginThrottle).where(LoginThrottle.username == username)).rowcount  # type: ignore[attr-defined]
    audit.record(session, actor, "user.unlock", "user", username, {"was_locked": was, "sources_cleared": sources})
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


# -- JSON views (REST, CLI) ----------------------------------------------------------------------------


def user_json(user: User) -> dict[str, object]:
    from controller.storage.serialize import rfc3339

    return {"username": user.username, "role": user.role, "locked": bool(user.locked),
            "disabled": bool(user.disabled), "created_at": rfc3339(user.created_at),
            "locked_at": rfc3339(user.locked_at), "last_login_at": rfc3339(user.last_login_at),
            "totp_enabled": bool(user.totp_enabled)}


def api_key_json(row: ApiKey) -> dict[str, object]:
    """A key without its secret (which is never stored)."""
    from controller.storage.serialize import rfc3339

    return {"id": row.id, "username": row.username, "created_at": rfc3339(row.created_at),
            "revoked_at": rfc3339(row.revoked_at)}
