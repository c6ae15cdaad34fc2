"""Users, roles and API keys: strong passwords, scrypt hashes, keys that only work with their secret."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.errors import UsageError
from controller.domain import audit, users
from controller.domain.users import (
    MAX_FAILED_LOGINS,
    MAX_FAILED_TOTAL,
    MIN_PASSWORD,
    REFUSED,
    ROLES,
    SOURCE_LOCK,
    THROTTLE_WINDOW,
    LoginFailed,
    check_api_key,
    check_login,
    check_password,
    create_api_key,
    create_user,
    hash_password,
    role_allows,
    user_for_api_key,
    validate_password,
)
from controller.errors import Conflict, NotFound
from controller.storage.models import ApiKey, AuditEntry, LoginThrottle, User, WebSession
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


def test_a_locked_users_keys_are_refused_until_unlocked(sessions: sessionmaker[Session]) -> None:
    key = new_key(sessions)
    with sessions.begin() as s:
        alice = s.get(User, "alice")
        assert alice is not None
        users.lock(s, alice, "test")
    with sessions() as s:
        user, row, reason = check_api_key(s, key)
        assert user is None and row is not None and reason == "user locked"
    with sessions.begin() as s:
        users.unlock(s, "alice", "cli:root")
    assert lookup(sessions, key) == "alice"


def test_revoke_lists_and_audits_without_the_secret(sessions: sessionmaker[Session]) -> None:
    a, b = new_key(sessions), new_key(sessions, "bob")
    key_id = a.split("_", 2)[1]
    with sessions.begin() as s:
        users.revoke_api_key(s, key_id, "cli:root")
        users.revoke_api_key(s, key_id, "cli:root")  # again: nothing changes, nothing recorded
    assert lookup(sessions, a) is None and lookup(sessions, b) == "bob"
    with sessions() as s:
        listed = [users.api_key_json(k) for k in users.list_api_keys(s)]
        assert [(k["id"], k["username"], k["revoked_at"] is not None) for k in listed] == [
            (key_id, "alice", True), (b.split("_", 2)[1], "bob", False)]
        assert all(a.split("_", 2)[2] not in str(k) for k in listed)
        assert [k.id for k in users.list_api_keys(s, "bob")] == [b.split("_", 2)[1]]
        with pytest.raises(NotFound, match="no user 'ghost'"):
            users.list_api_keys(s, "ghost")
        with pytest.raises(NotFound, match="no API key 'nope'"):
            users.revoke_api_key(s, "nope", "cli:root")
        revokes = s.execute(select(AuditEntry).where(AuditEntry.action == "apikey.revoke")).scalars().all()
        assert [(e.actor, e.object_id, e.details) for e in revokes] == [("cli:root", key_id, {"username": "alice"})]


def test_disable_ends_sessions_and_spares_the_last_admin(sessions: sessionmaker[Session]) -> None:
    now = dt.datetime.now(dt.UTC)
    with sessions.begin() as s:
        create_user(s, "root", "admin", GOOD, "cli:root")
        create_user(s, "carol", "analyst", GOOD, "cli:root")
        s.add(WebSession(id="x" * 64, username="carol", created_at=now, last_active=now, csrf_token="t",
                         mfa_passed=True, client="", end_reason=""))
    with sessions.begin() as s:
        with pytest.raises(Conflict, match="root is the last enabled admin"):
            users.disable(s, "root", "root")
        users.disable(s, "carol", "root")
    with sessions.begin() as s:
        ws = s.get(WebSession, "x" * 64)
        assert ws is not None and ws.ended_at is not None and ws.end_reason == "disabled"
    assert _attempt(sessions, "carol", GOOD, "10.0.0.1", now) == REFUSED
    with sessions.begin() as s:
        users.enable(s, "carol", "root")
    assert _attempt(sessions, "carol", GOOD, "10.0.0.1", now) == "ok"
    with sessions.begin() as s:
        create_user(s, "root2", "admin", GOOD, "cli:root")
        users.disable(s, "root", "root2")  # another admin is left
    with sessions() as s:
        got = [(e.actor, e.action, e.object_id) for e in s.execute(
            select(AuditEntry).where(AuditEntry.action.in_(["user.disable", "user.enable"]))
            .order_by(AuditEntry.seq)).scalars()]
        assert got == [("root", "user.disable", "carol"), ("root", "user.enable", "carol"),
                       ("root2", "user.disable", "root")]
        with pytest.raises(NotFound):
            users.disable(s, "ghost", "root")


# -- sign-in lockout ------------------------------------------------------------------------------------


def _attempt(sessions: sessionmaker[Session], name: str, password: str, source: str, when: dt.datetime) -> str:
    """"ok", or the refusal's text. As the sign-in page does, the refusal is caught inside the transaction, so
    that the count and the audit entry it wrote are committed."""
    with sessions.begin() as s:
        try:
            check_login(s, name, password, source, when)
        except LoginFailed as exc:
            return str(exc)
    return "ok"


def _actions(sessions: sessionmaker[Session], action: str) -> list[dict[str, object]]:
    with sessions() as s:
        return [e.details for e in s.execute(select(AuditEntry).where(AuditEntry.action == action)
                                             .order_by(AuditEntry.seq)).scalars()]


def test_five_wrong_passwords_lock_the_account_for_that_source_only(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        create_user(s, "alice", "admin", GOOD, "cli:root")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for _ in range(MAX_FAILED_LOGINS):
        assert _attempt(sessions, "alice", "wrong-password", "10.0.0.9", t0) == REFUSED
    # Refused from that source even with the right password, with the same text; another source signs in.
    assert _attempt(sessions, "alice", GOOD, "10.0.0.9", t0) == REFUSED
    assert _attempt(sessions, "alice", GOOD, "10.0.0.1", t0) == "ok"
    with sessions() as s:
        alice = s.get(User, "alice")
        assert alice is not None and not alice.locked
        row = s.get(LoginThrottle, ("alice", "10.0.0.9"))
        assert row is not None and row.failures == MAX_FAILED_LOGINS  # refusals under the lock do not count
    assert [d["client"] for d in _actions(sessions, "user.lock_source")] == ["10.0.0.9"]
    # The lock lapses after SOURCE_LOCK.
    assert _attempt(sessions, "alice", GOOD, "10.0.0.9", t0 + SOURCE_LOCK) == "ok"


def test_an_admin_unlock_lifts_the_source_lock(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        create_user(s, "alice", "analyst", GOOD, "cli:root")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for _ in range(MAX_FAILED_LOGINS):
        _attempt(sessions, "alice", "wrong-password", "10.0.0.9", t0)
    with sessions.begin() as s:
        users.unlock(s, "alice", "root")
    assert _attempt(sessions, "alice", GOOD, "10.0.0.9", t0) == "ok"


def test_twenty_wrong_passwords_from_many_sources_lock_it_for_everyone(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        create_user(s, "alice", "analyst", GOOD, "cli:root")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(MAX_FAILED_TOTAL):
        assert _attempt(sessions, "alice", "wrong-password", f"10.0.1.{i % 4}",
                        t0 + dt.timedelta(minutes=i)) == REFUSED
    with sessions() as s:
        alice = s.get(User, "alice")
        assert alice is not None and alice.locked
    assert len(_actions(sessions, "user.lock")) == 1
    later = t0 + dt.timedelta(hours=1)
    assert _attempt(sessions, "alice", GOOD, "10.9.9.9", later) == REFUSED
    with sessions.begin() as s:
        users.unlock(s, "alice", "root")
    assert _attempt(sessions, "alice", GOOD, "10.9.9.9", later) == "ok"


def test_unknown_names_are_counted_and_answered_like_real_ones(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        create_user(s, "alice", "analyst", GOOD, "cli:root")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    answers = {_attempt(sessions, name, "wrong-password", "10.0.0.9", t0)
               for name in ("alice", "ghost") for _ in range(MAX_FAILED_LOGINS + 2)}
    assert answers == {REFUSED}
    with sessions() as s:
        rows = {r.username: r.failures for r in s.execute(select(LoginThrottle)).scalars()}
        assert rows == {"alice": MAX_FAILED_LOGINS, "ghost": MAX_FAILED_LOGINS}
    reasons = [d["reason"] for d in _actions(sessions, "user.login_failed")]
    assert reasons.count("unknown or disabled user") == MAX_FAILED_LOGINS + 2


def test_every_refusal_costs_one_password_hash(sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    with sessions.begin() as s:
        create_user(s, "alice", "analyst", GOOD, "cli:root")
        create_user(s, "bob", "analyst", GOOD, "cli:root")
        bob = s.get(User, "bob")
        assert bob is not None
        users.lock(s, bob, "test")
    calls: list[str] = []
    real = users.check_password
    monkeypatch.setattr(users, "check_password", lambda p, h: calls.append(h) or real(p, h))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for name in ("ghost", "alice", "bob"):
        calls.clear()
        _attempt(sessions, name, "wrong-password", "10.0.0.9", t0)
        assert len(calls) == 1 and calls[0].startswith("scrypt$"), name


def test_throttle_rows_older_than_a_day_are_pruned_a_batch_at_a_time(sessions: sessionmaker[Session],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users, "_PRUNE_BATCH", 2)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(3):
        _attempt(sessions, f"ghost{i}", "wrong-password", "10.0.0.9", t0)
    later = t0 + THROTTLE_WINDOW + dt.timedelta(seconds=1)

    def names() -> set[str]:
        with sessions() as s:
            return {r.username for r in s.execute(select(LoginThrottle)).scalars()}

    _attempt(sessions, "other", "wrong-password", "10.0.0.9", later)
    assert len(names() - {"other"}) == 1 and "other" in names()
    _attempt(sessions, "other", "wrong-password", "10.0.0.9", later)
    assert names() == {"other"}


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


def test_two_admins_disabling_each_other_at_once_leave_one_enabled(sessions: sessionmaker[Session]) -> None:
    from tests.controller.test_storage import race

    with sessions.begin() as s:
        create_user(s, "ann", "admin", GOOD, "cli:root")
        create_user(s, "ben", "admin", GOOD, "cli:root")
    errors = race(sessions, lambda s: users.disable(s, "ben", "ann"), lambda s: users.disable(s, "ann", "ben"),
                  "transactionid" if sessions.kw["bind"].dialect.name == "postgresql" else None)
    assert len(errors) == 1 and isinstance(errors[0], Conflict) and "last enabled admin" in str(errors[0])
    with sessions() as s:
        assert {u.username: u.disabled for u in users.list_users(s)} == {"ann": False, "ben": True}
