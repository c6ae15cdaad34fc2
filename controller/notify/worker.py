"""The delivery worker: takes pending deliveries from the outbox and hands them to their targets.

Guarantees (docs/notifications.md says the same for operators):

* **Nothing lost.** A delivery stays ``pending`` until its target accepted it; failures are retried
  for ever with exponential backoff and jitter (``retry.initial`` doubling up to ``retry.max``). A
  delivery pending longer than ``retry.stuck_after`` is logged and shown as stuck by the API.
* **In order per ticket.** A delivery is attempted only when no earlier message of the same ticket is
  still pending for that target, so a tracker sees the create before the comment. Tickets do not wait
  for one another.
* **Every attempt recorded** in ``delivery_attempts`` (ok, detail, duration).
* **A target that is down pauses as a whole** (connection refused, timeout, 5xx, 429): the next probe
  waits for the target's own backoff instead of every message failing in turn.
* **Several replicas.** Each target is served by one replica at a time, the holder of the lease
  ``notify:<target>`` in the ``locks`` table; a stopped or dead replica's lease lapses after
  ``worker.lease`` and another takes over. Delivery is at least once: a replica that dies after the
  target accepted a message and before recording it sends it again (webhooks carry the outbox id as
  ``X-Vigil-Delivery`` so receivers can drop the repeat; trackers find their ticket by fingerprint).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from controller.notify.base import DeliveryError, ExternalRef, Message, Target, TargetUnavailable, sync_ticket
from controller.notify.config import NotifyConfig, RetryConfig, activate, deactivate, default_path, load_config
from controller.notify.outbox import ANY_TARGET
from controller.notify.targets import build, is_ticket_sink
from controller.storage.models import Delivery, DeliveryAttempt, ExternalTicket, Lock, OutboxMessage

log = logging.getLogger(__name__)
T = TypeVar("T")
LEASE_PREFIX = "notify:"


class Host(Protocol):
    """What the worker needs of the controller: sessions, and a way to run database work off the loop."""

    sessions: sessionmaker[Session]

    async def db(self, fn: Callable[..., T], *args: Any) -> T: ...


def backoff(attempt: int, retry: RetryConfig, rng: random.Random) -> float:
    """Seconds to wait after the ``attempt``-th consecutive failure: doubling, capped, half of it random."""
    full = min(retry.max, retry.initial * 2.0 ** min(max(attempt, 1) - 1, 40))
    return full / 2 + rng.uniform(0, full / 2)


@dataclass
class _Due:
    outbox_id: int
    kind: str
    created_at: dt.datetime
    payload: dict[str, Any]
    attempts: int
    ticket_id: int | None
    ref: ExternalRef | None


@dataclass
class _Outcome:
    ok: bool
    detail: str
    duration_ms: int
    ref: ExternalRef | None = None
    target_down: bool = False


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    bind = sessions.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the session factory is not bound to an engine")
    return bind


class NotifyWorker:
    def __init__(self, host: Host, config: NotifyConfig, *, holder: str | None = None,
                 targets: dict[str, Target] | None = None, rng: random.Random | None = None) -> None:
        self.host = host
        self.config = config
        self.holder = holder or f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.targets: dict[str, Target] = targets if targets is not None else {
            t.name: build(t) for t in config.targets if t.enabled}
        self._rng = rng or random.Random()
        self._failures: dict[str, int] = {}
        self._paused_until: dict[str, dt.datetime] = {}
        self._stuck_logged: set[tuple[int, str]] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.engine = engine_of(host.sessions)

    # -- life cycle --------------------------------------------------------------------------------
    def activate(self) -> None:
        """Make enqueue() queue messages for our targets and wake us when they are committed."""
        loop = asyncio.get_running_loop()
        self._wake = self._wake or asyncio.Event()
        wake = self._wake

        def poke() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to wake
                loop.call_soon_threadsafe(wake.set)

        activate(self.engine, self.config, poke)

    def start(self) -> None:
        self.activate()
        self._task = asyncio.create_task(self._run(), name="vigil-notify")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deactivate(self.engine)
        with contextlib.suppress(Exception):
            await self.host.db(self._release)

    async def _run(self) -> None:
        assert self._wake is not None
        if not self.targets:
            # Nothing to deliver to: enqueue() queues nothing here, so there is nothing to poll for. One
            # round clears what was queued for "any target" before (by a process without configuration).
            try:
                await self.run_once()
            except Exception:
                log.exception("notification worker round failed")
            return
        while True:
            try:
                worked = await self.run_once()
            except Exception:
                log.exception("notification worker round failed")
                worked = 0
            if worked:
                continue  # catching up: go straight on
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.worker.poll_interval)

    # -- one round ---------------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Fan out undecided messages, then serve every target once; return the number of attempts made."""
        await self.host.db(self._fan_out)
        done = await asyncio.gather(*(self._serve(name) for name in self.targets))
        return sum(done)

    async def _serve(self, name: str) -> int:
        now = _now()
        if self._paused_until.get(name, now) > now:
            return 0
        if not await self.host.db(self._lease, name, now):
            return 0
        due = await self.host.db(self._due, name, now)
        made = 0
        for item in due:
            outcome = await asyncio.to_thread(self._attempt, name, item)
            made += 1
            now = _now()
            if outcome.ok:
                self._failures[name] = 0
                next_at = now
            elif outcome.target_down:
                self._failures[name] = self._failures.get(name, 0) + 1
                next_at = now + dt.timedelta(seconds=backoff(self._failures[name], self.config.retry, self._rng))
                self._paused_until[name] = next_at
            else:
                next_at = now + dt.timedelta(seconds=backoff(item.attempts + 1, self.config.retry, self._rng))
            await self.host.db(self._record, name, item, outcome, now, next_at)
            if outcome.target_down:
                break
        return made

    def _attempt(self, name: str, item: _Due) -> _Outcome:
        target = self.targets[name]
        msg = Message.from_payload(item.outbox_id, item.kind, item.created_at, item.payload, item.attempts,
                                   self.config.public_url)
        start = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - start) * 1000)

        try:
            if is_ticket_sink(target):
                if item.ticket_id is None:
                    return _Outcome(True, "not about a ticket: nothing to do for a tracker", took())
                ref, detail = sync_ticket(target, item.ref, msg)  # type: ignore[arg-type]
                if ref.extra.get("note"):
                    detail += f"; {ref.extra['note']}"
                return _Outcome(True, detail, took(), ref)
            return _Outcome(True, target.send(msg), took())  # type: ignore[union-attr]
        except TargetUnavailable as exc:
            return _Outcome(False, str(exc), took(), target_down=True)
        except DeliveryError as exc:
            return _Outcome(False, str(exc), took())
        except Exception as exc:  # a bug or an answer we did not expect: retried, never fatal
            log.exception("notification target %s failed on outbox message %d", name, item.outbox_id)
            return _Outcome(False, f"{type(exc).__name__}: {exc}"[:1000], took())

    # -- database work (on the controller's writer) ------------------------------------------------
    def _lease(self, name: str, now: dt.datetime) -> bool:
        key = LEASE_PREFIX + name
        until = now + dt.timedelta(seconds=self.config.worker.lease)
        try:
            with self.host.sessions.begin() as s:
                row = s.get(Lock, key, with_for_update=True)
                if row is None:
                    s.add(Lock(name=key, holder=self.holder, expires_at=until))
                elif row.holder != self.holder and row.expires_at > now:
                    return False
                else:
                    row.holder, row.expires_at = self.holder, until
        except IntegrityError:  # another replica created it first
            return False
        return True

    def _release(self) -> None:
        with self.host.sessions.begin() as s:
            s.execute(delete(Lock).where(Lock.name.startswith(LEASE_PREFIX), Lock.holder == self.holder))

    def _fan_out(self) -> int:
        """Give messages queued without a configuration (see outbox.ANY_TARGET) their real targets."""
        try:
            with self.host.sessions.begin() as s:
                rows = s.execute(
                    select(Delivery, OutboxMessage).join(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
                    .where(Delivery.target == ANY_TARGET, Delivery.status == "pending")
                    .order_by(Delivery.outbox_id).limit(1000)
                ).all()
                for placeholder, msg in rows:
                    have = set(s.scalars(select(Delivery.target).where(Delivery.outbox_id == msg.id)))
                    severity = str((msg.payload.get("ticket") or {}).get("severity") or "low")
                    for name in self.config.wanting(msg.kind, severity):
                        if name not in have:
                            s.add(Delivery(outbox_id=msg.id, target=name, status="pending", attempts=0,
                                           next_attempt_at=msg.created_at, last_error=""))
                    s.delete(placeholder)
                return len(rows)
        except IntegrityError:  # another replica fanned out the same rows
            return 0

    def _due(self, name: str, now: dt.datetime) -> list[_Due]:
        d2 = aliased(Delivery)
        o2 = aliased(OutboxMessage)
        earlier = (
            select(d2.outbox_id).join(o2, o2.id == d2.outbox_id)
            .where(d2.target.in_([name, ANY_TARGET]), d2.status == "pending",
                   o2.ticket_id == OutboxMessage.ticket_id, d2.outbox_id < Delivery.outbox_id)
            .exists()
        )
        with self.host.sessions() as s:
            rows = s.execute(
                select(Delivery, OutboxMessage).join(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
                .where(Delivery.target == name, Delivery.status == "pending", Delivery.next_attempt_at <= now,
                       ~earlier)
                .order_by(Delivery.outbox_id).limit(self.config.worker.batch)
            ).all()
            ticket_ids = {m.ticket_id for _, m in rows if m.ticket_id is not None}
            refs: dict[int, ExternalRef] = {}
            if ticket_ids and is_ticket_sink(self.targets[name]):
                for ext in s.scalars(select(ExternalTicket).where(ExternalTicket.target == name,
                                                                  ExternalTicket.ticket_id.in_(ticket_ids))):
                    refs[ext.ticket_id] = ExternalRef(ext.external_id, ext.url, ext.state)
            return [
                _Due(d.outbox_id, m.kind, m.created_at, dict(m.payload), d.attempts, m.ticket_id,
                     refs.get(m.ticket_id) if m.ticket_id is not None else None)
                for d, m in rows
            ]

    def _record(self, name: str, item: _Due, outcome: _Outcome, now: dt.datetime, next_at: dt.datetime) -> None:
        with self.host.sessions.begin() as s:
            d = s.get(Delivery, (item.outbox_id, name))
            if d is None or d.status != "pending":
                return  # another replica finished it meanwhile
            s.add(DeliveryAttempt(outbox_id=item.outbox_id, target=name, at=now, ok=outcome.ok,
                                  detail=outcome.detail[:4000], duration_ms=outcome.duration_ms))
            d.attempts += 1
            d.last_attempt_at = now
            if outcome.ok:
                d.status, d.delivered_at, d.last_error = "delivered", now, ""
                self._stuck_logged.discard((item.outbox_id, name))
            else:
                d.last_error = outcome.detail[:4000]
                d.next_attempt_at = next_at
                age = (now - item.created_at).total_seconds()
                if age >= self.config.retry.stuck_after and (item.outbox_id, name) not in self._stuck_logged:
                    self._stuck_logged.add((item.outbox_id, name))
                    log.warning("notification %d to %s is stuck: pending for %d s after %d attempts; last error: %s",
                                item.outbox_id, name, age, d.attempts, outcome.detail)
            if outcome.ok and outcome.ref is not None and item.ticket_id is not None:
                ext = s.get(ExternalTicket, (name, item.ticket_id))
                if ext is None:
                    s.add(ExternalTicket(target=name, ticket_id=item.ticket_id, external_id=outcome.ref.external_id,
                                         url=outcome.ref.url, state=outcome.ref.state[:64], updated_at=now))
                else:
                    ext.external_id, ext.url = outcome.ref.external_id, outcome.ref.url
                    ext.state, ext.updated_at = outcome.ref.state[:64], now


def prepare_worker(host: Any, config_path: Path | None = None) -> NotifyWorker:
    """Load notifications.yaml (``config_path`` or DATA_DIR/notifications.yaml) into a worker, not started.

    Raises NotifyConfigError when the file is wrong, so that the controller stops before it listens
    rather than run with targets silently missing.
    """
    path = config_path or default_path(host.config.data_dir)
    config = load_config(path, required=config_path is not None)
    if config.targets:
        log.info("notifications: %d target(s) from %s: %s", len(config.targets), path,
                 ", ".join(f"{t.name} ({t.type})" for t in config.targets))
    else:
        log.info("notifications: no targets (%s %s)", path, "is empty" if path.exists() else "does not exist")
    return NotifyWorker(host, config)


def start_worker(host: Any, config_path: Path | None = None) -> NotifyWorker:
    """:func:`prepare_worker`, then start it on the running loop; ``await worker.stop()`` on the way out."""
    worker = prepare_worker(host, config_path)
    worker.start()
    return worker
