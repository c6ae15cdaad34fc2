"""Append-only, hash-chained audit log of every state change (TPEx-CPA 3(8)5, 3(12)6).

Each entry's hash is SHA-256 over the previous entry's hash and the canonical JSON of the entry, so
changing, removing or reordering any past entry breaks every hash after it; ``verify`` walks the chain
end to end. Entries are written in the same transaction as the change they record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from controller.storage.models import AuditEntry

GENESIS = "0" * 64


def _canonical(entry: AuditEntry) -> bytes:
    body = {
        "seq": entry.seq,
        "at": entry.at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "details": entry.details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def _hash(prev: str, entry: AuditEntry) -> str:
    return hashlib.sha256(prev.encode() + _canonical(entry)).hexdigest()


def record(
    session: Session,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    details: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction.

    The new row's primary key is last seq + 1, so two writers racing for the same place would collide on
    the key and one transaction would fail rather than fork the chain. To keep them from racing at all,
    the transaction first takes the database's write lock (SQLite) or the audit log's advisory lock
    (PostgreSQL), held until it commits, and only then reads the last entry.
    """
    _lock_the_log(session)
    last = session.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).scalar_one_or_none()
    prev = last.hash if last else GENESIS
    when = at or dt.datetime.now(dt.UTC)
    entry = AuditEntry(
        seq=(last.seq + 1) if last else 1,
        at=when,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        details=json.loads(json.dumps(details or {}, default=str)),
        prev_hash=prev,
        hash="",
    )
    entry.hash = _hash(prev, entry)
    session.add(entry)
    session.flush()
    return entry


# Any constant shared by every writer of this database: the key of the audit log's advisory lock.
_PG_LOCK_KEY = 0x76696731  # "vig1"


def _lock_the_log(session: Session) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        # A write statement takes SQLite's one write lock (waiting for busy_timeout) even when it changes
        # no row; the Python driver has not begun the transaction before the first such statement, so a
        # plain SELECT of the last entry could be overtaken by another writer's commit.
        session.execute(text("UPDATE audit_log SET seq = seq WHERE 0"))
    elif dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""
    head: str = GENESIS


def iter_entries(session: Session, batch: int = 1000) -> Iterator[AuditEntry]:
    last = 0
    while True:
        rows = session.execute(
            select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
        ).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify(session: Session) -> VerifyResult:
    """Walk the whole chain; report the first entry whose link or content does not verify."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    for entry in iter_entries(session):
        if entry.seq != expected_seq:
            return VerifyResult(False, count, entry.seq, f"entry {expected_seq} is missing", prev)
        if entry.prev_hash != prev:
            return VerifyResult(False, count, entry.seq, "link to the previous entry is broken", prev)
        if _hash(prev, entry) != entry.hash:
            return VerifyResult(False, count, entry.seq, "content does not match its hash (altered)", prev)
        prev = entry.hash
        expected_seq += 1
        count += 1
    return VerifyResult(True, count, None, "", prev)
