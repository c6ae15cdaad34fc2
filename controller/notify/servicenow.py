"""ServiceNow incidents through the Table API (``/api/now/table/incident``), basic auth.

Calls made::

    GET   /api/now/table/incident?sysparm_query=correlation_id=<tag>&sysparm_limit=1   find
    POST  /api/now/table/incident                   create (short_description, description, correlation_id,
                                                    correlation_display, impact, urgency, state, ...)
    PATCH /api/now/table/incident/{sys_id}          work_notes per event, state; resolving also sets
                                                    close_code and close_notes
    GET   /api/now/table/incident?sysparm_limit=1   (the admin "test": credentials and table access)

``correlation_id`` holds ``vigil-<hash of our fingerprint>`` (the field is 100 characters, our
fingerprint can be longer; the full fingerprint is in the description). States (configurable under
``statuses:``): 1 New, 2 In Progress, 6 Resolved, 7 Closed.
"""

from __future__ import annotations

from typing import Any

from controller.notify._http import Client, basic_auth
from controller.notify.base import (
    DeliveryError,
    ExternalRef,
    Message,
    describe_event,
    describe_ticket,
    fingerprint_tag,
    summary,
)
from controller.notify.config import ServiceNowTarget

TABLE = "/api/now/table/incident"
_FIELDS = "sys_id,number,state"


class ServiceNow:
    def __init__(self, cfg: ServiceNowTarget) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._c = Client(cfg.url, timeout=cfg.timeout, auth=basic_auth(cfg.user, cfg.password.get_secret_value()),
                         ca_file=cfg.ca_file)

    def _ref(self, rec: dict[str, Any]) -> ExternalRef:
        sys_id = str(rec.get("sys_id") or "")
        if not sys_id:
            raise DeliveryError(f"{TABLE}: no sys_id in the answer: {str(rec)[:200]}")
        url = f"{self.cfg.url.rstrip('/')}/nav_to.do?uri=incident.do?sys_id={sys_id}"
        return ExternalRef(sys_id, url, str(rec.get("state") or ""), {"number": rec.get("number")})

    def find(self, msg: Message) -> ExternalRef | None:
        doc = self._c.request("GET", TABLE, query={
            "sysparm_query": f"correlation_id={fingerprint_tag(msg)}^ORDERBYsys_created_on",
            "sysparm_fields": _FIELDS, "sysparm_limit": "1",
        }).json() or {}
        found = doc.get("result") or []
        return self._ref(found[0]) if found else None

    def open(self, msg: Message) -> ExternalRef:
        cfg = self.cfg
        body: dict[str, Any] = {
            "short_description": summary(msg, 160),
            "description": describe_ticket(msg) + "\n\n" + describe_event(msg),
            "correlation_id": fingerprint_tag(msg),
            "correlation_display": "Vigil",
            "impact": cfg.impact.get(msg.severity, "3"),
            "urgency": cfg.urgency.get(msg.severity, "3"),
            "state": cfg.statuses.get(msg.status, "1") if msg.status not in ("resolved", "false_positive", "closed")
            else cfg.statuses.get("open", "1"),
        }
        for key in ("assignment_group", "caller_id", "category"):
            if getattr(cfg, key):
                body[key] = getattr(cfg, key)
        doc = self._c.request("POST", TABLE, json_body=body, query={"sysparm_fields": _FIELDS}).json() or {}
        return self._ref(doc.get("result") or {})

    def _patch(self, ref: ExternalRef, body: dict[str, Any]) -> ExternalRef:
        doc = self._c.request("PATCH", f"{TABLE}/{ref.external_id}", json_body=body,
                              query={"sysparm_fields": _FIELDS}).json() or {}
        rec = doc.get("result") or {}
        new = self._ref(rec) if rec.get("sys_id") else ref
        new.state = str(rec.get("state") or body.get("state") or ref.state)
        return new

    def update(self, ref: ExternalRef, msg: Message) -> ExternalRef:
        body: dict[str, Any] = {"work_notes": describe_event(msg)}
        want = self.cfg.statuses.get(msg.status)
        if want and want != ref.state:
            body["state"] = want
        return self._patch(ref, body)

    def resolve(self, ref: ExternalRef, msg: Message) -> ExternalRef:
        code = self.cfg.close_code
        if msg.status == "false_positive" and self.cfg.false_positive_close_code:
            code = self.cfg.false_positive_close_code
        notes = describe_event(msg)
        resolution = msg.ticket.get("resolution")
        if resolution:
            notes = f"{resolution}\n\n{notes}"
        body = {"work_notes": describe_event(msg), "state": self.cfg.statuses.get(msg.status, "6"),
                "close_code": code, "close_notes": notes}
        return self._patch(ref, body)

    def check(self) -> str:
        self._c.request("GET", TABLE, query={"sysparm_limit": "1", "sysparm_fields": "sys_id"})
        return "incident table is readable"
