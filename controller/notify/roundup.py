"""Roundup trackers through their REST API (``<tracker>/rest/data/...``), basic auth.

Calls made::

    GET   rest/data/issue?title=<tag>&@fields=title,status       find by the tag in the title
    POST  rest/data/msg        {"content", "author"}             the text of each event
    POST  rest/data/issue      {"title", "priority", "status", "messages"}
    GET   rest/data/issue/{id}                                    its ETag and messages
    PATCH rest/data/issue/{id} {"messages": [...], "status"}     If-Match: <ETag>

The title starts with ``[vigil-<hash of our fingerprint>]`` (Roundup searches titles by substring), so
an issue is found again rather than created twice. Roundup refuses cross-site requests: every call
carries ``X-Requested-With: rest`` and ``Referer``/``Origin`` of the tracker's own address, which is
why ``url`` must be the tracker's ``web`` setting exactly. A concurrent edit (412 on If-Match) fails
the attempt; the retry re-reads the issue.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from controller.notify._http import Client, basic_auth
from controller.notify.base import DeliveryError, ExternalRef, Message, describe_event, describe_ticket, fingerprint_tag
from controller.notify.config import RoundupTarget


class Roundup:
    def __init__(self, cfg: RoundupTarget) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.base = cfg.url.rstrip("/")
        parts = urllib.parse.urlsplit(self.base)
        self._c = Client(self.base + "/rest/data", timeout=cfg.timeout,
                         auth=basic_auth(cfg.user, cfg.password.get_secret_value()), ca_file=cfg.ca_file,
                         headers={"X-Requested-With": "rest", "Referer": self.base + "/",
                                  "Origin": f"{parts.scheme}://{parts.netloc}"})

    def _ref(self, issue_id: str, state: str = "") -> ExternalRef:
        return ExternalRef(issue_id, f"{self.base}/issue{issue_id}", state)

    def _tag(self, msg: Message) -> str:
        return f"[{fingerprint_tag(msg)}]"

    def find(self, msg: Message) -> ExternalRef | None:
        tag = self._tag(msg)
        doc = self._c.request("GET", "/issue", query={"title": fingerprint_tag(msg), "@fields": "title",
                                                     "@sort": "id"}).json() or {}
        for item in (doc.get("data") or {}).get("collection") or []:
            if str(item.get("title", "")).startswith(tag):
                return self._ref(str(item["id"]))
        return None

    def _message(self, text: str) -> str:
        doc = self._c.request("POST", "/msg", json_body={"content": text, "author": self.cfg.user}).json() or {}
        msg_id = (doc.get("data") or {}).get("id")
        if not msg_id:
            raise DeliveryError(f"POST rest/data/msg: no id in the answer: {str(doc)[:200]}")
        return str(msg_id)

    def open(self, msg: Message) -> ExternalRef:
        title = " ".join(str(msg.ticket.get("title", "")).split())
        first = self._message(describe_ticket(msg) + "\n\n" + describe_event(msg))
        body: dict[str, Any] = {
            "title": f"{self._tag(msg)} #{msg.ticket.get('id')} {title}"[:250],
            "messages": [first],
        }
        if msg.severity in self.cfg.priorities:
            body["priority"] = self.cfg.priorities[msg.severity]
        status = self.cfg.statuses.get(msg.status if msg.status in ("open", "acknowledged", "in_progress") else "open")
        if status:
            body["status"] = status
        doc = self._c.request("POST", "/issue", json_body=body).json() or {}
        issue_id = (doc.get("data") or {}).get("id")
        if not issue_id:
            raise DeliveryError(f"POST rest/data/issue: no id in the answer: {str(doc)[:200]}")
        return self._ref(str(issue_id), status or "")

    def _add(self, ref: ExternalRef, msg: Message) -> ExternalRef:
        new = self._message(describe_event(msg))
        resp = self._c.request("GET", f"/issue/{ref.external_id}", query={"@fields": "messages"})
        etag = resp.headers.get("ETag") or str(((resp.json() or {}).get("data") or {}).get("@etag") or "")
        attrs = ((resp.json() or {}).get("data") or {}).get("attributes") or {}
        ids = [str(m["id"]) if isinstance(m, dict) else str(m) for m in attrs.get("messages") or []]
        body: dict[str, Any] = {"messages": [*ids, new]}
        status = self.cfg.statuses.get(msg.status)
        if status:
            body["status"] = status
        self._c.request("PATCH", f"/issue/{ref.external_id}", json_body=body, headers={"If-Match": etag})
        return self._ref(ref.external_id, status or ref.state)

    def update(self, ref: ExternalRef, msg: Message) -> ExternalRef:
        return self._add(ref, msg)

    def resolve(self, ref: ExternalRef, msg: Message) -> ExternalRef:
        return self._add(ref, msg)

    def check(self) -> str:
        self._c.request("GET", "/issue", query={"@page_size": "1"})
        return "issue class is readable"
