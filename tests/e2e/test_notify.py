"""A webhook target down for a minute loses nothing: a real controller process, real tickets, a real
HTTP receiver that comes back after 60 seconds."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import AgentProc, AgentStream, Controller, free_port, ports_report, wait_for

SECRET = "e2e-webhook-secret-0123456789"
DOWN_FOR_S = 60.0


class _Receiver(http.server.ThreadingHTTPServer):
    received: list[dict[str, Any]]


class _Hook(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ts, sig = self.headers["X-Vigil-Timestamp"], self.headers["X-Vigil-Signature"]
        expected = "sha256=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        self.server.received.append({"delivery": self.headers["X-Vigil-Delivery"], "valid": sig == expected,
                                     "doc": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def down_hook(tmp_path: Path) -> Iterator[tuple[Controller, int]]:
    port = free_port()
    data = tmp_path / "controller"
    data.mkdir()
    (data / "hook.secret").write_text(SECRET + "\n")
    (data / "notifications.yaml").write_text(f"""\
targets:
  - name: soc-hook
    type: webhook
    url: http://127.0.0.1:{port}/vigil
    secret_file: hook.secret
""")
    ctl = Controller(data)
    ctl.start()
    try:
        yield ctl, port
    finally:
        ctl.stop()


def test_webhook_down_for_a_minute_loses_nothing(down_hook: tuple[Controller, int], tmp_path: Path) -> None:
    ctl, port = down_hook
    agent_dir = tmp_path / "agent"
    AgentProc(agent_dir).enroll(ctl)
    went_down = time.monotonic()
    # Tickets open and are worked while nothing listens on the webhook's port.
    with AgentStream.of(ctl.address, agent_dir) as stream:
        stream.hello()
        msg = ports_report(1, port=2201)
        for p in (2202, 2203):  # one report with three listeners the baseline does not allow
            extra = msg.report.ports.listeners.add()
            extra.CopyFrom(msg.report.ports.listeners[0])
            extra.port = p
        stream.send(msg)
        stream.next("ack")
    wait_for("three tickets", lambda: len(ctl.api("GET", "/tickets?check=ports")) >= 3)
    tickets = ctl.api("GET", "/tickets?check=ports")
    for t in tickets:
        ctl.api("POST", f"/tickets/{t['id']}/transition", {"to": "acknowledged"})
        ctl.api("POST", f"/tickets/{t['id']}/comments", {"text": "looking"})
    failing = wait_for("failed attempts while the target is down", lambda: [
        d for d in ctl.api("GET", "/notifications/deliveries?target=soc-hook") if d["attempts"] >= 1])
    assert all(d["status"] == "pending" and d["last_error"] for d in failing)
    # What an operator sees meanwhile.
    (target,) = json.loads(ctl.vigil("--json", "notifications", "targets").stdout)
    assert target["name"] == "soc-hook" and target["pending"] >= 3 and target["last_attempt"]["ok"] is False
    down = ctl.vigil("notifications", "test", "soc-hook", check=False)
    assert down.returncode == 1 and "soc-hook (webhook) failed" in down.stderr

    time.sleep(max(0.0, DOWN_FOR_S - (time.monotonic() - went_down)))  # the outage itself is what is tested
    receiver = _Receiver(("127.0.0.1", port), _Hook)
    receiver.received = []
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        queued = ctl.api("GET", "/notifications/deliveries?target=soc-hook&limit=1000")
        # The retry interval is capped at one minute, so everything arrives within about that after return.
        wait_for("every queued notification delivered", lambda: all(
            d["status"] == "delivered" for d in ctl.api("GET", "/notifications/deliveries?target=soc-hook&limit=1000")),
            timeout=90)
    finally:
        receiver.shutdown()
        receiver.server_close()

    got = receiver.received
    assert all(r["valid"] for r in got), "every body carries a valid HMAC signature"
    ids = [r["delivery"] for r in got]
    assert sorted(set(ids), key=int) == sorted({str(d["outbox_id"]) for d in queued}, key=int)
    assert len(ids) == len(set(ids)), "nothing delivered twice"
    for t in tickets:
        kinds = [r["doc"]["event"]["kind"] for r in got if r["doc"]["ticket"]["id"] == t["id"]]
        assert kinds == ["opened", "transition", "comment"], f"ticket {t['id']} events in order"
    (target,) = json.loads(ctl.vigil("--json", "notifications", "targets").stdout)
    assert target["pending"] == 0 and target["last_attempt"]["ok"] is True
    final = ctl.api("GET", "/notifications/deliveries?target=soc-hook&limit=1000")
    assert len(final) == 9 and all(d["status"] == "delivered" for d in final)
    assert max(d["attempts"] for d in final) >= 3, "the opening messages were retried through the outage"
