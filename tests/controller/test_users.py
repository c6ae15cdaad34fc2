"""Users, roles and API keys: strong passwords, scrypt hashes, keys that only work with their secret."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.errors import UsageError
from controller.domain import audit
from controller.domain.users import (
    MIN_PASSWORD,
    ROLES,
    check_password,
    create_api_key,
    create_user,
    hash_password,
    role_allows,
    user_for_api_key,
    validate_password,
)
from controller.errors import Conflict, NotFound
from controller.storage.models import ApiKey, AuditEntry, User
from tests.controller._db import migrated_sessions

GOOD = "Correct-Horse-42-battery"


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        yield factory


# -- passwords ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "aB3$aB3$aB3$",  # exactly the minimum length, all four classes
        "lowercaseUPPER1",  # three classes: lower, upper, digit
        "lower-case-12345",  # lower, symbol, digit
        "UPPER CASE 2024",  # upper, space counts as a symbol, digit
        GOOD,
    ],
)
def test_strong_passwords_are_accepted(password: str) -> None:
    validate_password(password)


@pytest.mark.parametrize(
    "password",
    [
        "",
        "aB3$aB3$aB3",  # one short of the minimum, all four classes
        "alllowercaseletters",  # one class
        "lowercaseUPPERcase",  # two classes
        "1234567890123456",  # one class
        "onlylower-and-symbols",  # two classes
    ],
)
def test_weak_passwords_are_refused(password: str) -> None:
    with pytest.raises(UsageError, match="password too weak") as info:
        validate_password(password)
    assert str(MIN_PASSWORD) in str(info.value)


def test_password_hash_is_scrypt_salted_and_checks() -> None:
    stored = hash_password(GOOD)
    assert stored.startswith("scrypt$16384$8$1$")
    assert GOOD not in stored
    assert check_password(GOOD, stored)
    assert not check_password(GOOD.upper(), stored)
    assert not check_password("", stored)
    # A fresh salt each time.
    again = hash_password(GOOD)
    assert again != stored
    assert check_password(GOOD, again)


@pytest.mark.parametrize(
    "stored",
    ["", "plain-text", "scrypt$x$8$1$AAAA$AAAA", "scrypt$16384$8$1$not base64!$AAAA", "scrypt$16384$8$1$AAAA"],
)
def test_malformed_stored_hash_never_matches(stored: str) -> None:
    assert not check_password(GOOD, stored)


# -- users --------------------------------------------------------------------------------------------


def test_create_user_stores_a_hash_and_audits(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        create_user(s, "alice.ops", "analyst", GOOD, "cli:root")
    with sessions() as s:
        user = s.get(User, "alice.ops")
        assert user is not None
        assert user.role == "analyst"
        assert (user.locked, user.disabled, user.failed_logins) == (False, False, 0)
        assert check_password(GOOD, user.password_hash)
        [entry] = s.execute(select(AuditEntry)).scalars().all()
        assert (entry.actor, entry.action, entry.object_id, entry.details) == (
            "cli:root",
            "user.create",
            "alice.ops",
            {"role": "analyst"},
        )
        assert GOOD not in str(entry.details)


@pytest.mark.parametrize(
    ("username", "role", "password", "error"),
    [
        ("bob", "superuser", GOOD, UsageError),
        ("", "viewer", GOOD, UsageError),
        ("bob smith", "viewer", GOOD, UsageError),
        ("bob;drop", "viewer", GOOD, UsageError),
        ("bob", "viewer", "short", UsageError),
    ],
)
def test_create_user_refuses_bad_input(
    sessions: sessionmaker[Session], username: str, role: str, password: str, error: type[Exception]
) -> None:
    with sessions.begin() as s, pytest.raises(error):
        create_user(s, username, role, password, "cli:root")
    with sessions() as s:
        assert s.execute(select(User)).first() is None


def test_duplicate_user_is_a_conflict(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        create_user(s, "alice", "admin", GOOD, "cli:root")
    with sessions() as s, pytest.raises(Conflict, match="already exists"):
        create_user(s, "alice", "viewer", GOOD, "cli:root")


# -- API keys -----------------------------------------------------------------------------------------


def new_key(sessions: sessionmaker[Session], username: str = "alice", role: str = "analyst") -> str:
    with sessions.begin() as s:
        if s.get(User, username) is None:
            create_user(s, username, role, GOOD, "cli:root")
        return create_api_key(s, username, "cli:root")


def lookup(sessions: sessionmaker[Session], key: str) -> str | None:
    with sessions() as s:
        user = user_for_api_key(s, key)
        return None if user is None else user.username


def test_api_key_finds_its_user(sessions: sessionmaker[Session]) -> None:
    key = new_key(sessions)
    assert key.startswith("vk_")
    assert lookup(sessions, key) == "alice"
    with sessions() as s:
        [row] = s.execute(select(ApiKey)).scalars().all()
        assert key.split("_", 2)[2] not in row.key_hash
        assert key == f"vk_{row.id}_{key.split('_', 2)[2]}"
        assert [e.action for e in s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars()] == [
            "user.create",
            "apikey.create",
        ]
        assert audit.verify(s).ok


def test_each_key_is_distinct(sessions: sessionmaker[Session]) -> None:
    a, b = new_key(sessions), new_key(sessions)
    assert a != b
    assert lookup(sessions, a) == lookup(sessions, b) == "alice"


def test_api_key_with_wrong_secret_is_refused(sessions: sessionmaker[Session]) -> None:
    key = new_key(sessions)
    prefix, key_id, secret = key.split("_", 2)
    assert lookup(sessions, f"{prefix}_{key_id}_{secret[:-1]}") is None
    assert lookup(sessions, f"{prefix}_{key_id}_{'x' * len(secret)}") is None
    assert lookup(sessions, f"{prefix}_{key_id}_") is None


@pytest.mark.parametrize("key", ["", "vk_", "vk_only", "xx_abc_def", "Bearer vk_a_b", "vk_000000000000_secret"])
def test_malformed_or_unknown_keys_are_refused(sessions: sessionmaker[Session], key: str) -> None:
    new_key(sessions)
    assert lookup(sessions, key) is None


def test_api_key_for_unknown_user_is_not_found(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, pytest.raises(NotFound, match="no user 'ghost'"):
        create_api_key(s, "ghost", "cli:root")


def test_revoked_key_and_disabled_user_are_refused(sessions: sessionmaker[Session]) -> None:
    revoked, live = new_key(sessions), new_key(sessions, "bob")
    with sessions.begin() as s:
        row = s.get(ApiKey, revoked.split("_", 2)[1])
        assert row is not None
        row.revoked_at = dt.datetime.now(dt.UTC)
    assert lookup(sessions, revoked) is None
    assert lookup(sessions, live) == "bob"

    with sessions.begin() as s:
        bob = s.get(User, "bob")
        assert bob is not None
        bob.disabled = True
    assert lookup(sessions, live) is None


# -- roles --------------------------------------------------------------------------------------------


def test_roles_nest_viewer_analyst_admin() -> None:
    assert ROLES == ("viewer", "analyst", "admin")
    allowed = {(have, need) for have in ROLES for need in ROLES if role_allows(have, need)}
    assert allowed == {
        ("viewer", "viewer"),
        ("analyst", "viewer"),
        ("analyst", "analyst"),
        ("admin", "viewer"),
        ("admin", "analyst"),
        ("admin", "admin"),
    }


@pytest.mark.parametrize("role", ["", "root", "Admin", "superuser"])
def test_unknown_role_allows_nothing(role: str) -> None:
    assert not any(role_allows(role, need) for need in ROLES)
