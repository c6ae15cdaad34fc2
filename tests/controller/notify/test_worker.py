"""The outbox and the worker: nothing lost while a target is down, order per ticket, every attempt
recorded, targets added later not flooded, one replica per target."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.notify.config import NotifyConfig, activate, deactivate, parse_config
from controller.notify.outbox import ANY_TARGET
from controller.notify.worker import NotifyWorker, engine_of
from controller.storage.models import Lock
from tests.controller.notify._servers import WebhookReceiver
from tests.controller.notify.conftest import (
    DbHost,
    attempts,
    comment,
    deliveries,
    open_ticket,
    transition,
    until,
)

SECRET = "hook-secret-for-tests"
FAST = """\
retry: {initial: 50ms, max: 200ms}
worker: {poll_interval: 50ms}
"""


def hook_config(monkeypatch: pytest.MonkeyPatch, url: str, extra: str = "") -> NotifyConfig:
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    return parse_config(FAST + f"""\
targets:
  - name: hook
    type: webhook
    url: {url}
    secret: ${{TEST_HOOK_SECRET}}
    timeout: 5s
{extra}""", "test.yaml")


def test_webhook_down_then_back_loses_nothing_and_keeps_order(
        sessions: sessionmaker[Session], host: DbHost, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = WebhookReceiver(SECRET)  # not up yet: connections are refused
    cfg = hook_config(monkeypatch, receiver.url)
    n = 6

    async def scenario() -> None:
        worker = NotifyWorker(host, cfg)
        worker.start()
        try:
            ids = []
            for i in range(n):
                tid = await asyncio.to_thread(open_ticket, sessions, f"tcp/0.0.0.0:{7000 + i}")
                ids.append(tid)
                await asyncio.to_thread(transition, sessions, tid, "acknowledged")
                await asyncio.to_thread(comment, sessions, tid, f"looking at {i}")
                await asyncio.to_thread(transition, sessions, tid, "in_progress")
            # The worker keeps trying while the target is down, and records each failed attempt.
            await until(lambda: sum(not a.ok for a in attempts(sessions, "hook")) >= 3, what="failed attempts")
            assert all(d.status == "pending" for d in deliveries(sessions, "hook"))
            receiver.up()
            await until(lambda: all(d.status == "delivered" for d in deliveries(sessions, "hook")),
                        what="every delivery")
        finally:
            await worker.stop()
            receiver.down()

    asyncio.run(scenario())
    got = receiver.snapshot()
    rows = deliveries(sessions, "hook")
    assert len(rows) == 4 * n
    # Exactly once: every outbox message arrived, none twice, all signatures valid.
    assert sorted(int(r["delivery"]) for r in got) == sorted(d.outbox_id for d in rows)
    assert receiver.bad_signatures == 0
    # In order per ticket.
    per_ticket: dict[int, list[str]] = defaultdict(list)
    for r in got:
        per_ticket[r["body"]["ticket"]["id"]].append(r["body"]["event"]["kind"])
    assert len(per_ticket) == n
    assert all(kinds == ["opened", "transition", "comment", "transition"] for kinds in per_ticket.values())
    for r in got:
        assert r["event"] == r["body"]["kind"]
    # Every attempt recorded: one success per delivery, the failures before it.
    tried = attempts(sessions, "hook")
    assert sum(a.ok for a in tried) == 4 * n
    assert any(not a.ok and "cannot reach" in a.detail for a in tried)
    assert all(d.attempts >= 1 and d.delivered_at is not None and d.last_error == "" for d in rows)


def test_filters_and_a_target_added_later(sessions: sessionmaker[Session], host: DbHost,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_of(sessions)
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    one = parse_config("""\
targets:
  - {name: all, type: webhook, url: "http://127.0.0.1:9/a", secret: "${TEST_HOOK_SECRET}"}
  - {name: high-only, type: webhook, url: "http://127.0.0.1:9/b", secret: "${TEST_HOOK_SECRET}",
     min_severity: high, events: [opened, reopened]}
""", "one.yaml")
    activate(engine, one)
    try:
        low = open_ticket(sessions, "tcp/0.0.0.0:1", severity="low")
        high = open_ticket(sessions, "tcp/0.0.0.0:2", severity="high")
        transition(sessions, high, "acknowledged")
        got = {(d.outbox_id, d.target) for d in deliveries(sessions)}
        assert {t for _, t in got} == {"all", "high-only"}
        assert len([1 for _, t in got if t == "all"]) == 3
        assert len([1 for _, t in got if t == "high-only"]) == 1  # the opening of the high ticket only
        two = parse_config("""\
targets:
  - {name: late, type: webhook, url: "http://127.0.0.1:9/c", secret: "${TEST_HOOK_SECRET}"}
""", "two.yaml")
        activate(engine, two)
        comment(sessions, low, "after the new target")
        late = deliveries(sessions, "late")
        assert len(late) == 1  # only what happened after it was added
    finally:
        deactivate(engine)


def test_messages_queued_without_configuration_are_fanned_out(
        sessions: sessionmaker[Session], host: DbHost, monkeypatch: pytest.MonkeyPatch) -> None:
    tid = open_ticket(sessions, "tcp/0.0.0.0:3")  # no configuration active: queued for "*"
    transition(sessions, tid, "acknowledged")
    assert {d.target for d in deliveries(sessions)} == {ANY_TARGET}
    receiver = WebhookReceiver(SECRET)
    receiver.up()
    cfg = hook_config(monkeypatch, receiver.url)

    async def scenario() -> None:
        worker = NotifyWorker(host, cfg)
        worker.start()
        try:
            await until(lambda: len(receiver.snapshot()) == 2, what="both messages")
        finally:
            await worker.stop()

    try:
        asyncio.run(scenario())
    finally:
        receiver.down()
    assert [r["body"]["kind"] for r in receiver.snapshot()] == ["opened", "transition"]
    assert {d.target for d in deliveries(sessions)} == {"hook"}


def test_without_targets_the_worker_clears_leftovers_once_and_does_not_poll(
        sessions: sessionmaker[Session], host: DbHost) -> None:
    open_ticket(sessions, "tcp/0.0.0.0:4")  # queued for "*" by a process without configuration
    assert {d.target for d in deliveries(sessions)} == {ANY_TARGET}

    async def scenario() -> bool:
        worker = NotifyWorker(host, parse_config("targets: []\n", "empty.yaml"))
        worker.start()
        assert worker._task is not None
        try:
            await asyncio.wait_for(asyncio.shield(worker._task), 10)  # it ends by itself: nothing to poll for
            return worker._task.done()
        finally:
            await worker.stop()

    assert asyncio.run(scenario())
    assert deliveries(sessions) == []


def test_one_replica_serves_a_target_and_a_stopped_one_hands_over(
        sessions: sessionmaker[Session], host: DbHost, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = WebhookReceiver(SECRET)
    receiver.up()
    cfg = hook_config(monkeypatch, receiver.url)

    async def scenario() -> None:
        a = NotifyWorker(host, cfg, holder="replica-a")
        b = NotifyWorker(host, cfg, holder="replica-b")
        a.activate()
        await asyncio.to_thread(open_ticket, sessions, "tcp/0.0.0.0:4")
        assert await a.run_once() == 1
        assert await b.run_once() == 0  # a holds the lease for "hook"
        with sessions() as s:
            assert s.scalars(select(Lock.holder).where(Lock.name == "notify:hook")).one() == "replica-a"
        await a.stop()  # releases its leases
        a.activate()  # (stop() deactivated the engine's configuration; queue for our targets again)
        await asyncio.to_thread(open_ticket, sessions, "tcp/0.0.0.0:5")
        assert await b.run_once() == 1
        await b.stop()

    try:
        asyncio.run(scenario())
    finally:
        receiver.down()
    assert len(receiver.snapshot()) == 2


def test_a_refused_message_is_retried_without_holding_up_other_tickets(
        sessions: sessionmaker[Session], host: DbHost, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = WebhookReceiver("a-different-secret")  # answers 401 to our signature: a refusal, not an outage
    receiver.up()
    cfg = hook_config(monkeypatch, receiver.url)

    async def scenario() -> None:
        worker = NotifyWorker(host, cfg)
        worker.activate()
        first = await asyncio.to_thread(open_ticket, sessions, "tcp/0.0.0.0:6")
        await asyncio.to_thread(open_ticket, sessions, "tcp/0.0.0.0:7")
        await asyncio.to_thread(transition, sessions, first, "acknowledged")
        # One round tries the head of each ticket: both refused; the later event of `first` waits.
        assert await worker.run_once() == 2
        rows = deliveries(sessions, "hook")
        assert [d.attempts for d in rows] == [1, 1, 0]
        receiver.secret = SECRET
        worker.start()
        try:
            await until(lambda: all(d.status == "delivered" for d in deliveries(sessions, "hook")), what="delivery")
        finally:
            await worker.stop()

    try:
        asyncio.run(scenario())
    finally:
        receiver.down()
    tried = attempts(sessions, "hook")
    assert [a.ok for a in tried][:2] == [False, False] and "HTTP 401" in tried[0].detail
    assert receiver.bad_signatures == 2
    assert [r["body"]["kind"] for r in receiver.snapshot()].count("opened") == 2


def test_backoff_is_capped_and_jittered() -> None:
    import random

    from controller.notify.config import RetryConfig
    from controller.notify.worker import backoff

    retry = RetryConfig(initial=2, max=300)
    rng = random.Random(1)
    delays = [backoff(n, retry, rng) for n in range(1, 30)]
    assert 1 <= delays[0] <= 2
    assert all(d <= 300 for d in delays) and max(delays) > 150
    assert len({round(d, 6) for d in delays[-10:]}) > 1  # jitter

