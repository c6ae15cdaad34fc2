"""Webhook: each message POSTed as JSON, signed with HMAC-SHA256.

Headers of every request::

    Content-Type: application/json
    X-Vigil-Event: transition                 the event kind
    X-Vigil-Delivery: 1234                    the outbox id: the same on every retry of this message
    X-Vigil-Timestamp: 1767225600             Unix seconds when this attempt was signed
    X-Vigil-Signature: sha256=<hex>           HMAC-SHA256(secret, "<timestamp>.<raw body>")

The timestamp is inside the signed text, so a captured request cannot be replayed later with a fresh
timestamp: a receiver recomputes the HMAC over ``timestamp + "." + body`` as received (before any
JSON parsing), compares it in constant time, rejects a timestamp more than a few minutes old, and
drops a ``X-Vigil-Delivery`` it has already processed (a retry after a lost answer sends it again).
:func:`verify` is a reference implementation. Any 2xx answer counts as delivered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any

from common import __version__
from controller.notify._http import Client
from controller.notify.base import Message
from controller.notify.config import WebhookTarget

SIGNATURE_HEADER = "X-Vigil-Signature"
TIMESTAMP_HEADER = "X-Vigil-Timestamp"


def body_of(msg: Message) -> bytes:
    doc: dict[str, Any] = {
        "id": msg.outbox_id,
        "kind": msg.kind,
        "created_at": msg.created_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "event": msg.event,
        "ticket": msg.ticket,
        "link": msg.link,
        "vigil_version": __version__,
    }
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, body: bytes, timestamp: str, signature: str, tolerance_s: int = 300,
           now: float | None = None) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


class Webhook:
    def __init__(self, cfg: WebhookTarget) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._client = Client(cfg.url, timeout=cfg.timeout, ca_file=cfg.ca_file, headers=dict(cfg.headers))

    def _post(self, msg: Message) -> int:
        body = body_of(msg)
        ts = int(time.time())
        resp = self._client.request("POST", self.cfg.url, data=body, headers={
            "Content-Type": "application/json",
            "X-Vigil-Event": msg.kind,
            "X-Vigil-Delivery": str(msg.outbox_id),
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self.cfg.secret.get_secret_value(), ts, body),
        })
        return resp.status

    def send(self, msg: Message) -> str:
        return f"HTTP {self._post(msg)}"

    def check(self) -> str:
        test = Message(0, "test", dt.datetime.now(dt.UTC), {"id": None, "title": "Vigil test notification"},
                       {"kind": "test", "text": "a test sent by an administrator"})
        return f"test message accepted: HTTP {self._post(test)}"
