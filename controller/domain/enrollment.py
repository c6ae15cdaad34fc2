"""Enrollment tokens and agent certificates (SPEC section 7), and the limit on enrollment attempts.

Each source address may try :data:`ENROLL_BURST` enrollments at once and :data:`ENROLL_PER_MINUTE` a minute
after that (a token bucket, :class:`EnrollmentLimiter`); an attempt over the limit is refused before its token
is looked at. Every refused enrollment is audited (``agent.enroll_failed``) with the source, the hostname the
agent gave and the reason; refusals for the rate limit are counted, one entry per source per
:data:`LIMIT_AUDIT_WINDOW`, not one per attempt.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from common.tokens import EnrollmentToken, hash_secret, parse_token, random_urlsafe
from controller.domain import audit
from controller.domain.ca import CertificateAuthority
from controller.errors import EnrollmentError, NotFound
from controller.storage.models import Agent, EnrollmentTokenRow

_PLATFORM_TAGS = {"linux": "linux", "win": "windows", "darwin": "macos"}

ENROLL_BURST = 20
ENROLL_PER_MINUTE = 10
LIMIT_AUDIT_WINDOW = 60.0
RATE_LIMITED = "rate limited"
# Sources remembered at most; the least recently seen is forgotten first (a forgotten source starts full).
LIMITER_MAX_SOURCES = 10_000


def create_token(
    session: Session, ca: CertificateAuthority, ttl: dt.timedelta, tags: list[str], actor: str
) -> str:
    now = dt.datetime.now(dt.UTC)
    token = EnrollmentToken(random_urlsafe(9), random_urlsafe(24), ca.ca_fingerprint())
    session.add(
        EnrollmentTokenRow(
            id=token.token_id,
            secret_hash=token.secret_hash,
            created_at=now,
            expires_at=now + ttl,
            tags=tags,
        )
    )
    audit.record(
        session, actor, "token.create", "token", token.token_id, {"expires_at": now + ttl, "tags": tags}
    )
    return token.encode()


def enroll(
    session: Session,
    ca: CertificateAuthority,
    token_text: str,
    csr_pem: bytes,
    hostname: str,
    agent_version: str,
    os_name: str,
) -> tuple[Agent, bytes]:
    """Check the token, sign the CSR and register the agent. Raises EnrollmentError with the reason.

    The token row is marked used in the same transaction that creates the agent, and the update is
    conditional on it being unused, so two concurrent enrollments with one token cannot both succeed.
    """
    try:
        token = parse_token(token_text)
    except ValueError as exc:
        raise EnrollmentError(str(exc)) from exc
    if token.ca_fingerprint != ca.ca_fingerprint():
        raise EnrollmentError("enrollment token was issued by a different controller (CA fingerprint differs)")
    row = session.get(EnrollmentTokenRow, token.token_id)
    if row is None or row.secret_hash != hash_secret(token.secret):
        raise EnrollmentError("enrollment token is not known to this controller (forged or mistyped)")
    now = dt.datetime.now(dt.UTC)
    if row.used_at is not None:
        raise EnrollmentError(
            f"enrollment token was already used at {row.used_at.isoformat(timespec='seconds')}; "
            "create a new one with 'vigil-controller token create'"
        )
    if row.expires_at <= now:
        raise EnrollmentError(
            f"enrollment token expired at {row.expires_at.isoformat(timespec='seconds')}; "
            "create a new one with 'vigil-controller token create'"
        )
    agent_id = "agt-" + uuid.uuid4().hex[:16]
    try:
        cert_pem, serial, not_after = ca.sign_agent_csr(csr_pem, agent_id)
    except ValueError as exc:
        raise EnrollmentError(str(exc)) from exc
    updated = session.execute(
        update(EnrollmentTokenRow)
        .where(EnrollmentTokenRow.id == row.id, EnrollmentTokenRow.used_at.is_(None))
        .values(used_at=now, used_by=agent_id)
    )
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        raise EnrollmentError("enrollment token was already used")
    platform_tag = next((t for p, t in _PLATFORM_TAGS.items() if os_name.lower().startswith(p)), None)
    tags = sorted(set(row.tags) | ({platform_tag} if platform_tag else set()))
    agent = Agent(
        id=agent_id,
        hostname=hostname[:255] or "unknown",
        os=os_name[:255],
        version=agent_version[:64],
        tags=tags,
        enrolled_at=now,
        status="offline",
        cert_serial=format(serial, "x"),
        cert_not_after=not_after,
        max_sequence=0,
    )
    session.add(agent)
    session.flush()
    audit.record(
        session,
        f"agent:{agent_id}",
        "agent.enroll",
        "agent",
        agent_id,
        {"hostname": agent.hostname, "token": row.id, "tags": tags, "cert_serial": agent.cert_serial},
    )
    return agent, cert_pem


def revoke(session: Session, agent_id: str, actor: str, reason: str) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"no agent {agent_id!r}")
    if agent.revoked_at is None:
        agent.revoked_at = dt.datetime.now(dt.UTC)
        agent.status = "revoked"
        audit.record(session, actor, "agent.revoke", "agent", agent_id, {"reason": reason, "serial": agent.cert_serial})
    return agent


def find_agent_for_cert(session: Session, agent_id: str, serial_hex: str) -> Agent | None:
    """The agent a presented certificate belongs to, or None if unknown, revoked or superseded."""
    agent = session.execute(select(Agent).where(Agent.id == agent_id)).scalar_one_or_none()
    if agent is None or agent.revoked_at is not None or agent.cert_serial != serial_hex:
        return None
    return agent


# -- the limit on attempts -----------------------------------------------------------------------------


@dataclass
class _Bucket:
    tokens: float
    at: float
    refused: int = 0  # refused for the limit since the last audit entry about it
    audited_at: float | None = None
    hostname: str = ""


@dataclass(frozen=True)
class Refusal:
    """An attempt over the limit: how long until the next one may be made, and the audit entry now due
    (the number of refusals it reports), if one is."""

    retry_after_s: int
    audit_refused: int | None


class EnrollmentLimiter:
    """A token bucket per source address: ``burst`` attempts at once, then ``per_minute`` a minute.

    Memory is bounded: a source whose bucket has refilled is forgotten when it is the oldest seen (it would
    start full anyway), and at most ``max_sources`` are kept, the least recently seen dropped first.
    """

    def __init__(self, burst: int = ENROLL_BURST, per_minute: float = ENROLL_PER_MINUTE,
                 max_sources: int = LIMITER_MAX_SOURCES, window: float = LIMIT_AUDIT_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate, self.max_sources, self.window = burst, per_minute / 60.0, max_sources, window
        self.clock = clock
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._unreported: set[str] = set()  # sources with refusals not yet audited

    def __len__(self) -> int:
        return len(self._buckets)

    def attempt(self, source: str, hostname: str = "") -> Refusal | None:
        """Take one attempt for ``source``: None when allowed, else the :class:`Refusal`."""
        now = self.clock()
        self._evict(now)
        bucket = self._buckets.pop(source, None) or _Bucket(float(self.burst), now)
        self._buckets[source] = bucket  # the most recently seen goes last
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        bucket.refused += 1
        bucket.hostname = hostname
        self._unreported.add(source)
        due = None
        if bucket.audited_at is None or now - bucket.audited_at >= self.window:
            due, bucket.refused, bucket.audited_at = bucket.refused, 0, now
            self._unreported.discard(source)
        return Refusal(max(1, math.ceil((1.0 - bucket.tokens) / self.rate)), due)

    def pending(self) -> list[tuple[str, str, int]]:
        """(source, hostname, refusals) not yet audited whose window has passed; they are taken (counted as
        audited). Called on each attempt, so that the last refusals of a burst are reported too."""
        now = self.clock()
        out = []
        for source in sorted(self._unreported):
            b = self._buckets.get(source)
            if b is None:
                self._unreported.discard(source)
            elif b.audited_at is not None and now - b.audited_at >= self.window:
                out.append((source, b.hostname, b.refused))
                b.refused, b.audited_at = 0, now
                self._unreported.discard(source)
        return out

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate
        while self._buckets:
            source, oldest = next(iter(self._buckets.items()))
            idle = now - oldest.at >= full_after and not oldest.refused
            if not idle and len(self._buckets) < self.max_sources:
                return
            del self._buckets[source]
            self._unreported.discard(source)


def peer_address(peer: str) -> str:
    """The address of a gRPC peer string without its port: ``ipv4:10.0.0.5:51234`` → ``10.0.0.5``,
    ``ipv6:[::1]:51234`` → ``::1``, ``unix:/path`` as it is."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    return peer or "-"


def token_id_of(token_text: str) -> str:
    """The id of a well-formed token ("-" when it is not one), for the audit entry of a refusal."""
    try:
        return parse_token(token_text).token_id
    except ValueError:
        return "-"


def record_refusal(session: Session, source: str, hostname: str, reason: str, token_text: str = "",
                   refused: int = 1) -> None:
    """Audit a refused enrollment attempt (or ``refused`` of them, for the rate limit)."""
    details: dict[str, object] = {"source": source, "hostname": hostname[:255], "reason": reason}
    if refused != 1:
        details["refused"] = refused
    audit.record(session, f"enroll:{source}", "agent.enroll_failed", "token", token_id_of(token_text), details)


def rate_limited(source: str, retry_after_s: int) -> str:
    return f"too many enrollment attempts from {source}; retry in {retry_after_s} s"
