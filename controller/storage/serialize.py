"""The JSON shapes of the controller's objects, shared by the REST API, the web UI and notifications."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.storage.models import Agent, Finding, Ticket, TicketEvent, TicketReport


def rfc3339(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def agent_json(a: Agent) -> dict[str, Any]:
    return {
        "id": a.id,
        "hostname": a.hostname,
        # A revocation wins over whatever a stream that was closing at that moment last wrote.
        "status": "revoked" if a.revoked_at is not None else a.status,
        "last_seen": rfc3339(a.last_seen),
        "tags": list(a.tags),
        "version": a.version,
        "os": a.os,
        "enrolled_at": rfc3339(a.enrolled_at),
        "revoked": a.revoked_at is not None,
        "spool_depth": a.spool_depth,
        "dropped_records": a.dropped_records,
        "checks": a.checks,
        "cert_not_after": rfc3339(a.cert_not_after),
    }


def ticket_json(t: Ticket, hostname: str | None = None) -> dict[str, Any]:
    return {
        "id": t.id,
        "title": t.title,
        "severity": t.severity,
        "status": t.status,
        "asset": t.asset,
        "asset_name": hostname,
        "check": t.check_id,
        "rule_id": t.rule_id,
        "subject": t.subject,
        "refs": list(t.refs),
        "baseline": t.baseline,
        "baseline_version": t.baseline_version,
        "first_seen": rfc3339(t.first_seen),
        "last_seen": rfc3339(t.last_seen),
        "occurrences": t.occurrences,
        "initial_report_due": rfc3339(t.initial_report_due),
        "resolved_at": rfc3339(t.resolved_at),
        "resolution": t.resolution,
        "assignee": t.assignee,
        "evidence": t.evidence,
        # Our dedupe key: external trackers keep it so that a ticket is never created there twice.
        "fingerprint": t.dedupe_key,
        "exception_id": t.exception_id,
        "reopened": t.reopened or 0,
    }


def finding_json(f: Finding) -> dict[str, Any]:
    return {
        "id": f.id,
        "asset": f.asset,
        "rule_id": f.rule_id,
        "check": f.check_id,
        "subject": f.subject,
        "status": f.status,
        "severity": f.severity,
        "baseline": f.baseline,
        "baseline_version": f.baseline_version,
        "refs": list(f.refs),
        "message": f.message,
        "evidence": f.evidence,
        "first_seen": rfc3339(f.first_seen),
        "last_seen": rfc3339(f.last_seen),
        "result_id": f.result_id,
        "exception_id": f.exception_id,
    }


def event_json(e: TicketEvent) -> dict[str, Any]:
    return {"at": rfc3339(e.at), "actor": e.actor, "kind": e.kind, "from": e.from_status, "to": e.to_status,
            "text": e.text}


def report_json(r: TicketReport) -> dict[str, Any]:
    return {"stage": r.stage, "filed_by": r.filed_by, "filed_at": rfc3339(r.filed_at), "text": r.text}
