"""Users and API keys (admin only): list them, disable and enable a user, lift a sign-in lock, revoke a key.
Creating users and keys stays with ``vigil-controller user create`` / ``apikey create`` on the controller's host,
where a password can be typed and a key's secret shown once. Every action is audited with the caller."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from controller.domain import users
from controller.rest.common import AUTH, Admin, Ctl, Db, errors

router = APIRouter(tags=["users"])

Username = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]
KeyId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$",
                            description="the id `apikey list` shows (the part after vk_)")]


class UserOut(BaseModel):
    username: str
    role: str = Field(description="viewer, analyst or admin")
    locked: bool = Field(description="locked for everyone after too many failed sign-ins; unlock lifts it")
    disabled: bool = Field(description="cannot sign in and its API keys are refused")
    created_at: str
    locked_at: str | None
    last_login_at: str | None
    totp_enabled: bool


class ApiKeyOut(BaseModel):
    """A key without its secret (which is never stored)."""

    id: str
    username: str
    created_at: str
    revoked_at: str | None


@router.get("/users", response_model=list[UserOut], responses=errors(*AUTH))
def list_users(s: Db, _: Admin) -> list[dict[str, Any]]:
    return [users.user_json(u) for u in users.list_users(s)]


@router.post("/users/{username}/disable", response_model=UserOut, responses=errors(*AUTH, 404, 409))
def disable_user(username: Username, user: Admin, ctl: Ctl) -> dict[str, Any]:
    """Ends the user's web sessions and refuses their API keys; the last enabled admin cannot be disabled (409)."""
    with ctl.sessions.begin() as s:
        return users.user_json(users.disable(s, username, user.username))


@router.post("/users/{username}/enable", response_model=UserOut, responses=errors(*AUTH, 404))
def enable_user(username: Username, user: Admin, ctl: Ctl) -> dict[str, Any]:
    with ctl.sessions.begin() as s:
        return users.user_json(users.enable(s, username, user.username))


@router.post("/users/{username}/unlock", response_model=UserOut, responses=errors(*AUTH, 404))
def unlock_user(username: Username, user: Admin, ctl: Ctl) -> dict[str, Any]:
    """Lifts the lock for everyone and every per-source sign-in lock of the account."""
    with ctl.sessions.begin() as s:
        return users.user_json(users.unlock(s, username, user.username))


@router.get("/apikeys", response_model=list[ApiKeyOut], responses=errors(*AUTH, 404))
def list_api_keys(s: Db, _: Admin,
                  username: Annotated[str | None, Query(max_length=128, description="only this user's keys")] = None
                  ) -> list[dict[str, Any]]:
    return [users.api_key_json(k) for k in users.list_api_keys(s, username)]


@router.post("/apikeys/{key_id}/revoke", response_model=ApiKeyOut, responses=errors(*AUTH, 404))
def revoke_api_key(key_id: KeyId, user: Admin, ctl: Ctl) -> dict[str, Any]:
    """Revoking a revoked key changes nothing."""
    with ctl.sessions.begin() as s:
        return users.api_key_json(users.revoke_api_key(s, key_id, user.username))
