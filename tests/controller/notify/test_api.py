"""The REST view of the outbox and the admin test button (controller.rest.notifications.register_routes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.notify.config import activate, deactivate, parse_config
from controller.notify.worker import engine_of
from controller.rest.notifications import register_routes
from controller.storage.models import AuditEntry, User
from tests.controller.notify._servers import WebhookReceiver
from tests.controller.notify.conftest import DbHost, open_ticket

SECRET = "api-hook-secret"


def need(role: str) -> Callable[[Request], User]:
    def dep(request: Request) -> User:
        given = request.headers.get("x-test-role", "viewer")
        order = ["viewer", "analyst", "admin"]
        if order.index(given) < order.index(role):
            raise HTTPException(403, f"needs {role}")
        return User(username=f"test-{given}", role=given)

    return dep


def test_deliveries_view_test_button_and_retry(sessions: sessionmaker[Session], host: DbHost, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = WebhookReceiver(SECRET)
    receiver.up()
    monkeypatch.setenv("API_HOOK_SECRET", SECRET)
    cfg = parse_config(f"""\
targets:
  - {{name: hook, type: webhook, url: "{receiver.url}", secret: "${{API_HOOK_SECRET}}"}}
""", "t.yaml")
    engine = engine_of(sessions)
    activate(engine, cfg)
    try:
        open_ticket(sessions, "tcp/0.0.0.0:8080")
        ctl = SimpleNamespace(sessions=sessions, db=host.db, config=SimpleNamespace(data_dir=tmp_path))
        app = FastAPI()
        router = APIRouter(prefix="/api/v1")
        register_routes(router, ctl, need)  # type: ignore[arg-type]
        app.include_router(router)
        with TestClient(app) as client:
            rows = client.get("/api/v1/notifications/deliveries", params={"status": "pending"}).json()
            assert [(r["target"], r["kind"], r["status"], r["stuck"]) for r in rows] == [
                ("hook", "opened", "pending", False)]
            assert client.get("/api/v1/notifications/deliveries", params={"status": "nope"}).status_code == 422
            [t] = client.get("/api/v1/notifications/targets").json()
            assert t["name"] == "hook" and t["pending"] == 1 and t["last_attempt"] is None

            assert client.post("/api/v1/notifications/test", json={"target": "hook"}).status_code == 403
            res = client.post("/api/v1/notifications/test", json={"target": "hook"},
                              headers={"x-test-role": "admin"}).json()
            assert res["ok"] is True and "HTTP 204" in res["detail"]
            assert receiver.snapshot()[0]["event"] == "test"
            assert client.post("/api/v1/notifications/test", json={"target": "nope"},
                               headers={"x-test-role": "admin"}).status_code == 404

            outbox_id = rows[0]["outbox_id"]
            r = client.post(f"/api/v1/notifications/deliveries/{outbox_id}/hook/retry",
                            headers={"x-test-role": "admin"})
            assert r.status_code == 200
        with sessions() as s:
            actions = [a for a in s.scalars(select(AuditEntry.action))]
            assert "notify.test" in actions and "notify.retry" in actions
    finally:
        deactivate(engine)
        receiver.down()
