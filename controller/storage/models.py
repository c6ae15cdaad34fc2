"""The controller's tables. Portable SQL only (SQLite and PostgreSQL): JSON columns, no dialect types."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# The widest integer an id column holds on every backend (a signed 64-bit integer): a larger value names no
# row, and the drivers refuse to bind it.
MAX_ID = 2**63 - 1


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Agent(Base):
    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    os: Mapped[str] = mapped_column(String(255), default="")
    version: Mapped[str] = mapped_column(String(64), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    enrolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="offline")
    cert_serial: Mapped[str] = mapped_column(String(64))
    cert_not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Highest sequence received (stored, or refused and quarantined) in the agent's current spool incarnation.
    max_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    # The agent's current spool incarnation ("" for agents that predate incarnations).
    incarnation: Mapped[str] = mapped_column(String(32), default="")
    checks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    spool_depth: Mapped[int] = mapped_column(BigInteger, default=0)
    dropped_records: Mapped[int] = mapped_column(BigInteger, default=0)
    policy_id: Mapped[str] = mapped_column(String(64), default="")
    # task id -> when its last result arrived (ISO 8601): a task silent past its interval is unknown.
    last_results: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class EnrollmentTokenRow(Base):
    __tablename__ = "enrollment_tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Result(Base):
    """One report as received: stored exactly once per (agent, spool incarnation, sequence)."""

    __tablename__ = "results"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    incarnation: Mapped[str] = mapped_column(String(32), default="")
    sequence: Mapped[int] = mapped_column(BigInteger)
    check_id: Mapped[str] = mapped_column(String(32))
    check_version: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[str] = mapped_column(String(64), default="")
    collected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    status_message: Mapped[str] = mapped_column(Text, default="")
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The report as it came over the wire, kept as evidence (TPEx-CPA 3(12)6).
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (
        UniqueConstraint("agent_id", "incarnation", "sequence", name="uq_results_agent_incarnation_sequence"),
        Index("ix_results_agent_check", "agent_id", "check_id"),
    )


class AgentIncarnation(Base):
    """One spool incarnation of an agent: a new one means the agent's spool was recreated (deleted, or
    moved aside as damaged), and results spooled before it and not yet delivered may be lost."""

    __tablename__ = "agent_incarnations"
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    incarnation: Mapped[str] = mapped_column(String(32), primary_key=True)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # What the agent said about why it began ("" when it did not know).
    note: Mapped[str] = mapped_column(Text, default="")
    # Highest sequence received in this incarnation (stored or quarantined), and how many reports were stored.
    max_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    reports: Mapped[int] = mapped_column(BigInteger, default=0)


class SequenceGap(Base):
    """Sequences of one incarnation that never arrived: a sequence above the highest one stored plus one."""

    __tablename__ = "sequence_gaps"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    incarnation: Mapped[str] = mapped_column(String(32))
    first: Mapped[int] = mapped_column(BigInteger)
    last: Mapped[int] = mapped_column(BigInteger)
    found_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Sequences of the range that arrived later after all (resent out of order).
    filled: Mapped[int] = mapped_column(BigInteger, default=0)


class QuarantinedReport(Base):
    """A report the controller refused (malformed, too large, out of range), kept instead of dropped."""

    __tablename__ = "quarantined_reports"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    incarnation: Mapped[str] = mapped_column(String(32), default="")
    # As sent (uint64 on the wire): kept as text so a value past 2^63 - 1 is kept too.
    sequence: Mapped[str] = mapped_column(String(24))
    check_id: Mapped[str] = mapped_column(String(32), default="")
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # The report as received, cut at controller.domain.ingest.MAX_QUARANTINE_BYTES (size and sha256 are
    # of the whole report).
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class Baseline(Base):
    __tablename__ = "baselines"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    applied_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    applied_by: Mapped[str] = mapped_column(String(128))


class Finding(Base):
    """One rule x one asset x one subject, as last evaluated."""

    __tablename__ = "findings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(512))
    check_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(8))  # pass | fail | unknown (controller.vocabulary.VERDICTS)
    severity: Mapped[str] = mapped_column(String(16))
    baseline: Mapped[str] = mapped_column(String(128))
    baseline_version: Mapped[int] = mapped_column(Integer)
    refs: Mapped[list[str]] = mapped_column(JSON, default=list)
    message: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    result_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # A failing finding covered by an unexpired exception: accepted risk, no ticket.
    exception_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Two baselines that share a rule id judge an asset separately: the baseline is part of the key.
    __table_args__ = (UniqueConstraint("asset", "baseline", "rule_id", "subject", name="uq_findings_key"),)


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # asset|baseline|rule|subject: 64 + 128 + 128 + 512 and three separators (migration 0005).
    dedupe_key: Mapped[str] = mapped_column(String(1024), unique=True)
    title: Mapped[str] = mapped_column(String(512))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    asset: Mapped[str] = mapped_column(String(64))
    check_id: Mapped[str] = mapped_column(String(32))
    rule_id: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(512))
    refs: Mapped[list[str]] = mapped_column(JSON, default=list)
    baseline: Mapped[str] = mapped_column(String(128))
    baseline_version: Mapped[int] = mapped_column(Integer)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    initial_report_due: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolution: Mapped[str] = mapped_column(Text, default="")
    assignee: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The exception (accepted risk) that covers this ticket's finding, while one does.
    exception_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reopened: Mapped[int] = mapped_column(Integer, default=0)


class TicketEvent(Base):
    """The timeline of a ticket: every state change, comment and automatic action."""

    __tablename__ = "ticket_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(24), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(24), nullable=True)
    text: Mapped[str] = mapped_column(Text, default="")


class User(Base):
    __tablename__ = "users"
    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # RFC 6238 secret (base32); TOTP is required for admins once enrolled, and they must enrol.
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The last accepted TOTP time step, so a code cannot be replayed.
    totp_last_step: Mapped[int] = mapped_column(BigInteger, default=0)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username"))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEntry(Base):
    """Append-only, hash-chained: hash = sha256(prev_hash + canonical JSON of this entry)."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(256))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class LoginThrottle(Base):
    """Failed sign-ins per (account name, source address), for names that exist and names that do not
    alike, so that the answer never tells which accounts exist (controller.domain.users)."""

    __tablename__ = "login_throttle"
    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class Lock(Base):
    """Named leases so that schedules run once fleet-wide when several controllers share a database."""

    __tablename__ = "locks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Change(Base):
    """An approved change window (TPEx-CPA 3(7)1): file changes inside its scope and window are expected.

    ``assets`` holds agent ids, hostnames or ``tag:NAME``; ``paths`` absolute paths or globs. A change
    covers nothing until it is approved, and nothing before the moment it was approved.
    """

    __tablename__ = "changes"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # requested | approved | rejected | cancelled
    requested_by: Mapped[str] = mapped_column(String(128))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)
    assets: Mapped[list[str]] = mapped_column(JSON)
    paths: Mapped[list[str]] = mapped_column(JSON)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    approved_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Who rejected or cancelled it, when and why.
    closed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    close_reason: Mapped[str] = mapped_column(Text, default="")


class ChangeRecord(Base):
    """One expected file change, kept as the change record an auditor samples (TPEx-CPA 3(8)4(3)).

    Linked to the approved change that made it expected, or, with ``change_id`` empty, to the package
    manager that was changing the file when the rule accepts package changes (``expected_source``).
    """

    __tablename__ = "change_records"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    change_id: Mapped[str | None] = mapped_column(ForeignKey("changes.id"), nullable=True, index=True)
    expected_source: Mapped[str] = mapped_column(String(255))
    asset: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(Text)
    old_path: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16))
    # When the change happened as far as the controller can tell (see controller.domain.changes.event_time).
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    detected_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    result_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sha256_before: Mapped[str] = mapped_column(String(64), default="")
    sha256_after: Mapped[str] = mapped_column(String(64), default="")
    # The event as reported (before/after state, changed fields, diff).
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (Index("ix_change_records_asset_at", "asset", "at"),)


class TicketReport(Base):
    """A report stage filed on a critical/high ticket (TPEx-CPA 3(12)2): initial, formal, closure."""

    __tablename__ = "ticket_reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    stage: Mapped[str] = mapped_column(String(16))  # initial | formal | closure
    filed_by: Mapped[str] = mapped_column(String(128))
    filed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    text: Mapped[str] = mapped_column(Text)


class RiskException(Base):
    """Accepted risk: failures of ``rule_id`` on the matching assets and subjects open no ticket until
    ``expires_at``. ``assets`` holds agent ids, hostnames, ``tag:NAME`` or ``*``; ``subject`` a glob."""

    __tablename__ = "exceptions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(128), index=True)
    assets: Mapped[list[str]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(String(512), default="*")
    owner: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    # The ticket whose false positive led to it, if any.
    ticket_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoke_reason: Mapped[str] = mapped_column(Text, default="")


class WebSession(Base):
    """A browser session, server-side so that logout, idle timeout and locking end it at once.

    ``id`` is the SHA-256 of the cookie value (the cookie itself is never stored)."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_active: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    csrf_token: Mapped[str] = mapped_column(String(64))
    # False until the second factor was given (admins with TOTP).
    mfa_passed: Mapped[bool] = mapped_column(Boolean, default=False)
    client: Mapped[str] = mapped_column(String(255), default="")
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str] = mapped_column(String(32), default="")


class OutboxMessage(Base):
    """Transactional outbox: one row per ticket event worth telling the outside world, written in the
    same transaction as the event, so a notification can be late but never lost."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(32))  # opened | reopened | transition | comment | assigned | ...
    ticket_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    # The ticket as it was after the event plus the event itself (controller.storage.serialize.outbox_payload).
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Written with the message (controller.notify.enqueue), one per target that wants it, so that the
    # unit of work inserts them after the message without a flush in between.
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="message")


class Delivery(Base):
    """Where one outbox message stands for one notification target."""

    __tablename__ = "deliveries"
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | delivered | skipped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[OutboxMessage] = relationship(back_populates="deliveries")


class DeliveryAttempt(Base):
    """Every attempt to deliver, kept as the record of who was told what and when."""

    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(BigInteger, index=True)
    target: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class ExternalTicket(Base):
    """Our ticket's counterpart in an external tracker (Jira, ServiceNow, Roundup), so it is updated and
    closed in step and never created twice."""

    __tablename__ = "external_tickets"
    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ComplianceSnapshot(Base):
    """Fleet state sampled periodically, for the dashboard's trend charts."""

    __tablename__ = "compliance_snapshots"
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    findings_total: Mapped[int] = mapped_column(Integer)
    findings_passing: Mapped[int] = mapped_column(Integer)
    # Findings the controller could not judge (counted in the total, never as passing); None before 0004.
    findings_unknown: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agents: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # status -> count
    open_tickets: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # severity -> count
