"""What every notification target shares: the message handed to it, the two interfaces, the errors.

Exception tree::

    VigilError
     └── NotifyError
          ├── NotifyConfigError (ConfigError, ValueError)   notifications.yaml is wrong; ``problems`` lists
          │                                                   (line, field, reason)
          └── DeliveryError (OSError)                        one attempt failed; it will be retried
               └── TargetUnavailable                         the target itself looks down (refused, timed
                                                               out, 5xx, 429): pause the whole target

A target is either a :class:`Notifier` (webhook, e-mail, syslog: every message is sent as it is) or a
:class:`TicketSink` (Jira, ServiceNow, Roundup: our ticket has a counterpart there that is opened once,
then updated and resolved in step). :func:`sync_ticket` is the one place that decides which of
``open``/``update``/``resolve`` a message means, so every tracker behaves the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from common.errors import ConfigError, VigilError
from controller import vocabulary

SEVERITIES = vocabulary.SEVERITIES
# Event kinds controller.domain.tickets writes to the outbox ("test" is only ever sent by the test endpoint).
EVENT_KINDS: tuple[str, ...] = (
    "opened", "reopened", "auto_resolved", "transition", "comment", "assigned", "report", "exception",
)
# Our ticket statuses by what they mean to a tracker.
ACTIVE_STATUSES = vocabulary.ACTIVE_STATUSES
RESOLVED_STATUSES = vocabulary.RESOLVED_STATUSES
CLOSED_STATUSES = vocabulary.CLOSED_STATUSES
STATUSES = vocabulary.TICKET_STATUSES


class NotifyError(VigilError):
    pass


class NotifyConfigError(NotifyError, ConfigError):
    """notifications.yaml was rejected; ``problems`` holds every ``(line, field, reason)`` found."""

    def __init__(self, filename: str, problems: list[tuple[int, str, str]]) -> None:
        self.filename = filename
        self.problems = problems
        lines = []
        for line, where, reason in problems:
            lines.append(f"{filename}:{line}: {where}: {reason}" if where else f"{filename}:{line}: {reason}")
        super().__init__("\n".join(lines))


class DeliveryError(NotifyError, OSError):
    """One attempt failed. The message says what happened, never with a secret in it."""


class TargetUnavailable(DeliveryError):
    """The target is down or overloaded: the worker pauses the whole target, not just this message."""


@dataclass(frozen=True)
class Message:
    """One outbox message as a target sees it."""

    outbox_id: int
    kind: str
    created_at: dt.datetime
    ticket: dict[str, Any]
    event: dict[str, Any]
    # Attempts already made for this target: a retry may follow an attempt that half-succeeded.
    attempt: int = 0
    # Where our ticket can be seen in the Vigil web UI, if the configuration says where that is.
    link: str | None = None

    @classmethod
    def from_payload(cls, outbox_id: int, kind: str, created_at: dt.datetime, payload: Mapping[str, Any],
                     attempt: int = 0, public_url: str | None = None) -> Message:
        ticket = dict(payload.get("ticket") or {})
        link = None
        if public_url and ticket.get("id") is not None:
            link = f"{public_url.rstrip('/')}/tickets/{ticket['id']}"
        return cls(outbox_id, kind, created_at, ticket, dict(payload.get("event") or {}), attempt, link)

    @property
    def severity(self) -> str:
        return str(self.ticket.get("severity") or "low")

    @property
    def status(self) -> str:
        return str(self.ticket.get("status") or "open")


@dataclass
class ExternalRef:
    """Our ticket's counterpart in a tracker, as stored in ``external_tickets``."""

    external_id: str
    url: str = ""
    state: str = ""
    # Tracker-specific bits a sink wants back next time (not stored; re-read when missing).
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Notifier(Protocol):
    """A target that is told about every message (webhook, e-mail, syslog)."""

    name: str

    def send(self, msg: Message) -> str:
        """Deliver ``msg``; return a short detail for the attempt record. Raise DeliveryError on failure."""
        ...

    def check(self) -> str:
        """A harmless check that the target answers (the admin "test" button); raise DeliveryError if not."""
        ...


@runtime_checkable
class TicketSink(Protocol):
    """A tracker that keeps a counterpart of each of our tickets, in step with ours and never twice.

    Every method may be called again after a failure (the worker retries), so each must be safe to
    repeat: ``find`` is asked before ``open`` whenever the counterpart is not known locally.
    """

    name: str

    def find(self, msg: Message) -> ExternalRef | None:
        """The counterpart carrying our fingerprint, if the tracker already has one."""
        ...

    def open(self, msg: Message) -> ExternalRef:
        """Create the counterpart (in the state matching ``msg.status``)."""
        ...

    def update(self, ref: ExternalRef, msg: Message) -> ExternalRef:
        """Add the event as a comment and move the counterpart to the state matching ``msg.status``."""
        ...

    def resolve(self, ref: ExternalRef, msg: Message) -> ExternalRef:
        """Add the resolution as a comment and resolve (or close) the counterpart."""
        ...

    def check(self) -> str:
        """A harmless read that proves the URL and credentials work."""
        ...


Target = Notifier | TicketSink


def sync_ticket(sink: TicketSink, known: ExternalRef | None, msg: Message) -> tuple[ExternalRef, str]:
    """Bring ``sink``'s counterpart in step with ``msg``; return it and a detail for the attempt record."""
    ref = known
    known_detail = ""
    if ref is None:
        ref = sink.find(msg)
        if ref is not None:
            known_detail = f"found {ref.external_id} by fingerprint; "
    if ref is None:
        ref = sink.open(msg)
        if msg.status in ACTIVE_STATUSES or msg.kind in ("opened", "reopened"):
            return ref, f"created {ref.external_id}"
        # Resolved before the tracker heard of it (a filter let only this event through, or the target
        # was added later): create it, then resolve it so both sides agree.
        ref = sink.resolve(ref, msg)
        return ref, f"created and resolved {ref.external_id}"
    if msg.status in RESOLVED_STATUSES + CLOSED_STATUSES:
        ref = sink.resolve(ref, msg)
        return ref, f"{known_detail}resolved {ref.external_id} ({ref.state})"
    ref = sink.update(ref, msg)
    return ref, f"{known_detail}updated {ref.external_id} ({ref.state})"


def fingerprint_tag(msg: Message) -> str:
    """A short token derived from our fingerprint that fits anywhere (Jira label, title, correlation id).

    The fingerprint itself (asset|rule|subject) has spaces and slashes and can be 700 characters long.
    """
    fp = str(msg.ticket.get("fingerprint") or f"ticket-{msg.ticket.get('id')}")
    return "vigil-" + hashlib.sha256(fp.encode()).hexdigest()[:20]


def summary(msg: Message, limit: int = 255) -> str:
    t = msg.ticket
    text = f"[Vigil #{t.get('id')}] {t.get('title', '')}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(value: Any) -> str:
    return str(value) if value else "-"


def countdown(due: str | None, now: dt.datetime | None = None) -> str:
    """``"due 2026-03-02T08:30:00Z (in 27 min)"`` or ``"... (OVERDUE by 5 min)"``; empty without a due time."""
    if not due:
        return ""
    try:
        when = dt.datetime.fromisoformat(due.replace("Z", "+00:00"))
    except ValueError:
        return f"due {due}"
    left = when - (now or dt.datetime.now(dt.UTC))
    minutes = int(abs(left.total_seconds()) // 60)
    return f"due {due} (in {minutes} min)" if left.total_seconds() >= 0 else f"due {due} (OVERDUE by {minutes} min)"


def describe_ticket(msg: Message, now: dt.datetime | None = None) -> str:
    """The ticket as plain text: what a tracker's description or an e-mail body starts with."""
    t = msg.ticket
    lines = [
        str(t.get("title", "")),
        "",
        f"Severity:     {t.get('severity')}",
        f"Status:       {t.get('status')}",
        f"Asset:        {t.get('asset_name') or t.get('asset')} ({t.get('asset')})",
        f"Rule:         {t.get('rule_id')} (check {t.get('check')})",
        f"Subject:      {t.get('subject')}",
        f"References:   {', '.join(t.get('refs') or []) or '-'}",
        f"First seen:   {_when(t.get('first_seen'))}",
        f"Last seen:    {_when(t.get('last_seen'))} ({t.get('occurrences')} occurrence(s))",
    ]
    if t.get("severity") in vocabulary.REPORTED_SEVERITIES and t.get("initial_report_due"):
        lines.append(f"Initial report (TPEx-CPA 3(12)2): {countdown(t.get('initial_report_due'), now)}")
    if t.get("assignee"):
        lines.append(f"Assignee:     {t.get('assignee')}")
    if msg.link:
        lines.append(f"In Vigil:     {msg.link}")
    lines.append(f"Fingerprint:  {t.get('fingerprint')}")
    evidence = t.get("evidence") or {}
    if isinstance(evidence, dict) and evidence:
        diff = evidence.get("diff")
        rest = {k: v for k, v in evidence.items() if k != "diff"}
        if rest:
            lines += ["", "Evidence:"] + [f"  {k}: {v}" for k, v in sorted(rest.items())]
        if diff:
            lines += ["", "Diff:", str(diff)]
    return "\n".join(lines)


def describe_event(msg: Message) -> str:
    """One event as a comment: who did what, then their text, then the marker of this outbox message."""
    e = msg.event
    actor = e.get("actor") or "system"
    text = str(e.get("text") or "")
    kind = msg.kind
    if kind == "transition":
        head = f"Status {e.get('from')} → {e.get('to')} by {actor}"
    elif kind == "comment":
        head = f"Comment by {actor}"
    elif kind == "assigned":
        head = f"Assigned by {actor}"
    elif kind == "auto_resolved":
        head = "Resolved automatically: the finding passes again"
    elif kind == "reopened":
        head = "Reopened: the finding fails again"
    elif kind == "opened":
        head = "Opened"
    elif kind == "report":
        head = f"Report filed by {actor}"
    elif kind == "exception":
        head = f"Risk exception ({actor})"
    else:
        head = f"{kind} by {actor}"
    body = f"{head}\n\n{text}" if text else head
    return f"{body}\n\n[vigil event {msg.outbox_id}, ticket status {msg.status}]"
