"""Approved changes: what makes a file change *expected* (TPEx-CPA 3(7)1, 3(8)4(3); SPEC section 6).

A change is requested by one user (analyst or admin) for some assets, some paths and a time window,
and approved by a *different* admin. While approved, a file change on one of its assets, on one of its
paths, inside its window is expected: the controller links the fim event to the change
(``FimEvent.expected_change_id``), keeps a change record, and opens no ticket. Anything else is
unexpected and tickets at once (``controller.evaluate``).

Life of a change, every step in the audit log::

    requested ──approve (admin, not the requester)──► approved ──cancel──► cancelled
        │                                                  (the window ends at the cancellation)
        ├──reject (admin)──► rejected
        └──cancel (the requester or an admin)──► cancelled

Scope:

* ``assets``: agent ids, hostnames (case-insensitive) or ``tag:NAME`` (every agent with that tag).
  Each entry must match an enrolled agent when the change is requested. ``*`` is refused: a change
  that names no assets cannot be reviewed.
* ``paths``: absolute paths or globs. A path without wildcards covers itself and everything below it;
  ``*`` and ``?`` stay within one path segment, ``**`` spans directories (``/var/www/**/*.php``).
  A rename is covered only when both its old and its new path are.
* The window ``[start, end]`` (RFC 3339, at most 30 days) counts only from the moment of approval:
  a change approved late does not cover what happened before it was approved.

When an event happened: a real-time event at its ``detected_at``; an event found by a scheduled
verification, rehash or start-up scan at the file's ``ctime`` after the change (which tools cannot
set back, unlike mtime), else at ``detected_at``. An event without a time, or with one in the future
of the controller's clock (beyond :data:`MAX_CLOCK_SKEW`), is not inside any window.

Errors: :class:`~common.errors.UsageError` (bad input), :class:`~controller.errors.Forbidden`
(requester approving their own change), :class:`~controller.errors.Conflict` (wrong state, window
over), :class:`~controller.errors.NotFound`.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.errors import UsageError
from common.globs import glob_to_regex
from controller.baselines import Rule
from controller.domain import audit
from controller.errors import Conflict, Forbidden, NotFound
from controller.judges.fim import fim_expected
from controller.judges.ssh_device import ASSET_PREFIX as DEVICE_PREFIX
from controller.storage.models import Agent, Change, ChangeRecord, Finding

__all__ = [
    "MAX_CLOCK_SKEW",
    "MAX_WINDOW",
    "STATUSES",
    "annotate",
    "approve",
    "cancel",
    "change_json",
    "covers",
    "create",
    "event_time",
    "get",
    "list_changes",
    "parse_time",
    "path_in_scope",
    "record",
    "record_json",
    "reject",
]

STATUSES = ("requested", "approved", "rejected", "cancelled")
MAX_WINDOW = dt.timedelta(days=30)
# An event claiming to be later than this past the controller's clock is not placed in any window.
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
MAX_ENTRIES = 200
MAX_REASON = 2000
_MAGIC = re.compile(r"[*?\[]")
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")
_REALTIME = ("REALTIME", "DETECTOR_UNSPECIFIED", "")


# -- input -------------------------------------------------------------------------------------------


def parse_time(text: Any, field: str) -> dt.datetime:
    """An RFC 3339 time with its offset (``2026-03-02T08:00:00Z``, ``…+08:00``), as UTC."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{field} is required: an RFC 3339 time such as 2026-03-02T08:00:00Z")
    value = text.strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", value):
        raise UsageError(f"{field} {value!r} is not an RFC 3339 time; write e.g. 2026-03-02T08:00:00Z")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise UsageError(f"{field} {value!r} is not an RFC 3339 time; write e.g. 2026-03-02T08:00:00Z") from None
    if parsed.tzinfo is None:
        raise UsageError(f"{field} {value!r} has no time zone; add Z for UTC or an offset such as +08:00")
    return parsed.astimezone(dt.UTC)


def _entries(value: Any, field: str) -> list[str]:
    """A list of non-empty strings; a comma-separated string is accepted too (as the CLI writes it)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise UsageError(f"{field} must be a list of strings")
    out = list(dict.fromkeys(i.strip() for i in items if i.strip()))
    if not out:
        raise UsageError(f"{field} must name at least one entry")
    if len(out) > MAX_ENTRIES:
        raise UsageError(f"{field}: at most {MAX_ENTRIES} entries; split the change")
    return out


def _norm(path: str) -> str:
    """Windows paths compare case-insensitively with '/' separators; POSIX paths as they are."""
    if _WINDOWS_ABS.match(path):
        return path.replace("\\", "/").casefold()
    return path


def _check_pattern(pattern: str) -> None:
    if "\x00" in pattern or "\n" in pattern:
        raise UsageError(f"path {pattern!r} contains a control character")
    if len(pattern) > 1024:
        raise UsageError(f"path {pattern[:40]!r}… is longer than 1024 characters")
    if not (pattern.startswith("/") or _WINDOWS_ABS.match(pattern)):
        raise UsageError(f"path {pattern!r} is not absolute; write e.g. /var/www/html/** or /etc/nginx/nginx.conf")
    parts = _norm(pattern).split("/")
    if ".." in parts or "." in parts[1:]:
        raise UsageError(f"path {pattern!r}: write it without '.' or '..' segments")
    if _norm(pattern).rstrip("/*") in ("", "/") or re.fullmatch(r"[a-z]:", _norm(pattern).rstrip("/*")):
        raise UsageError(f"path {pattern!r} covers every file of the host; name the directories the change touches")
    try:
        _glob(_norm(pattern))
    except re.error as exc:
        raise UsageError(f"path {pattern!r} is not a valid glob: {exc}") from None


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: ``*``/``?`` within a segment, ``**`` across segments, ``**/`` zero or more
    directories, ``[...]`` classes.

    A pattern without wildcards is a path covering itself and everything below it.
    """
    if not _MAGIC.search(pattern):
        base = pattern.rstrip("/") or "/"
        return re.compile(re.escape(base) + r"(?:/.*)?", re.DOTALL)
    # The same glob language as fim's exclude and nodiff (common/globs.py), anchored on the whole path.
    return re.compile(glob_to_regex(pattern), re.DOTALL)


def path_in_scope(patterns: Iterable[str], path: str) -> bool:
    """Whether ``path`` (as an agent reports it) is covered by one of ``patterns``.

    A path with '.' or '..' segments is never covered: it could climb out of the pattern's directory.
    """
    if not path:
        return False
    p = _norm(path)
    if posixpath.normpath(p) != p.rstrip("/") and p != "/":
        return False
    return any(_glob(_norm(pattern)).fullmatch(p) for pattern in patterns)


def _asset_problem(entry: str, known: Sequence[tuple[str, str, list[str]]]) -> str | None:
    if entry == "*" or _MAGIC.search(entry):
        return (f"asset {entry!r}: wildcards are not allowed; name agent ids or hostnames, or use tag:NAME "
                "for a group of agents")
    if entry.startswith("tag:"):
        tag = entry[4:]
        if not tag:
            return "asset 'tag:' needs a tag name, e.g. tag:web"
        return None if any(tag in tags for _, _, tags in known) else f"no enrolled agent has the tag {tag!r}"
    low = entry.casefold()
    if any(entry == aid or low == host.casefold() for aid, host, _ in known):
        return None
    return f"asset {entry!r} matches no enrolled agent (give an agent id, a hostname or tag:NAME)"


def asset_in_scope(entries: Iterable[str], asset_id: str, hostname: str, tags: Iterable[str] = ()) -> bool:
    tag_set = set(tags)
    host = hostname.casefold()
    for entry in entries:
        if entry.startswith("tag:"):
            if entry[4:] in tag_set:
                return True
        elif entry == asset_id or (host and entry.casefold() == host):
            return True
    return False


# -- state changes -----------------------------------------------------------------------------------


def _new_id(session: Session) -> str:
    while True:
        cid = f"chg-{secrets.token_hex(4)}"
        if session.get(Change, cid) is None:
            return cid


def _get(session: Session, change_id: str, lock: bool = False) -> Change:
    # Locked for state changes, so two admins approving at once on PostgreSQL serialise.
    change = session.get(Change, change_id, with_for_update=lock or None)
    if change is None:
        raise NotFound(f"no change {change_id!r}")
    return change


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def create(
    session: Session,
    actor: str,
    assets: Any,
    paths: Any,
    start: Any,
    end: Any,
    reason: Any,
    now: dt.datetime | None = None,
) -> Change:
    """Record a change request; raises UsageError naming the field at fault."""
    when = _now(now)
    starts_at = parse_time(start, "start")
    ends_at = parse_time(end, "end")
    if ends_at <= starts_at:
        raise UsageError(f"end {_rfc3339(ends_at)} must be after start {_rfc3339(starts_at)}")
    if ends_at - starts_at > MAX_WINDOW:
        raise UsageError(f"the window is {_days(ends_at - starts_at)}; at most {MAX_WINDOW.days} days: request "
                         "several changes for a longer project")
    if ends_at <= when:
        raise UsageError(f"end {_rfc3339(ends_at)} is already past; a change covers a window still to come")
    if not isinstance(reason, str) or not reason.strip():
        raise UsageError("reason is required: say what is changed and why (the reviewer and the auditor read it)")
    if len(reason) > MAX_REASON:
        raise UsageError(f"reason: at most {MAX_REASON} characters")
    asset_list = _entries(assets, "assets")
    path_list = _entries(paths, "paths")
    for pattern in path_list:
        _check_pattern(pattern)
    known = [(a, h, list(t or [])) for a, h, t in session.execute(select(Agent.id, Agent.hostname, Agent.tags))]
    # Devices a sensor collects from (dev:<name>) are known once a sensor has reported them.
    devices = [e for e in asset_list if e.startswith(DEVICE_PREFIX)]
    reported = set(session.execute(select(Finding.asset).where(Finding.asset.in_(devices)).distinct()).scalars()) \
        if devices else set()
    problems = [p for p in ((f"asset {e!r} is no device a sensor has reported (devices are dev:<name> as the "
                             "baseline names them)" if e not in reported else None)
                            if e.startswith(DEVICE_PREFIX) else _asset_problem(e, known) for e in asset_list) if p]
    if problems:
        raise UsageError("; ".join(problems))
    change = Change(
        id=_new_id(session),
        status="requested",
        requested_by=actor,
        requested_at=when,
        reason=reason.strip(),
        assets=asset_list,
        paths=path_list,
        starts_at=starts_at,
        ends_at=ends_at,
        close_reason="",
    )
    session.add(change)
    session.flush()
    audit.record(session, actor, "change.request", "change", change.id, {
        "assets": asset_list, "paths": path_list, "start": _rfc3339(starts_at), "end": _rfc3339(ends_at),
        "reason": change.reason,
    }, at=when)
    return change


def approve(session: Session, change_id: str, actor: str, now: dt.datetime | None = None) -> Change:
    """Approve a requested change. The approver must not be the requester (two people, TPEx-CPA 3(7)1)."""
    when = _now(now)
    change = _get(session, change_id, lock=True)
    if actor == change.requested_by:
        raise Forbidden(f"{actor} requested change {change.id} and cannot approve it: a change needs a second "
                        "person; ask another admin")
    if change.status != "requested":
        raise Conflict(f"change {change.id} is {change.status}; only a requested change can be approved")
    if change.ends_at <= when:
        raise Conflict(f"change {change.id} ended at {_rfc3339(change.ends_at)}; it cannot be approved afterwards "
                       "(request a new window)")
    change.status = "approved"
    change.approved_by = actor
    change.approved_at = when
    audit.record(session, actor, "change.approve", "change", change.id, {
        "requested_by": change.requested_by, "effective_from": _rfc3339(max(change.starts_at, when)),
        "end": _rfc3339(change.ends_at),
    }, at=when)
    return change


def reject(session: Session, change_id: str, actor: str, reason: str, now: dt.datetime | None = None) -> Change:
    when = _now(now)
    change = _get(session, change_id, lock=True)
    if not reason.strip():
        raise UsageError("a rejection needs a reason, for the requester and the auditor")
    if change.status != "requested":
        raise Conflict(f"change {change.id} is {change.status}; only a requested change can be rejected")
    change.status = "rejected"
    change.closed_by, change.closed_at, change.close_reason = actor, when, reason.strip()
    audit.record(session, actor, "change.reject", "change", change.id, {"reason": change.close_reason}, at=when)
    return change


def cancel(
    session: Session, change_id: str, actor: str, reason: str, may_cancel_others: bool, now: dt.datetime | None = None
) -> Change:
    """Withdraw a request, or end an approved window early (what was already covered stays covered)."""
    when = _now(now)
    change = _get(session, change_id, lock=True)
    if actor != change.requested_by and not may_cancel_others:
        raise Forbidden(f"change {change.id} was requested by {change.requested_by}; only they or an admin can "
                        "cancel it")
    if change.status not in ("requested", "approved"):
        raise Conflict(f"change {change.id} is {change.status}; only a requested or approved change can be cancelled")
    if change.status == "approved" and change.ends_at <= when:
        raise Conflict(f"change {change.id} already ended at {_rfc3339(change.ends_at)}")
    old = change.status
    change.status = "cancelled"
    change.closed_by, change.closed_at, change.close_reason = actor, when, reason.strip()
    audit.record(session, actor, "change.cancel", "change", change.id,
                 {"from": old, "reason": change.close_reason}, at=when)
    return change


def get(session: Session, change_id: str) -> Change:
    return _get(session, change_id)


def list_changes(session: Session, status: str | None = None, limit: int = 1000) -> list[Change]:
    q = select(Change)
    if status:
        wanted = [s for s in status.split(",") if s]
        bad = [s for s in wanted if s not in STATUSES]
        if bad:
            raise UsageError(f"status {', '.join(bad)} is not one of {', '.join(STATUSES)}")
        q = q.where(Change.status.in_(wanted))
    return list(session.execute(q.order_by(Change.requested_at.desc(), Change.id).limit(limit)).scalars())


# -- matching file changes -------------------------------------------------------------------------


def _parse_ts(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def event_time(event: Mapping[str, Any]) -> dt.datetime | None:
    """When the change behind ``event`` happened, as well as the controller can tell (module docstring)."""
    detected = _parse_ts(event.get("detected_at"))
    if str(event.get("detected_by", "")) in _REALTIME or event.get("kind") == "DELETED":
        return detected
    after = event.get("after")
    ctime = after.get("ctime") if isinstance(after, Mapping) else None
    if isinstance(ctime, int | float) and not isinstance(ctime, bool) and ctime > 0:
        try:
            return dt.datetime.fromtimestamp(float(ctime), dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return detected


def _window(change: Change) -> tuple[dt.datetime, dt.datetime] | None:
    """The part of the window the change really covers: from approval, to the end or the cancellation."""
    if change.approved_at is None or change.status not in ("approved", "cancelled"):
        return None
    start = max(change.starts_at, change.approved_at)
    end = change.ends_at
    if change.status == "cancelled" and change.closed_at is not None:
        end = min(end, change.closed_at)
    return (start, end) if start <= end else None


def covers(
    change: Change, asset_id: str, hostname: str, tags: Iterable[str], event: Mapping[str, Any], at: dt.datetime
) -> bool:
    window = _window(change)
    if window is None or not window[0] <= at <= window[1]:
        return False
    if not asset_in_scope(change.assets, asset_id, hostname, tags):
        return False
    if not path_in_scope(change.paths, str(event.get("path", ""))):
        return False
    return event.get("kind") != "RENAMED" or path_in_scope(change.paths, str(event.get("old_path", "")))


def annotate(
    session: Session,
    asset_id: str,
    hostname: str,
    facts: dict[str, Any],
    when: dt.datetime,
    tags: Iterable[str] = (),
) -> dict[str, Change]:
    """Set ``expected_change_id`` on every event of a fim result (in place); return the changes used.

    The field is the controller's: whatever the agent put there is overwritten. ``when`` is the
    controller's time of receipt, the bound for events claiming to come from the future.
    """
    events = [e for e in facts.get("events", []) or [] if isinstance(e, dict)]
    timed: list[tuple[dict[str, Any], dt.datetime]] = []
    for event in events:
        event["expected_change_id"] = ""
        at = event_time(event)
        if at is not None and at <= when + MAX_CLOCK_SKEW:
            timed.append((event, at))
    if not timed:
        return {}
    earliest, latest = min(t for _, t in timed), max(t for _, t in timed)
    candidates = session.execute(
        select(Change)
        .where(Change.status.in_(("approved", "cancelled")), Change.approved_at.is_not(None),
               Change.starts_at <= latest, Change.ends_at >= earliest)
        .order_by(Change.approved_at, Change.id)
    ).scalars().all()
    tag_list = list(tags)
    mine = [c for c in candidates if asset_in_scope(c.assets, asset_id, hostname, tag_list)]
    used: dict[str, Change] = {}
    for event, at in timed:
        change = next((c for c in mine if covers(c, asset_id, hostname, tag_list, event, at)), None)
        if change is not None:
            event["expected_change_id"] = change.id
            used[change.id] = change
    return used


def record(
    session: Session,
    asset_id: str,
    rule: Rule,
    facts: Mapping[str, Any],
    result_id: int | None,
    now: dt.datetime,
) -> list[ChangeRecord]:
    """Keep a change record for every event of ``facts`` that ``rule`` judges expected."""
    out: list[ChangeRecord] = []
    for event in facts.get("events", []) or []:
        if not isinstance(event, Mapping):
            continue
        why = fim_expected(rule, event)
        if why is None:
            continue
        before, after = event.get("before"), event.get("after")
        row = ChangeRecord(
            change_id=why.change_id or None,
            expected_source=why.source[:255],
            asset=asset_id,
            rule_id=rule.id,
            path=str(event.get("path", "")),
            old_path=str(event.get("old_path", "") or ""),
            kind=str(event.get("kind", ""))[:16],
            at=event_time(event) or _parse_ts(event.get("detected_at")) or now,
            detected_at=_parse_ts(event.get("detected_at")),
            recorded_at=now,
            result_id=result_id,
            sha256_before=str(before.get("sha256", "") if isinstance(before, Mapping) else "")[:64],
            sha256_after=str(after.get("sha256", "") if isinstance(after, Mapping) else "")[:64],
            evidence=dict(event),
        )
        session.add(row)
        out.append(row)
    return out


# -- JSON ----------------------------------------------------------------------------------------------


def _rfc3339(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _days(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.1f} days"


def record_json(r: ChangeRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "change_id": r.change_id,
        "expected_source": r.expected_source,
        "asset": r.asset,
        "rule_id": r.rule_id,
        "path": r.path,
        "old_path": r.old_path,
        "kind": r.kind,
        "at": _rfc3339(r.at),
        "detected_at": _rfc3339(r.detected_at),
        "recorded_at": _rfc3339(r.recorded_at),
        "result_id": r.result_id,
        "sha256_before": r.sha256_before,
        "sha256_after": r.sha256_after,
        "evidence": r.evidence,
    }


def change_json(c: Change, session: Session | None = None, records: int = 0) -> dict[str, Any]:
    """A change as the API shows it; with ``session``, its record count and up to ``records`` records."""
    window = _window(c)
    out: dict[str, Any] = {
        "id": c.id,
        "status": c.status,
        "requested_by": c.requested_by,
        "requested_at": _rfc3339(c.requested_at),
        "reason": c.reason,
        "assets": list(c.assets),
        "paths": list(c.paths),
        "start": _rfc3339(c.starts_at),
        "end": _rfc3339(c.ends_at),
        "approved_by": c.approved_by,
        "approved_at": _rfc3339(c.approved_at),
        "closed_by": c.closed_by,
        "closed_at": _rfc3339(c.closed_at),
        "close_reason": c.close_reason,
        # What the change really covers: from approval to the end (or the cancellation).
        "effective": None if window is None else {"start": _rfc3339(window[0]), "end": _rfc3339(window[1])},
    }
    if session is not None:
        out["record_count"] = session.execute(
            select(func.count()).select_from(ChangeRecord).where(ChangeRecord.change_id == c.id)
        ).scalar_one()
        if records:
            rows = session.execute(
                select(ChangeRecord).where(ChangeRecord.change_id == c.id)
                .order_by(ChangeRecord.at, ChangeRecord.id).limit(records)
            ).scalars()
            out["records"] = [record_json(r) for r in rows]
    return out
