"""Enrollment tokens and agent certificates (SPEC section 7)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from common.tokens import EnrollmentToken, hash_secret, parse_token, random_urlsafe
from controller.domain import audit
from controller.domain.ca import CertificateAuthority
from controller.errors import EnrollmentError, NotFound
from controller.storage.models import Agent, EnrollmentTokenRow

_PLATFORM_TAGS = {"linux": "linux", "win": "windows", "darwin": "macos"}


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
