"""Fixtures for the notification tests: a migrated database, a stand-in for the controller's writer
thread, and helpers that open and work tickets through the real ticket code (so the outbox is filled
exactly as in production)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.domain import workflow
from controller.domain.tickets import RuleRef, apply_outcomes
from controller.judges.base import Observation
from controller.storage.models import Delivery, DeliveryAttempt, User
from tests.controller._db import migrated_sessions

T = TypeVar("T")
ASSET = "agt-0123456789abcdef"
RULE = RuleRef(rule_id="PORTS-ALLOWED", check_id="ports", severity="high", refs=("TPEx-CPA 3(10)5",),
               baseline="tw-securities-web", baseline_version=3)
ALICE = User(username="alice", role="analyst")


class DbHost:
    """What NotifyWorker needs of the Controller: sessions and one writer thread."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.writer = ThreadPoolExecutor(1, "test-writer")

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.writer, fn, *args)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        yield factory


@pytest.fixture
def host(sessions: sessionmaker[Session]) -> Iterator[DbHost]:
    h = DbHost(sessions)
    yield h
    h.writer.shutdown(wait=True)


def open_ticket(sessions: sessionmaker[Session], subject: str, severity: str = "high",
                evidence: dict[str, Any] | None = None) -> int:
    rule = dataclasses.replace(RULE, severity=severity)
    with sessions.begin() as s:
        [t] = apply_outcomes(s, ASSET, "web-01", rule,
                             [Observation(subject, "fail", f"{subject} (redis) is not allowed",
                                          evidence or {"port": 6379})],
                             dt.datetime.now(dt.UTC), None, complete=False)
        return t.id


def transition(sessions: sessionmaker[Session], ticket_id: int, to: str, reason: str = "") -> None:
    with sessions.begin() as s:
        workflow.transition(s, ticket_id, to, ALICE, reason)


def comment(sessions: sessionmaker[Session], ticket_id: int, text: str) -> None:
    with sessions.begin() as s:
        workflow.comment(s, ticket_id, text, ALICE)


def deliveries(sessions: sessionmaker[Session], target: str | None = None) -> list[Delivery]:
    with sessions() as s:
        q = select(Delivery).order_by(Delivery.outbox_id, Delivery.target)
        if target:
            q = q.where(Delivery.target == target)
        return list(s.scalars(q))


def attempts(sessions: sessionmaker[Session], target: str) -> list[DeliveryAttempt]:
    with sessions() as s:
        return list(s.scalars(select(DeliveryAttempt).where(DeliveryAttempt.target == target)
                              .order_by(DeliveryAttempt.id)))


def all_delivered(sessions: sessionmaker[Session], target: str) -> bool:
    rows = deliveries(sessions, target)
    return bool(rows) and all(d.status == "delivered" for d in rows)


async def until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Await ``cond`` becoming true, with a deadline (the worker runs meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(cond):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
