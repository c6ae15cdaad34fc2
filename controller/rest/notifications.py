"""The REST view of the outbox: where each notification stands, and a test button per target.

``GET  /api/v1/notifications/deliveries?status=pending&target=NAME&ticket=ID&stuck=true&limit=N`` (viewer)
``GET  /api/v1/notifications/targets`` (viewer): per target, what is pending, stuck, and the last error
``POST /api/v1/notifications/test`` ``{"target": NAME}`` (admin): a harmless message or read to one target
``POST /api/v1/notifications/deliveries/{outbox_id}/{target}/retry`` (admin): retry now, not at backoff

Register with :func:`register_routes` from ``controller.rest.app.create_app`` (which passes its ``need``).
No ``from __future__ import annotations`` here: FastAPI must evaluate the ``Annotated`` dependencies, which
are local to :func:`register_routes`.
"""

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel

from controller.notify.config import NotifyConfig, active, default_path, load_config
from controller.rest.common import AUTH, Id, IdQuery, Limit, errors

if TYPE_CHECKING:
    from fastapi import APIRouter

    from controller.core import Controller

STATUSES = ("pending", "delivered", "skipped")


class DeliveryOut(BaseModel):
    outbox_id: int
    target: str
    status: str
    attempts: int
    next_attempt_at: str | None
    last_attempt_at: str | None
    delivered_at: str | None
    last_error: str | None
    kind: str
    ticket_id: int | None
    created_at: str | None
    stuck: bool
    target_configured: bool


class AttemptOut(BaseModel):
    at: str | None
    ok: bool
    detail: str | None
    duration_ms: int | float | None


class LastAttempt(BaseModel):
    at: str | None
    ok: bool
    detail: str | None
    outbox_id: int


class TargetOut(BaseModel):
    name: str
    type: str | None
    configured: bool
    enabled: bool
    pending: int
    stuck: int
    oldest_pending: str | None
    last_attempt: LastAttempt | None


class TestIn(BaseModel):
    target: str


class TestOut(BaseModel):
    target: str
    type: str
    ok: bool
    detail: str


class RetryOut(BaseModel):
    outbox_id: int
    target: str
    status: str


def register_routes(router: "APIRouter", ctl: "Controller", need: Callable[[str], Callable[..., Any]]) -> None:
    """Add the notification routes to ``router`` (the /api/v1 router of controller.rest.app)."""
    from fastapi import Depends, HTTPException, Query
    from sqlalchemy import func, select

    from controller.domain import audit
    from controller.notify.base import DeliveryError
    from controller.notify.outbox import ANY_TARGET
    from controller.notify.targets import build
    from controller.notify.worker import engine_of
    from controller.storage.models import Delivery, DeliveryAttempt, OutboxMessage, User
    from controller.storage.serialize import rfc3339
    engine = engine_of(ctl.sessions)

    def config() -> NotifyConfig:
        act = active(engine)
        if act is not None:
            return act.config
        try:
            return load_config(default_path(ctl.config.data_dir), required=False)
        except ValueError as exc:  # a broken notifications.yaml: the operator must fix it, the request is fine
            raise HTTPException(503, f"the notification configuration is invalid: {exc}") from exc

    def stuck(created: dt.datetime, status: str, cfg: NotifyConfig, now: dt.datetime) -> bool:
        return status == "pending" and (now - created).total_seconds() >= cfg.retry.stuck_after


    @router.get("/notifications/deliveries", response_model=list[DeliveryOut], responses=errors(*AUTH, 503))
    def list_deliveries(
        _: Annotated[User, Depends(need("viewer"))],
        status: Annotated[Literal["pending", "delivered", "skipped"] | None, Query()] = None,
        target: str | None = None,
        ticket: IdQuery = None,
        stuck_only: Annotated[bool, Query(alias="stuck")] = False,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        cfg = config()
        now = dt.datetime.now(dt.UTC)
        q = select(Delivery, OutboxMessage).join(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
        if status:
            q = q.where(Delivery.status == status)
        if target:
            q = q.where(Delivery.target == target)
        if ticket is not None:
            q = q.where(OutboxMessage.ticket_id == ticket)
        if stuck_only:
            q = q.where(Delivery.status == "pending",
                        OutboxMessage.created_at <= now - dt.timedelta(seconds=cfg.retry.stuck_after))
        q = q.order_by(Delivery.outbox_id.desc(), Delivery.target).limit(limit)
        names = {t.name for t in cfg.targets}
        out = []
        with ctl.sessions() as s:
            for d, m in s.execute(q):
                out.append({
                    "outbox_id": d.outbox_id, "target": d.target, "status": d.status, "attempts": d.attempts,
                    "next_attempt_at": rfc3339(d.next_attempt_at) if d.status == "pending" else None,
                    "last_attempt_at": rfc3339(d.last_attempt_at), "delivered_at": rfc3339(d.delivered_at),
                    "last_error": d.last_error, "kind": m.kind, "ticket_id": m.ticket_id,
                    "created_at": rfc3339(m.created_at), "stuck": stuck(m.created_at, d.status, cfg, now),
                    "target_configured": d.target in names or d.target == ANY_TARGET,
                })
        return out

    @router.get("/notifications/deliveries/{outbox_id}/{target}/attempts", response_model=list[AttemptOut],
                responses=errors(*AUTH))
    def list_attempts(outbox_id: Id, target: str,
                      _: Annotated[User, Depends(need("viewer"))]) -> list[dict[str, Any]]:
        with ctl.sessions() as s:
            rows = s.scalars(select(DeliveryAttempt).where(DeliveryAttempt.outbox_id == outbox_id,
                                                           DeliveryAttempt.target == target)
                             .order_by(DeliveryAttempt.id)).all()
            return [{"at": rfc3339(a.at), "ok": a.ok, "detail": a.detail, "duration_ms": a.duration_ms} for a in rows]

    @router.get("/notifications/targets", response_model=list[TargetOut], responses=errors(*AUTH, 503))
    def list_targets(_: Annotated[User, Depends(need("viewer"))]) -> list[dict[str, Any]]:
        cfg = config()
        now = dt.datetime.now(dt.UTC)
        cutoff = now - dt.timedelta(seconds=cfg.retry.stuck_after)
        with ctl.sessions() as s:
            pending = dict(s.execute(select(Delivery.target, func.count()).where(Delivery.status == "pending")
                                     .group_by(Delivery.target)).all())
            stuck_n = dict(s.execute(
                select(Delivery.target, func.count()).join(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
                .where(Delivery.status == "pending", OutboxMessage.created_at <= cutoff).group_by(Delivery.target)
            ).all())
            oldest = dict(s.execute(
                select(Delivery.target, func.min(OutboxMessage.created_at))
                .join(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
                .where(Delivery.status == "pending").group_by(Delivery.target)).all())
            out = []
            names = [t.name for t in cfg.targets] + sorted(set(pending) - {t.name for t in cfg.targets})
            for name in names:
                t = cfg.target(name)
                last = s.scalars(select(DeliveryAttempt).where(DeliveryAttempt.target == name)
                                 .order_by(DeliveryAttempt.id.desc()).limit(1)).first()
                oldest_at = oldest.get(name)
                out.append({
                    "name": name, "type": t.type if t else None, "configured": t is not None,
                    "enabled": bool(t and t.enabled), "pending": pending.get(name, 0), "stuck": stuck_n.get(name, 0),
                    "oldest_pending": rfc3339(oldest_at) if isinstance(oldest_at, dt.datetime) else oldest_at,
                    "last_attempt": None if last is None else {
                        "at": rfc3339(last.at), "ok": last.ok, "detail": last.detail, "outbox_id": last.outbox_id},
                })
            return out

    @router.post("/notifications/test", response_model=TestOut, responses=errors(*AUTH, 400, 404, 503))
    async def test_target(body: TestIn, user: Annotated[User, Depends(need("admin"))]) -> dict[str, Any]:
        name = body.target
        t = config().target(name)
        if t is None:
            raise HTTPException(404, f"no notification target {name!r} in notifications.yaml")
        sink = build(t)
        try:
            detail = await asyncio.to_thread(sink.check)
            ok = True
        except DeliveryError as exc:
            detail, ok = str(exc), False

        def record() -> None:
            with ctl.sessions.begin() as s:
                audit.record(s, user.username, "notify.test", "notification_target", name,
                             {"ok": ok, "detail": detail[:500]})

        await ctl.db(record)
        return {"target": name, "type": t.type, "ok": ok, "detail": detail}

    @router.post("/notifications/deliveries/{outbox_id}/{target}/retry", response_model=RetryOut,
                 responses=errors(*AUTH, 404, 409))
    async def retry_now(outbox_id: Id, target: str,
                        user: Annotated[User, Depends(need("admin"))]) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            with ctl.sessions.begin() as s:
                d = s.get(Delivery, (outbox_id, target))
                if d is None:
                    raise HTTPException(404, f"no delivery of outbox message {outbox_id} to {target!r}")
                if d.status != "pending":
                    raise HTTPException(409, f"that delivery is {d.status}, not pending")
                d.next_attempt_at = dt.datetime.now(dt.UTC)
                audit.record(s, user.username, "notify.retry", "delivery", f"{outbox_id}/{target}",
                             {"attempts": d.attempts})
                return {"outbox_id": outbox_id, "target": target, "status": d.status}

        out = await ctl.db(work)
        act = active(engine)
        if act is not None and act.wake is not None:
            act.wake()
        return out
