"""The web UI in process: the real FastAPI app (REST API + pages) over a real SQLite database, driven by
Starlette's TestClient, with the web UI's clock injected so that idle timeouts need no sleeping."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient

from controller.core import Controller, ControllerConfig
from controller.domain.tickets import RuleRef, apply_outcomes
from controller.domain.users import create_user
from controller.judges.base import Observation
from controller.server import build_app
from controller.storage.models import Agent

PASSWORD = "Correct-Horse-42-battery"


@dataclass
class Clock:
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


@dataclass
class Web:
    ctl: Controller
    app: object
    clock: Clock
    ticket_id: int
    tmp: Path

    def client(self) -> TestClient:
        return TestClient(self.app, follow_redirects=False)  # type: ignore[arg-type]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    ctl = Controller.open(ControllerConfig(data_dir=tmp_path))
    now = dt.datetime.now(dt.UTC)
    with ctl.sessions.begin() as s:
        for name, role in (("viewer", "viewer"), ("analyst", "analyst"), ("admin", "admin"), ("admin2", "admin")):
            create_user(s, name, role, PASSWORD, "test")
        s.add(Agent(id="agt-1", hostname="web1", enrolled_at=now, cert_serial="1", cert_not_after=now,
                    tags=["linux"], status="online", max_sequence=0, last_seen=now, version="0.1.0"))
        s.flush()
        ref = RuleRef("PORTS-ALLOWED", "ports", "high", ("TPEx-CPA 3(10)5",), "tw-securities-linux", 1)
        (ticket,) = apply_outcomes(s, "agt-1", "web1", ref, [Observation(
            "tcp/0.0.0.0:8000", "fail", "tcp/0.0.0.0:8000 (rogue) is not allowed",
            {"proto": "tcp", "address": "0.0.0.0", "port": 8000, "process": "rogue", "owner_known": True})],
            now, None)
        fim = RuleRef("FIM-WEBROOT", "fim", "critical", ("TPEx-CPA 3(8)4(3)",), "tw-securities-linux", 1)
        apply_outcomes(s, "agt-1", "web1", fim, [Observation(
            "/var/www/html/index.html", "fail", "unexpected change: modified /var/www/html/index.html",
            {"path": "/var/www/html/index.html", "kind": "modified",
             "diff": "--- a/index.html\n+++ b/index.html\n@@ -1 +1 @@\n-<h1>Hello</h1>\n+<h1>Hacked</h1>\n"})],
            now, None)
        tid = ticket.id
    app = build_app(ctl)
    clock = Clock()
    app.state.vigil_web.clock = clock
    yield Web(ctl, app, clock, tid, tmp_path)
    ctl.writer.shutdown()
    ctl.sessions.kw["bind"].dispose()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no csrf_token field on the page"
    return m.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD, next_url: str = "/"):
    page = client.get("/login")
    assert page.status_code == 200, page.text
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_of(page.text),
                                       "next": next_url})


def enrol_admin(web: Web, client: TestClient, username: str = "admin") -> str:
    """Sign in as a new admin and confirm the authenticator; returns the TOTP secret."""
    r = login(client, username)
    assert r.status_code == 303 and r.headers["location"].startswith("/login/enrol"), r.text
    page = client.get("/login/enrol")
    assert page.status_code == 200
    secret = re.search(r'data-secret="([A-Z2-7]+)"', page.text)
    assert secret
    code = pyotp.TOTP(secret.group(1)).at(web.clock.now)
    r = client.post("/login/enrol", data={"code": code, "csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return secret.group(1)


def signed_in(web: Web, username: str) -> TestClient:
    client = web.client()
    if username.startswith("admin"):
        enrol_admin(web, client, username)
    else:
        r = login(client, username)
        assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return client
