"""Approved changes over the REST API and the ``vigil change`` CLI (in process, real SQLite database)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.cli import operator as opcli
from controller.core import Controller, ControllerConfig
from controller.domain.users import create_api_key, create_user
from controller.rest.app import create_app
from controller.storage.models import Agent

PASSWORD = "Correct-Horse-42-battery"
USERS = (("viewer", "viewer"), ("analyst", "analyst"), ("admin", "admin"), ("admin2", "admin"))


def rfc(t: dt.datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    ctl = Controller.open(ControllerConfig(data_dir=tmp_path, db_url=db_url))
    keys = {}
    now = dt.datetime.now(dt.UTC)
    with ctl.sessions.begin() as s:
        for name, role in USERS:
            create_user(s, name, role, PASSWORD, "test")
            keys[name] = create_api_key(s, name, "test")
        s.add(Agent(id="agt-1", hostname="web1", enrolled_at=now, cert_serial="1", cert_not_after=now,
                    tags=["linux", "web"], status="online", max_sequence=0))
    with TestClient(create_app(ctl)) as client:
        yield client, keys
    ctl.writer.shutdown()
    ctl.sessions.kw["bind"].dispose()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def body(**kw: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    out = {"assets": ["web1"], "paths": ["/var/www/html/**"], "start": rfc(now + dt.timedelta(minutes=5)),
           "end": rfc(now + dt.timedelta(hours=2)), "reason": "release 4.2 (CR-118)"}
    out.update(kw)
    return out


def test_analyst_requests_another_admin_approves(env) -> None:
    client, keys = env
    r = client.post("/api/v1/changes", json=body(), headers=auth(keys["analyst"]))
    assert r.status_code == 201, r.text
    change = r.json()
    assert change["id"].startswith("chg-") and change["status"] == "requested"
    assert change["requested_by"] == "analyst" and change["assets"] == ["web1"]
    assert change["start"].endswith("Z") and change["effective"] is None

    url = f"/api/v1/changes/{change['id']}/approve"
    assert client.post(url, headers=auth(keys["viewer"])).status_code == 403
    denied = client.post(url, headers=auth(keys["analyst"]))
    assert denied.status_code == 403 and "needs the admin role" in denied.json()["detail"]
    ok = client.post(url, headers=auth(keys["admin"]))
    assert ok.status_code == 200 and ok.json()["status"] == "approved" and ok.json()["approved_by"] == "admin"
    again = client.post(url, headers=auth(keys["admin2"]))
    assert again.status_code == 409 and "only a requested change can be approved" in again.json()["detail"]

    shown = client.get(f"/api/v1/changes/{change['id']}", headers=auth(keys["viewer"])).json()
    assert shown["status"] == "approved" and shown["records"] == [] and shown["record_count"] == 0
    listed = client.get("/api/v1/changes?status=approved", headers=auth(keys["viewer"])).json()
    assert [c["id"] for c in listed] == [change["id"]]
    assert client.get("/api/v1/changes?status=requested", headers=auth(keys["viewer"])).json() == []
    assert client.get("/api/v1/changes?status=nope", headers=auth(keys["viewer"])).status_code == 422

    audit = client.get("/api/v1/audit/verify", headers=auth(keys["viewer"])).json()
    assert audit["ok"]


def test_an_admin_cannot_approve_their_own_request(env) -> None:
    client, keys = env
    cid = client.post("/api/v1/changes", json=body(), headers=auth(keys["admin"])).json()["id"]
    r = client.post(f"/api/v1/changes/{cid}/approve", headers=auth(keys["admin"]))
    assert r.status_code == 403
    assert r.json()["detail"] == (f"admin requested change {cid} and cannot approve it: a change needs a second "
                                  "person; ask another admin")
    assert client.post(f"/api/v1/changes/{cid}/approve", headers=auth(keys["admin2"])).status_code == 200


def test_viewer_cannot_request(env) -> None:
    client, keys = env
    assert client.post("/api/v1/changes", json=body(), headers=auth(keys["viewer"])).status_code == 403
    assert client.post("/api/v1/changes", json=body()).status_code == 401


@pytest.mark.parametrize(
    ("kw", "detail"),
    [
        ({"start": "next monday"}, "start 'next monday' is not an RFC 3339 time"),
        ({"end": "2026-03-02T10:00:00"}, "has no time zone"),
        ({"reason": ""}, "reason is required"),
        ({"assets": ["*"]}, "wildcards are not allowed"),
        ({"paths": ["relative/path"]}, "is not absolute"),
    ],
)
def test_bad_requests_are_422_with_the_reason(env, kw: dict[str, Any], detail: str) -> None:
    client, keys = env
    r = client.post("/api/v1/changes", json=body(**kw), headers=auth(keys["analyst"]))
    assert r.status_code == 422 and detail in r.json()["detail"]


def test_reject_and_cancel(env) -> None:
    client, keys = env
    a = client.post("/api/v1/changes", json=body(), headers=auth(keys["analyst"])).json()["id"]
    assert client.post(f"/api/v1/changes/{a}/reject", json={"reason": "x"},
                       headers=auth(keys["analyst"])).status_code == 403
    assert client.post(f"/api/v1/changes/{a}/reject", json={}, headers=auth(keys["admin"])).status_code == 422
    r = client.post(f"/api/v1/changes/{a}/reject", json={"reason": "no rollback plan"}, headers=auth(keys["admin"]))
    assert r.json()["status"] == "rejected" and r.json()["close_reason"] == "no rollback plan"

    b = client.post("/api/v1/changes", json=body(), headers=auth(keys["admin"])).json()["id"]
    assert client.post(f"/api/v1/changes/{b}/cancel", json={}, headers=auth(keys["analyst"])).status_code == 403
    r = client.post(f"/api/v1/changes/{b}/cancel", json={"reason": "postponed"}, headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.get("/api/v1/changes/chg-nope", headers=auth(keys["viewer"])).status_code == 404
    assert client.post("/api/v1/changes/chg-nope/approve", headers=auth(keys["admin"])).status_code == 404


def test_openapi_lists_the_change_routes(env) -> None:
    client, _ = env
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert {"/api/v1/changes", "/api/v1/changes/{change_id}", "/api/v1/changes/{change_id}/approve"} <= set(paths)


# -- the CLI, its HTTP calls served by the app in process -----------------------------------------------


@pytest.fixture
def vigil(env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    client, keys = env

    def call(self: opcli.Client, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        r = client.request(method, "/api/v1" + path, json=body, headers=auth(self.key))
        if r.status_code >= 400:
            raise opcli.ApiError(f"{method} {path}: HTTP {r.status_code}: {r.json().get('detail')}")
        return r.json()

    monkeypatch.setattr(opcli.Client, "call", call)

    def run(user: str, *args: str) -> tuple[int, str, str]:
        code = opcli.main(["--url", "http://controller", "--api-key", keys[user], *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_cli_create_prints_the_id_and_approve_needs_another_user(vigil) -> None:
    now = dt.datetime.now(dt.UTC)
    code, out, _ = vigil("analyst", "change", "create", "--assets", "web1,tag:web", "--paths",
                         "/var/www/html/**,/etc/nginx/nginx.conf", "--start", rfc(now),
                         "--end", rfc(now + dt.timedelta(hours=1)), "--reason", "release 4.2")
    assert code == 0
    cid = out.strip()
    assert cid.startswith("chg-") and "\n" not in cid

    code, _, err = vigil("analyst", "change", "approve", cid)
    assert code == 1 and "HTTP 403" in err and "needs the admin role" in err
    code, out, _ = vigil("admin", "change", "approve", cid)
    assert code == 0 and out.startswith(f"change {cid} approved by admin: ")

    code, out, _ = vigil("viewer", "change", "show", cid, "--json")
    doc = json.loads(out)
    assert doc["paths"] == ["/var/www/html/**", "/etc/nginx/nginx.conf"] and doc["assets"] == ["web1", "tag:web"]
    code, out, _ = vigil("viewer", "--json", "change", "list", "--status", "approved")
    assert [c["id"] for c in json.loads(out)] == [cid]


def test_cli_same_user_approval_and_bad_time_fail_with_one_line(vigil) -> None:
    now = dt.datetime.now(dt.UTC)
    code, out, _ = vigil("admin", "change", "create", "--json", "--assets", "web1", "--paths", "/var/www/html",
                         "--start", rfc(now), "--end", rfc(now + dt.timedelta(hours=1)), "--reason", "hotfix")
    cid = json.loads(out)["id"]
    code, _, err = vigil("admin", "change", "approve", cid)
    assert code == 1 and "cannot approve it: a change needs a second person" in err and err.count("\n") == 1
    code, _, err = vigil("admin", "change", "create", "--assets", "web1", "--paths", "/var/www/html",
                         "--start", "noon", "--end", rfc(now), "--reason", "x")
    assert code == 1 and "start 'noon' is not an RFC 3339 time" in err
    code, out, _ = vigil("admin", "change", "cancel", cid, "--reason", "not needed")
    assert code == 0 and out.strip() == f"change {cid} is now cancelled"
