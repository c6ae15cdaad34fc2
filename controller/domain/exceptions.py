"""Exceptions: accepted risk with an owner, a reason and an expiry (SPEC section 5, TPEx-CPA 3(12)5).

While an exception is in force, failures of its rule on its assets and subjects are still recorded as
failing findings (``Finding.exception_id`` says which exception covers them) but open no ticket and
do not reopen one. When it expires or is revoked, every finding it covered that still fails opens or
reopens its ticket at once (:func:`release`, run by the controller's periodic round), so accepted risk
never quietly outlives its expiry.

Scope:

* ``rule_id``: one rule of a baseline in force;
* ``assets``: agent ids, hostnames or ``tag:NAME`` (as for approved changes), or ``*`` for every asset;
* ``subject``: the finding's subject (a path, ``tcp/0.0.0.0:8080``, a product) or a glob with ``*``;
  ``*`` alone covers every subject of the rule.

Analysts and admins create exceptions (typically from a ticket they mark as a false positive), for at
most :data:`MAX_DURATION`; the creator, the owner (who answers for the risk) and the reason are kept, and
admins or the creator can revoke. Every step is in the audit log.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.errors import UsageError
from controller.domain import audit
from controller.domain.changes import asset_in_scope, parse_time
from controller.errors import Conflict, Forbidden, NotFound
from controller.storage.models import Agent, Finding, RiskException, User
from controller.storage.serialize import rfc3339

__all__ = [
    "MAX_DURATION",
    "active",
    "covered_counts",
    "covering",
    "create",
    "exception_json",
    "get",
    "list_exceptions",
    "list_json",
    "revoke",
]

MAX_DURATION = dt.timedelta(days=366)
MAX_REASON = 2000


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def matches(e: RiskException, asset_id: str, hostname: str, tags: Iterable[str], rule_id: str, subject: str) -> bool:
    if e.rule_id != rule_id:
        return False
    if "*" not in e.assets and not asset_in_scope(e.assets, asset_id, hostname, tags):
        return False
    return e.subject in ("", "*") or e.subject == subject or fnmatch.fnmatchcase(subject, e.subject)


def active(session: Session, now: dt.datetime | None = None) -> list[RiskException]:
    when = _now(now)
    q = select(RiskException).where(RiskException.revoked_at.is_(None), RiskException.expires_at > when)
    return list(session.execute(q).scalars())


def covering(
    exceptions: Sequence[RiskException], asset_id: str, hostname: str, tags: Iterable[str], rule_id: str, subject: str
) -> RiskException | None:
    """The exception (latest expiry first) that covers this finding, if any."""
    best: RiskException | None = None
    for e in exceptions:
        if matches(e, asset_id, hostname, tags, rule_id, subject) and (best is None or e.expires_at > best.expires_at):
            best = e
    return best


def _text(value: Any, field: str, limit: int = MAX_REASON) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{field} is required")
    text = value.strip()
    if len(text) > limit:
        raise UsageError(f"{field}: at most {limit} characters")
    return text


def _assets(session: Session, value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise UsageError("assets must be a list of agent ids, hostnames, tag:NAME or '*'")
    out = list(dict.fromkeys(i.strip() for i in items if i.strip()))
    if not out:
        raise UsageError("assets must name at least one agent id, hostname, tag:NAME, or '*' for all")
    known = [(a.id, a.hostname, list(a.tags)) for a in session.execute(select(Agent)).scalars()]
    for entry in out:
        if entry == "*":
            continue
        if entry.startswith("tag:"):
            if not entry[4:]:
                raise UsageError("asset 'tag:' needs a tag name, e.g. tag:web")
            continue  # a tag may name agents that enrol later
        if not any(entry == aid or entry.casefold() == host.casefold() for aid, host, _ in known):
            raise UsageError(f"asset {entry!r} matches no enrolled agent (give an agent id, a hostname, tag:NAME or *)")
    return out


def create(
    session: Session,
    actor: str,
    rule_id: Any,
    assets: Any,
    subject: Any,
    owner: Any,
    reason: Any,
    expires: Any,
    ticket_id: int | None = None,
    now: dt.datetime | None = None,
) -> RiskException:
    when = _now(now)
    rule = _text(rule_id, "rule_id", 128)
    subj = "*" if subject is None or (isinstance(subject, str) and not subject.strip()) else _text(subject, "subject",
                                                                                                   512)
    who = _text(owner, "owner", 128)
    if session.get(User, who) is None:
        raise UsageError(f"owner {who!r} is not a Vigil user; the owner answers for the risk and must be one")
    why = _text(reason, "reason")
    expires_at = parse_time(expires, "expires")
    if expires_at <= when:
        raise UsageError(f"expires {rfc3339(expires_at)} is in the past; an exception must expire in the future")
    if expires_at - when > MAX_DURATION:
        raise UsageError(f"expires: at most {MAX_DURATION.days} days ahead; accepted risk must be reviewed")
    scope = _assets(session, assets)
    eid = _new_id(session)
    e = RiskException(id=eid, rule_id=rule, assets=scope, subject=subj, owner=who, reason=why, created_by=actor,
                      created_at=when, expires_at=expires_at, ticket_id=ticket_id, revoke_reason="")
    session.add(e)
    session.flush()
    audit.record(session, actor, "exception.create", "exception", eid,
                 {"rule_id": rule, "assets": scope, "subject": subj, "owner": who, "reason": why,
                  "expires_at": rfc3339(expires_at), "ticket_id": ticket_id}, at=when)
    return e


def _new_id(session: Session) -> str:
    while True:
        eid = f"exc-{secrets.token_hex(4)}"
        if session.get(RiskException, eid) is None:
            return eid


def get(session: Session, exception_id: str) -> RiskException:
    e = session.get(RiskException, exception_id)
    if e is None:
        raise NotFound(f"no exception {exception_id!r}")
    return e


def revoke(session: Session, exception_id: str, user: User, reason: str, now: dt.datetime | None = None
           ) -> RiskException:
    when = _now(now)
    e = get(session, exception_id)
    if user.role != "admin" and user.username != e.created_by:
        raise Forbidden(f"only an admin or its creator ({e.created_by}) can revoke exception {exception_id}")
    if e.revoked_at is not None:
        raise Conflict(f"exception {exception_id} was already revoked by {e.revoked_by}")
    if e.expires_at <= when:
        raise Conflict(f"exception {exception_id} has already expired")
    e.revoked_at, e.revoked_by, e.revoke_reason = when, user.username, (reason or "").strip()
    audit.record(session, user.username, "exception.revoke", "exception", e.id, {"reason": e.revoke_reason}, at=when)
    return e


def list_exceptions(session: Session, state: str | None = None, now: dt.datetime | None = None
                    ) -> list[RiskException]:
    """All exceptions, newest first; ``state`` is ``active``, ``expired`` or ``revoked``."""
    when = _now(now)
    q = select(RiskException).order_by(RiskException.created_at.desc())
    if state == "active":
        q = q.where(RiskException.revoked_at.is_(None), RiskException.expires_at > when)
    elif state == "expired":
        q = q.where(RiskException.revoked_at.is_(None), RiskException.expires_at <= when)
    elif state == "revoked":
        q = q.where(RiskException.revoked_at.is_not(None))
    elif state:
        raise UsageError(f"state must be active, expired or revoked, not {state!r}")
    return list(session.execute(q).scalars())


def state_of(e: RiskException, now: dt.datetime | None = None) -> str:
    if e.revoked_at is not None:
        return "revoked"
    return "active" if e.expires_at > _now(now) else "expired"


def covered_counts(session: Session, ids: Sequence[str] | None = None) -> dict[str, int]:
    """How many findings each exception covers now (one query for a whole list)."""
    q = select(Finding.exception_id, func.count()).where(Finding.exception_id.is_not(None))
    if ids is not None:
        q = q.where(Finding.exception_id.in_(list(ids)))
    return {str(eid): int(n) for eid, n in session.execute(q.group_by(Finding.exception_id))}


def list_json(session: Session, rows: Sequence[RiskException], now: dt.datetime | None = None
              ) -> list[dict[str, Any]]:
    counts = covered_counts(session, [e.id for e in rows])
    return [exception_json(e, now=now, covered=counts.get(e.id, 0)) for e in rows]


def exception_json(e: RiskException, session: Session | None = None, now: dt.datetime | None = None,
                   covered: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id, "rule_id": e.rule_id, "assets": list(e.assets), "subject": e.subject, "owner": e.owner,
        "reason": e.reason, "created_by": e.created_by, "created_at": rfc3339(e.created_at),
        "expires_at": rfc3339(e.expires_at), "ticket_id": e.ticket_id, "state": state_of(e, now),
        "revoked_by": e.revoked_by, "revoked_at": rfc3339(e.revoked_at), "revoke_reason": e.revoke_reason,
    }
    if covered is None and session is not None:
        covered = covered_counts(session, [e.id]).get(e.id, 0)
    if covered is not None:
        out["covered_findings"] = covered
    return out
