"""Jira (Cloud and Server/Data Center) through REST API v2.

Calls made::

    GET  /rest/api/2/search/jql?jql=...        (Cloud; Server/DC: /rest/api/2/search)  find by label
    POST /rest/api/2/issue                     create: project, summary, description, issuetype, labels
    GET  /rest/api/2/issue/{key}?fields=status the current status, when not known
    POST /rest/api/2/issue/{key}/comment       one comment per event
    GET  /rest/api/2/issue/{key}/transitions   the transitions available from the current status
    POST /rest/api/2/issue/{key}/transitions   {"transition": {"id": ...}} (+ resolution when configured)

Our fingerprint is kept on the issue as the label ``vigil-<hash>`` (labels cannot hold spaces), so an
issue is found again instead of created twice, e.g. after the controller lost its own record. The
status to reach is configured by name (``statuses:``); the transition leading there is looked up each
time, since workflows differ. A status the workflow cannot reach from where the issue is is noted in
the attempt record and otherwise left alone: the comment says what happened on our side.
"""

from __future__ import annotations

import logging
import urllib.parse
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
from controller.notify.config import JiraTarget

log = logging.getLogger(__name__)


class Jira:
    def __init__(self, cfg: JiraTarget) -> None:
        self.name = cfg.name
        self.cfg = cfg
        token = cfg.token.get_secret_value()
        auth = basic_auth(cfg.user, token) if cfg.user else f"Bearer {token}"
        self._c = Client(cfg.url, timeout=cfg.timeout, auth=auth, ca_file=cfg.ca_file)

    def _browse(self, key: str) -> str:
        return f"{self.cfg.url.rstrip('/')}/browse/{key}"

    @staticmethod
    def _key(key: str) -> str:
        return urllib.parse.quote(key, safe="")

    def find(self, msg: Message) -> ExternalRef | None:
        label = fingerprint_tag(msg)
        jql = f'project = "{self.cfg.project}" AND labels = "{label}" ORDER BY created ASC'
        path = "/rest/api/2/search/jql" if self.cfg.deployment == "cloud" else "/rest/api/2/search"
        doc = self._c.request("GET", path, query={"jql": jql, "fields": "status", "maxResults": "1"}).json() or {}
        issues = doc.get("issues") or []
        if not issues:
            return None
        issue = issues[0]
        key = str(issue.get("key") or issue.get("id"))
        return ExternalRef(key, self._browse(key), _status(issue))

    def open(self, msg: Message) -> ExternalRef:
        fields: dict[str, Any] = {
            "project": {"key": self.cfg.project},
            "summary": summary(msg, 255),
            "description": describe_ticket(msg) + "\n\n" + describe_event(msg),
            "issuetype": {"name": self.cfg.issue_type},
            "labels": [*self.cfg.labels, fingerprint_tag(msg)],
        }
        if self.cfg.priorities and msg.severity in self.cfg.priorities:
            fields["priority"] = {"name": self.cfg.priorities[msg.severity]}
        doc = self._c.request("POST", "/rest/api/2/issue", json_body={"fields": fields}).json() or {}
        key = doc.get("key")
        if not key:
            raise DeliveryError(f"POST /rest/api/2/issue: no issue key in the answer: {str(doc)[:200]}")
        ref = ExternalRef(str(key), self._browse(str(key)))
        try:
            return self._move(ref, msg, resolving=False)
        except DeliveryError as exc:
            # The issue exists now: report the create as done (so it is recorded and never repeated, even
            # where search is only eventually consistent); the next event moves it.
            ref.extra["note"] = f"created, but its status could not be set yet: {exc}"
            return ref

    def update(self, ref: ExternalRef, msg: Message) -> ExternalRef:
        self._comment(ref, msg)
        return self._move(ref, msg, resolving=False)

    def resolve(self, ref: ExternalRef, msg: Message) -> ExternalRef:
        self._comment(ref, msg)
        return self._move(ref, msg, resolving=True)

    def check(self) -> str:
        doc = self._c.request("GET", f"/rest/api/2/project/{self._key(self.cfg.project)}").json() or {}
        return f"project {doc.get('key', self.cfg.project)} ({doc.get('name', '?')}) is readable"

    # -- internals ---------------------------------------------------------------------------------
    def _comment(self, ref: ExternalRef, msg: Message) -> None:
        self._c.request("POST", f"/rest/api/2/issue/{self._key(ref.external_id)}/comment",
                        json_body={"body": describe_event(msg)})

    def _move(self, ref: ExternalRef, msg: Message, resolving: bool) -> ExternalRef:
        want = self.cfg.statuses.get(msg.status)
        if not want:
            return ref
        key = self._key(ref.external_id)
        if not ref.state:
            doc = self._c.request("GET", f"/rest/api/2/issue/{key}", query={"fields": "status"}).json() or {}
            ref.state = _status(doc)
        if ref.state.casefold() == want.casefold():
            return ref
        doc = self._c.request("GET", f"/rest/api/2/issue/{key}/transitions").json() or {}
        for tr in doc.get("transitions") or []:
            to = str((tr.get("to") or {}).get("name") or "")
            if to.casefold() == want.casefold():
                body: dict[str, Any] = {"transition": {"id": str(tr.get("id"))}}
                if resolving and self.cfg.resolution:
                    body["fields"] = {"resolution": {"name": self.cfg.resolution}}
                self._c.request("POST", f"/rest/api/2/issue/{key}/transitions", json_body=body)
                ref.state = to
                return ref
        names = ", ".join(str((t.get("to") or {}).get("name")) for t in doc.get("transitions") or []) or "none"
        ref.extra["note"] = f"no transition from {ref.state!r} to {want!r} (available: {names})"
        log.warning("jira target %s: %s %s", self.name, ref.external_id, ref.extra["note"])
        return ref


def _status(issue: dict[str, Any]) -> str:
    return str(((issue.get("fields") or {}).get("status") or {}).get("name") or "")
