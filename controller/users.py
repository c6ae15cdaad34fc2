"""Users, roles and API keys.

Passwords are stored as scrypt hashes; API keys as SHA-256 of a random secret (they are long and
random, so a slow hash adds nothing). Roles nest: viewer reads; analyst also works tickets and requests
changes; admin also manages baselines, users, approvals and tokens.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.errors import UsageError
from controller import audit
from controller.db.models import ApiKey, User
from controller.errors import Conflict, NotFound

ROLES = ("viewer", "analyst", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
MIN_PASSWORD = 12
_N, _R, _P = 2**14, 8, 1


def role_allows(role: str, needed: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[needed]


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
