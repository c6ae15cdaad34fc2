"""Approved changes: requests, two-person approval, and which file changes they make expected."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.errors import UsageError
from controller.domain import audit, changes
from controller.errors import Conflict, Forbidden, NotFound
from controller.storage.models import Agent, AuditEntry, Change
from tests.controller._db import migrated_sessions

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
AGENT = "agt-0123456789abcdef"
HOST = "web-01"


def rfc(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        with factory.begin() as s:
            for aid, host, tags in ((AGENT, HOST, ["linux", "web"]), ("agt-2", "db-01", ["linux", "db"])):
                s.add(Agent(id=aid, hostname=host, enrolled_at=T0, cert_serial="1", cert_not_after=T0, tags=tags))
        yield factory


def request(
    sessions: sessionmaker[Session],
    assets: Any = (HOST,),
    paths: Any = ("/var/www/html/**",),
    start: Any = None,
    end: Any = None,
    reason: Any = "deploy release 4.2 (CR-118)",
    actor: str = "alice",
    now: dt.datetime = T0,
) -> str:
    with sessions.begin() as s:
        c = changes.create(
            s, actor, list(assets) if isinstance(assets, tuple) else assets,
            list(paths) if isinstance(paths, tuple) else paths,
            rfc(T0 + dt.timedelta(hours=1)) if start is None else start,
            rfc(T0 + dt.timedelta(hours=2)) if end is None else end,
            reason, now=now,
        )
        return c.id


def approved(sessions: sessionmaker[Session], now: dt.datetime = T0, **kw: Any) -> str:
    cid = request(sessions, **kw)
    with sessions.begin() as s:
        changes.approve(s, cid, "bob", now=now)
    return cid


def row(sessions: sessionmaker[Session], cid: str) -> Change:
    with sessions() as s:
        c = s.get(Change, cid)
        assert c is not None
        return c


# -- requests and their life -------------------------------------------------------------------------


def test_create_records_a_requested_change_and_audits_it(sessions: sessionmaker[Session]) -> None:
    cid = request(sessions, assets="web-01,tag:db", paths="/var/www/html/**, /etc/nginx/nginx.conf")
    assert cid.startswith("chg-") and len(cid) == 12
    c = row(sessions, cid)
    assert (c.status, c.requested_by, c.requested_at) == ("requested", "alice", T0)
    assert c.assets == ["web-01", "tag:db"]
    assert c.paths == ["/var/www/html/**", "/etc/nginx/nginx.conf"]
    assert (c.starts_at, c.ends_at) == (T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2))
    assert c.approved_by is None and c.approved_at is None
    with sessions() as s:
        (entry,) = s.execute(select(AuditEntry)).scalars()
        assert (entry.actor, entry.action, entry.object_type, entry.object_id) == ("alice", "change.request", "change",
                                                                                   cid)
        assert entry.details["reason"] == "deploy release 4.2 (CR-118)"


def test_times_with_offsets_are_stored_in_utc(sessions: sessionmaker[Session]) -> None:
    cid = request(sessions, start="2026-03-02T17:00:00+08:00", end="2026-03-02T18:30:00+08:00")
    c = row(sessions, cid)
    assert (c.starts_at, c.ends_at) == (T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2, minutes=30))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"start": "tomorrow"}, "start 'tomorrow' is not an RFC 3339 time; write e.g. 2026-03-02T08:00:00Z"),
        ({"start": "2026-03-02T25:00:00Z"}, "start '2026-03-02T25:00:00Z' is not an RFC 3339 time"),
        ({"end": "2026-03-02T10:00:00"}, "end '2026-03-02T10:00:00' has no time zone; add Z for UTC or an offset"),
        ({"start": ""}, "start is required"),
        ({"end": rfc(T0 + dt.timedelta(hours=1))}, "end 2026-03-02T09:00:00Z must be after start 2026-03-02T09:00:00Z"),
        ({"end": rfc(T0 + dt.timedelta(days=40))}, "the window is 40.0 days; at most 30 days"),
        ({"start": rfc(T0 - dt.timedelta(hours=3)), "end": rfc(T0 - dt.timedelta(hours=1))}, "is already past"),
        ({"reason": "  "}, "reason is required"),
        ({"assets": []}, "assets must name at least one entry"),
        ({"assets": ["*"]}, "wildcards are not allowed"),
        ({"assets": ["web-0*"]}, "wildcards are not allowed"),
        ({"assets": ["web-09"]}, "asset 'web-09' matches no enrolled agent"),
        ({"assets": ["tag:nope"]}, "no enrolled agent has the tag 'nope'"),
        ({"assets": "  ,"}, "assets must name at least one entry"),
        ({"assets": [1]}, "assets must be a list of strings"),
        ({"paths": ["var/www/**"]}, "path 'var/www/**' is not absolute"),
        ({"paths": ["/**"]}, "covers every file of the host"),
        ({"paths": ["/"]}, "covers every file of the host"),
        ({"paths": ["/var/www/../../etc"]}, "without '.' or '..' segments"),
        ({"paths": None}, "paths must be a list of strings"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(
    sessions: sessionmaker[Session], kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as info:
        request(sessions, **kw)
    assert message in str(info.value)
    with sessions() as s:
        assert s.execute(select(Change)).first() is None
        assert s.execute(select(AuditEntry)).first() is None


def test_hostnames_match_case_insensitively_and_agent_ids_exactly(sessions: sessionmaker[Session]) -> None:
    request(sessions, assets=["WEB-01", AGENT, "tag:linux"])


def test_approval_by_another_admin(sessions: sessionmaker[Session]) -> None:
    cid = request(sessions)
    at = T0 + dt.timedelta(minutes=5)
    with sessions.begin() as s:
        changes.approve(s, cid, "bob", now=at)
    c = row(sessions, cid)
    assert (c.status, c.approved_by, c.approved_at) == ("approved", "bob", at)
    with sessions() as s:
        actions = [(e.actor, e.action) for e in s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars()]
        assert actions == [("alice", "change.request"), ("bob", "change.approve")]
        assert audit.verify(s).ok


def test_the_requester_cannot_approve_their_own_change(sessions: sessionmaker[Session]) -> None:
    cid = request(sessions)
    with sessions.begin() as s, pytest.raises(Forbidden, match=r"alice requested change .* cannot approve it"):
        changes.approve(s, cid, "alice", now=T0)
    assert row(sessions, cid).status == "requested"


def test_only_a_requested_change_can_be_approved(sessions: sessionmaker[Session]) -> None:
    cid = approved(sessions)
    with sessions.begin() as s, pytest.raises(Conflict, match="is approved; only a requested change"):
        changes.approve(s, cid, "carol", now=T0)
    with sessions.begin() as s, pytest.raises(Conflict, match="only a requested change can be rejected"):
        changes.reject(s, cid, "carol", "no", now=T0)
    with sessions.begin() as s, pytest.raises(NotFound):
        changes.approve(s, "chg-nope", "carol", now=T0)


def test_approving_after_the_end_is_refused(sessions: sessionmaker[Session]) -> None:
    cid = request(sessions)
    with sessions.begin() as s, pytest.raises(Conflict, match="cannot be approved afterwards"):
        changes.approve(s, cid, "bob", now=T0 + dt.timedelta(hours=3))


def test_reject_needs_a_reason_and_closes_the_request(sessions: sessionmaker[Session]) -> None:
    cid = request(sessions)
    with sessions.begin() as s, pytest.raises(UsageError, match="needs a reason"):
        changes.reject(s, cid, "bob", " ", now=T0)
    with sessions.begin() as s:
        changes.reject(s, cid, "bob", "no rollback plan", now=T0)
    c = row(sessions, cid)
    assert (c.status, c.closed_by, c.close_reason) == ("rejected", "bob", "no rollback plan")
    with sessions.begin() as s, pytest.raises(Conflict):
        changes.approve(s, cid, "carol", now=T0)


def test_cancel_by_requester_or_admin_only(sessions: sessionmaker[Session]) -> None:
    cid = request(sessions)
    with sessions.begin() as s, pytest.raises(Forbidden, match="only they or an admin"):
        changes.cancel(s, cid, "mallory", "", may_cancel_others=False, now=T0)
    with sessions.begin() as s:
        changes.cancel(s, cid, "alice", "postponed", may_cancel_others=False, now=T0)
    assert row(sessions, cid).status == "cancelled"
    with sessions.begin() as s, pytest.raises(Conflict):
        changes.cancel(s, cid, "alice", "", may_cancel_others=False, now=T0)


def test_list_by_status(sessions: sessionmaker[Session]) -> None:
    a = request(sessions)
    b = approved(sessions)
    with sessions() as s:
        assert {c.id for c in changes.list_changes(s)} == {a, b}
        assert [c.id for c in changes.list_changes(s, "approved")] == [b]
        assert {c.id for c in changes.list_changes(s, "requested,approved")} == {a, b}
        with pytest.raises(UsageError, match="not one of requested, approved"):
            changes.list_changes(s, "open")


# -- what a change covers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "covered"),
    [
        ("/var/www/html/**", "/var/www/html/index.php", True),
        ("/var/www/html/**", "/var/www/html/a/b/c.js", True),
        ("/var/www/html/**", "/var/www/html", False),
        ("/var/www/html/**", "/var/www/htmlx/a", False),
        ("/var/www/html", "/var/www/html", True),
        ("/var/www/html", "/var/www/html/deep/er/x.php", True),
        ("/var/www/html/", "/var/www/html/x", True),
        ("/var/www/html", "/var/www/html2/x", False),
        ("/var/www/html/*.php", "/var/www/html/index.php", True),
        ("/var/www/html/*.php", "/var/www/html/sub/index.php", False),
        ("/var/www/**/*.php", "/var/www/index.php", True),
        ("/var/www/**/*.php", "/var/www/a/b/index.php", True),
        ("/var/www/**/*.php", "/var/www/a/b/index.html", False),
        ("/var/www/html/?.js", "/var/www/html/a.js", True),
        ("/var/www/html/?.js", "/var/www/html/ab.js", False),
        ("/var/www/html/[ab].js", "/var/www/html/b.js", True),
        ("/var/www/html/[!ab].js", "/var/www/html/b.js", False),
        ("/var/www/html/**", "/var/www/html/../../etc/passwd", False),
        ("/var/www/html/**", "/var/www/html/./x", False),
        ("/etc/nginx/nginx.conf", "/etc/nginx/nginx.conf", True),
        ("/etc/nginx/nginx.conf", "/etc/nginx/nginx.conf.bak", False),
        ("C:\\inetpub\\wwwroot\\**", "c:\\InetPub\\wwwroot\\index.html", True),
    ],
)
def test_path_globs(pattern: str, path: str, covered: bool) -> None:
    assert changes.path_in_scope([pattern], path) is covered


def event(path: str = "/var/www/html/index.php", at: dt.datetime | None = None, **kw: Any) -> dict[str, Any]:
    """A fim event as ingest sees it (MessageToDict of FimEvent)."""
    when = at or T0 + dt.timedelta(hours=1, minutes=30)
    out: dict[str, Any] = {
        "kind": "MODIFIED",
        "path": path,
        "old_path": "",
        "detected_by": "REALTIME",
        "detected_at": rfc(when),
        "before": {"sha256": "ab" * 32, "size": "10", "ctime": 0.0},
        "after": {"sha256": "cd" * 32, "size": "12", "ctime": 0.0},
        "changed_fields": ["sha256", "size", "mtime"],
        "package": "",
        "expected_change_id": "",
    }
    out.update(kw)
    return out


def annotate(
    sessions: sessionmaker[Session], *events: dict[str, Any], asset: str = AGENT, host: str = HOST,
    tags: tuple[str, ...] = ("linux", "web"), when: dt.datetime = T0 + dt.timedelta(hours=3),
) -> list[str]:
    facts = {"events": list(events)}
    with sessions() as s:
        changes.annotate(s, asset, host, facts, when, tags)
    return [e["expected_change_id"] for e in facts["events"]]


def test_an_approved_change_covers_its_asset_paths_and_window(sessions: sessionmaker[Session]) -> None:
    cid = approved(sessions)
    assert annotate(sessions, event()) == [cid]
    # By agent id, by hostname in another case, by tag.
    other = approved(sessions, assets=[AGENT])
    by_tag = approved(sessions, assets=["tag:web"], paths=["/srv/app"])
    first, second = annotate(sessions, event(), event("/srv/app/x.py"))
    assert first in (cid, other) and second == by_tag  # either change accounts for it
    assert annotate(sessions, event(), host="WEB-01", asset="agt-other") == [cid]
    assert annotate(sessions, event("/srv/app/x.py"), asset="agt-9", host="web-09", tags=("web",)) == [by_tag]


def test_outside_scope_or_window_is_unexpected(sessions: sessionmaker[Session]) -> None:
    approved(sessions)
    start, end = T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)
    got = annotate(
        sessions,
        event("/var/www/other/index.php"),  # path outside
        event(at=start - dt.timedelta(seconds=1)),  # just before
        event(at=end + dt.timedelta(seconds=1)),  # just after
        event(at=start),  # the edges are inside
        event(at=end),
    )
    assert got[:3] == ["", "", ""] and got[3] and got[4]
    assert annotate(sessions, event(), asset="agt-2", host="db-01", tags=("db",)) == [""]


def test_requested_rejected_and_cancelled_changes_cover_nothing_new(sessions: sessionmaker[Session]) -> None:
    request(sessions)
    rejected = request(sessions)
    with sessions.begin() as s:
        changes.reject(s, rejected, "bob", "no", now=T0)
    assert annotate(sessions, event()) == [""]
    # Cancelled during the window: what happened before the cancellation stays covered.
    cid = approved(sessions)
    with sessions.begin() as s:
        changes.cancel(s, cid, "alice", "done early", may_cancel_others=False,
                       now=T0 + dt.timedelta(hours=1, minutes=20))
    assert annotate(sessions, event(at=T0 + dt.timedelta(hours=1, minutes=10)),
                    event(at=T0 + dt.timedelta(hours=1, minutes=30))) == [cid, ""]


def test_a_change_covers_nothing_before_its_approval(sessions: sessionmaker[Session]) -> None:
    cid = request(sessions)
    with sessions.begin() as s:
        changes.approve(s, cid, "bob", now=T0 + dt.timedelta(hours=1, minutes=15))
    assert annotate(sessions, event(at=T0 + dt.timedelta(hours=1, minutes=10)), event()) == ["", cid]


def test_renames_need_both_paths_in_scope(sessions: sessionmaker[Session]) -> None:
    cid = approved(sessions, paths=["/var/www/html/uploads/**", "/var/www/html/old/**"])
    moved_in_scope = event("/var/www/html/old/a.jpg", kind="RENAMED", old_path="/var/www/html/uploads/a.jpg")
    escaped = event("/var/www/html/shell.php", kind="RENAMED", old_path="/var/www/html/uploads/shell.jpg")
    assert annotate(sessions, moved_in_scope, escaped) == [cid, ""]


def test_the_agent_cannot_claim_an_event_is_expected(sessions: sessionmaker[Session]) -> None:
    assert annotate(sessions, event(expected_change_id="chg-forged")) == [""]


def test_events_from_the_future_or_without_time_are_unexpected(sessions: sessionmaker[Session]) -> None:
    approved(sessions)
    received = T0 + dt.timedelta(minutes=30)  # before the window opens; the event claims to be inside it
    assert annotate(sessions, event(), when=received) == [""]
    assert annotate(sessions, event(detected_at="")) == [""]


def test_scans_place_a_change_at_the_files_ctime(sessions: sessionmaker[Session]) -> None:
    cid = approved(sessions)
    inside = (T0 + dt.timedelta(hours=1, minutes=45)).timestamp()
    before = (T0 + dt.timedelta(minutes=30)).timestamp()
    late = T0 + dt.timedelta(hours=5)  # the verification ran after the window closed
    found_later = event(at=late, detected_by="VERIFY", after={"sha256": "cd" * 32, "ctime": inside})
    # Detected inside the window by a scan, but the file changed before it: not covered.
    changed_before = event(detected_by="VERIFY", after={"sha256": "cd" * 32, "ctime": before})
    no_ctime = event(detected_by="REHASH", after={"sha256": "cd" * 32})
    assert annotate(sessions, found_later, changed_before, no_ctime, when=late) == [cid, "", cid]
    assert changes.event_time(found_later) == dt.datetime.fromtimestamp(inside, dt.UTC)


@pytest.mark.parametrize(("pattern", "path", "covered"), [
    ("/var/www/**/index.php", "/var/www/index.php", True),  # **/ is zero or more directories
    ("/var/www/**/index.php", "/var/www/a/b/index.php", True),
    ("/var/www/*.php", "/var/www/a/x.php", False),  # * stays within one segment
    ("/var/www/[!a]*.php", "/var/www/b.php", True),
    ("/var/www/[!a]*.php", "/var/www/a.php", False),
    ("/var/www/html", "/var/www/html/deep/file", True),  # no wildcard: the path and all below
])
def test_change_paths_speak_the_fim_glob_language(pattern: str, path: str, covered: bool) -> None:
    from checks.fim.globs import PathMatcher

    assert changes.path_in_scope([pattern], path) is covered
    if any(c in pattern for c in "*?["):
        # The agent's own matcher, on the same absolute pattern, agrees.
        assert PathMatcher([pattern]).matches(path.lstrip("/").encode(), path.encode()) is covered
