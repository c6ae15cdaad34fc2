"""Bounds and account controls over the REST API: every integer a route takes is range-checked (422, never
500), the users and API keys resource (admin only, audited), and refused keys of locked or disabled users."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from controller.core import Controller, ControllerConfig
from controller.domain import users
from controller.domain.tickets import RuleRef, apply_outcomes
from controller.domain.users import create_api_key, create_user
from controller.judges.base import Observation
from controller.rest.app import create_app
from controller.storage.models import Agent, AuditEntry, User

PASSWORD = "Correct-Horse-42-battery"
OUT_OF_RANGE = (2**63, 2**64, -1)


def int_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(method, full path, parameter name, "path" or "query") for every integer parameter of every route of an
    app, its included routers' routes too: a new route is covered without naming it here."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:  # FastAPI keeps an included router as one entry
            context = getattr(route, "include_context", None)
            yield from int_routes(included.routes, prefix + str(getattr(context, "prefix", "") or ""))
            continue
        if not isinstance(route, APIRoute):
            continue
        path = route.path if route.path.startswith(prefix) else prefix + route.path
        for kind, params in (("path", route.dependant.path_params), ("query", route.dependant.query_params)):
            for param in params:
                if param.field_info.annotation in (int, int | None):
                    for method in sorted(route.methods):
                        yield method, path, param.name, kind


def fill(path: str, value: str = "x") -> str:
    return re.sub(r"\{\w+\}", value, path)


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[tuple[Controller, TestClient, dict[str, str]]]:
    ctl = Controller.open(ControllerConfig(data_dir=tmp_path, db_url=db_url))
    keys = {}
    now = dt.datetime.now(dt.UTC)
    with ctl.sessions.begin() as s:
        for name, role in (("viewer", "viewer"), ("analyst", "analyst"), ("admin", "admin")):
            create_user(s, name, role, PASSWORD, "test")
            keys[name] = create_api_key(s, name, "test")
        s.add(Agent(id="agt-1", hostname="web1", enrolled_at=now, cert_serial="1", cert_not_after=now,
                    tags=["linux"], status="online", max_sequence=0))
        s.flush()
        ref = RuleRef("PORTS-ALLOWED", "ports", "high", ("TPEx-CPA 3(10)5",), "tw-securities-linux", 1)
        apply_outcomes(s, "agt-1", "web1", ref, [Observation("tcp/0.0.0.0:8000", "fail", "bad", {})], now, None)
    with TestClient(create_app(ctl), raise_server_exceptions=False) as client:
        yield ctl, client, keys
    ctl.writer.shutdown()
    ctl.sessions.kw["bind"].dispose()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _actions(ctl: Controller, action: str) -> list[AuditEntry]:
    with ctl.sessions() as s:
        return list(s.execute(select(AuditEntry).where(AuditEntry.action == action)
                              .order_by(AuditEntry.seq)).scalars())


# -- integers in paths and queries ----------------------------------------------------------------------


def test_the_walk_finds_the_known_integer_parameters(env: tuple[Controller, TestClient, dict[str, str]]) -> None:
    _, client, _ = env
    found = {(m, p, n) for m, p, n, _ in int_routes(client.app.routes)}  # type: ignore[attr-defined]
    assert {("GET", "/api/v1/tickets/{ticket_id}", "ticket_id"), ("GET", "/api/v1/tickets", "limit"),
            ("GET", "/api/v1/notifications/deliveries", "ticket"),
            ("POST", "/api/v1/notifications/deliveries/{outbox_id}/{target}/retry", "outbox_id")} <= found


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_every_integer_parameter_out_of_range_is_422(env: tuple[Controller, TestClient, dict[str, str]],
                                                      value: int) -> None:
    _, client, keys = env
    walked = list(int_routes(client.app.routes))  # type: ignore[attr-defined]
    assert walked
    for method, path, name, kind in walked:
        if kind == "path":
            url, params = fill(path.replace("{" + name + "}", str(value))), {}
        else:
            url, params = fill(path, "1"), {name: str(value)}
        r = client.request(method, url, params=params, json={}, headers=auth(keys["admin"]))
        assert r.status_code == 422, (method, url, params, r.status_code, r.text[:200])
        detail = r.json()["detail"]
        assert any(issue["loc"][-1] == name and issue["msg"].startswith(f"{kind}.{name}:") for issue in detail), \
            (method, url, detail)


# -- users and API keys ---------------------------------------------------------------------------------


def test_users_and_keys_are_listed_for_admins_only(env: tuple[Controller, TestClient, dict[str, str]]) -> None:
    _, client, keys = env
    for who in ("viewer", "analyst"):
        for url in ("/api/v1/users", "/api/v1/apikeys"):
            r = client.get(url, headers=auth(keys[who]))
            assert r.status_code == 403 and "admin role" in r.json()["detail"], (who, url)
        assert client.post("/api/v1/users/viewer/disable", headers=auth(keys[who])).status_code == 403
    listed = client.get("/api/v1/users", headers=auth(keys["admin"])).json()
    assert [(u["username"], u["role"], u["locked"], u["disabled"]) for u in listed] == [
        ("admin", "admin", False, False), ("analyst", "analyst", False, False), ("viewer", "viewer", False, False)]
    got = client.get("/api/v1/apikeys", params={"username": "viewer"}, headers=auth(keys["admin"])).json()
    assert [(k["id"], k["username"], k["revoked_at"]) for k in got] == [(keys["viewer"].split("_")[1], "viewer", None)]
    assert all(keys["viewer"].split("_", 2)[2] not in str(k) for k in got)
    r = client.get("/api/v1/apikeys", params={"username": "ghost"}, headers=auth(keys["admin"]))
    assert r.status_code == 404 and r.json() == {"detail": "no user 'ghost'"}


def test_revoking_a_key_refuses_it_at_once_and_is_audited(env: tuple[Controller, TestClient, dict[str, str]]
                                                          ) -> None:
    ctl, client, keys = env
    key_id = keys["viewer"].split("_")[1]
    assert client.get("/api/v1/tickets", headers=auth(keys["viewer"])).status_code == 200
    r = client.post(f"/api/v1/apikeys/{key_id}/revoke", headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["id"] == key_id and r.json()["revoked_at"]
    r = client.get("/api/v1/tickets", headers=auth(keys["viewer"]))
    assert r.status_code == 401 and r.json() == {"detail": "invalid or revoked API key"}
    assert [(e.actor, e.object_id) for e in _actions(ctl, "apikey.revoke")] == [("admin", key_id)]
    assert [(e.object_id, e.details["reason"]) for e in _actions(ctl, "apikey.rejected")] == [(key_id, "revoked")]
    assert client.post("/api/v1/apikeys/nope/revoke", headers=auth(keys["admin"])).status_code == 404
    assert client.post("/api/v1/apikeys/no_pe/revoke", headers=auth(keys["admin"])).status_code == 422


def test_a_disabled_or_locked_users_key_gets_the_answer_of_an_invalid_one(
        env: tuple[Controller, TestClient, dict[str, str]]) -> None:
    ctl, client, keys = env
    invalid = client.get("/api/v1/tickets", headers=auth("vk_000000000000_nothing"))
    assert invalid.status_code == 401

    r = client.post("/api/v1/users/analyst/disable", headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["disabled"] is True
    refused = client.get("/api/v1/tickets", headers=auth(keys["analyst"]))
    assert (refused.status_code, refused.json(), refused.headers["www-authenticate"]) == (
        invalid.status_code, invalid.json(), invalid.headers["www-authenticate"])
    assert client.post("/api/v1/users/analyst/enable", headers=auth(keys["admin"])).json()["disabled"] is False
    assert client.get("/api/v1/tickets", headers=auth(keys["analyst"])).status_code == 200

    with ctl.sessions.begin() as s:
        user = s.get(User, "analyst")
        assert user is not None
        users.lock(s, user, "test")
    refused = client.get("/api/v1/tickets", headers=auth(keys["analyst"]))
    assert (refused.status_code, refused.json()) == (invalid.status_code, invalid.json())
    r = client.post("/api/v1/users/analyst/unlock", headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["locked"] is False
    assert client.get("/api/v1/tickets", headers=auth(keys["analyst"])).status_code == 200

    reasons = [e.details["reason"] for e in _actions(ctl, "apikey.rejected")]
    assert reasons == ["user disabled", "user locked"]
    assert [(e.actor, e.object_id) for e in _actions(ctl, "user.disable") + _actions(ctl, "user.enable")
            + _actions(ctl, "user.unlock")] == [("admin", "analyst")] * 3


def test_the_last_enabled_admin_cannot_be_disabled(env: tuple[Controller, TestClient, dict[str, str]]) -> None:
    _, client, keys = env
    r = client.post("/api/v1/users/admin/disable", headers=auth(keys["admin"]))
    assert r.status_code == 409 and "last enabled admin" in r.json()["detail"]
    assert client.post("/api/v1/users/ghost/disable", headers=auth(keys["admin"])).status_code == 404
    assert client.post("/api/v1/users/a%20b/disable", headers=auth(keys["admin"])).status_code == 422
    assert client.get("/api/v1/tickets", headers=auth(keys["admin"])).status_code == 200


def test_the_operator_cli_lists_disables_and_revokes(env: tuple[Controller, TestClient, dict[str, str]],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli import operator as opcli

    ctl, client, keys = env

    def call(self: opcli.Client, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        r = client.request(method, "/api/v1" + path, json=body, headers=auth(self.key))
        if r.status_code >= 400:
            raise opcli.ApiError(f"{method} {path}: HTTP {r.status_code}: {r.json().get('detail')}")
        return r.json()

    monkeypatch.setattr(opcli.Client, "call", call)

    def vigil(*args: str) -> tuple[int, str, str]:
        code = opcli.main(["--url", "http://controller", "--api-key", keys["admin"], *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = vigil("users", "list")
    assert code == 0 and out.splitlines()[0].split() == ["USERNAME", "ROLE", "LOCKED", "DISABLED", "LAST_LOGIN_AT"]
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == ["admin", "analyst", "viewer"]
    assert vigil("users", "disable", "viewer")[:2] == (0, "viewer: disabled, not locked\n")
    assert vigil("users", "enable", "viewer")[:2] == (0, "viewer: enabled, not locked\n")
    code, _, err = vigil("users", "disable", "admin")
    assert code == 1 and "last enabled admin" in err and len(err.strip().splitlines()) == 1
    key_id = keys["viewer"].split("_")[1]
    code, out, _ = vigil("apikeys", "list", "--username", "viewer")
    assert code == 0 and key_id in out and keys["viewer"].split("_", 2)[2] not in out
    assert vigil("apikeys", "revoke", key_id)[:2] == (0, f"revoked API key {key_id} of viewer\n")
    assert client.get("/api/v1/tickets", headers=auth(keys["viewer"])).status_code == 401
    with ctl.sessions() as s:
        assert s.execute(select(AuditEntry).where(AuditEntry.action == "apikey.revoke")).scalar_one().actor == "admin"
