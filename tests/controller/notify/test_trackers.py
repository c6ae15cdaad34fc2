"""The TicketSink contract, run against every tracker backend: a real Roundup tracker, and HTTP servers
that implement the Jira REST v2 and ServiceNow Table API endpoints we call.

Our ticket is opened there once, commented, moved and resolved in step, and never duplicated, even
when the controller forgets what it knew (a restart after a crash, a new replica) and sends again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from controller.notify.base import Message, fingerprint_tag
from controller.notify.config import NotifyConfig, parse_config
from controller.notify.targets import build
from controller.notify.worker import NotifyWorker
from controller.storage.models import Delivery, ExternalTicket, OutboxMessage
from tests.controller.notify._servers import FakeJira, FakeServiceNow, RoundupTracker
from tests.controller.notify.conftest import DbHost, attempts, comment, deliveries, open_ticket, transition, until

FAST = "retry: {initial: 50ms, max: 200ms}\nworker: {poll_interval: 50ms}\n"


@dataclass
class Backend:
    """A tracker under test and how to look into it."""

    name: str
    yaml: str
    states: dict[str, str]  # our status -> what the tracker should show
    server: Any

    def items(self, tag: str) -> list[Any]:
        s = self.server
        if isinstance(s, FakeJira):
            return s.by_label(tag)
        if isinstance(s, FakeServiceNow):
            return s.by_correlation(tag)
        return [i for i in s.issues_titled(tag) if str(i["title"]).startswith(f"[{tag}]")]

    def state(self, item: Any) -> str:
        s = self.server
        if isinstance(s, FakeJira):
            return str(item["status"])
        if isinstance(s, FakeServiceNow):
            return str(item["state"])
        return str(s.issue(item["id"])["status"]["name"])

    def notes(self, item: Any) -> list[str]:
        s = self.server
        if isinstance(s, FakeJira):
            return list(item["comments"])
        if isinstance(s, FakeServiceNow):
            return list(item["work_notes_journal"])
        return s.message_texts(item["id"])[1:]  # the first message is the description


@pytest.fixture(scope="module")
def roundup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoundupTracker]:
    if RoundupTracker.tools() is None:
        pytest.skip("roundup-admin/roundup-server not installed (pip install roundup)")
    tracker = RoundupTracker(tmp_path_factory.mktemp("roundup"))
    tracker.start()
    yield tracker
    tracker.stop()


@pytest.fixture(params=["jira", "servicenow", "roundup"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    kind = request.param
    if kind == "jira":
        jira = FakeJira()
        jira.start()
        monkeypatch.setenv("T_JIRA_TOKEN", jira.token)
        yield Backend("jira", f"""\
  - name: jira
    type: jira
    url: {jira.url}
    project: SEC
    user: {jira.user}
    token: ${{T_JIRA_TOKEN}}
""", {"open": "To Do", "in_progress": "In Progress", "resolved": "Done"}, jira)
        jira.stop()
    elif kind == "servicenow":
        sn = FakeServiceNow()
        sn.start()
        monkeypatch.setenv("T_SN_PASSWORD", sn.password)
        yield Backend("servicenow", f"""\
  - name: servicenow
    type: servicenow
    url: {sn.url}
    user: {sn.user}
    password: ${{T_SN_PASSWORD}}
    assignment_group: SOC
""", {"open": "1", "in_progress": "2", "resolved": "6"}, sn)
        sn.stop()
    else:
        tracker: RoundupTracker = request.getfixturevalue("roundup")
        monkeypatch.setenv("T_ROUNDUP_PASSWORD", tracker.password)
        yield Backend("roundup", f"""\
  - name: roundup
    type: roundup
    url: {tracker.url}
    user: {tracker.user}
    password: ${{T_ROUNDUP_PASSWORD}}
""", {"open": "chatting", "in_progress": "in-progress", "resolved": "resolved"}, tracker)


def config(backend: Backend) -> NotifyConfig:
    return parse_config(FAST + "targets:\n" + backend.yaml, "test.yaml")


def tag_of(sessions: sessionmaker[Session], ticket_id: int) -> str:
    with sessions() as s:
        msg = s.scalars(select(OutboxMessage).where(OutboxMessage.ticket_id == ticket_id)).first()
        assert msg is not None
        return fingerprint_tag(Message.from_payload(msg.id, msg.kind, msg.created_at, msg.payload))


async def _deliver_all(host: DbHost, cfg: NotifyConfig, name: str) -> None:
    worker = NotifyWorker(host, cfg)
    worker.start()
    try:
        await until(lambda: all(d.status == "delivered" for d in deliveries(host.sessions, name)),
                    what=f"every delivery to {name}")
    finally:
        await worker.stop()


def test_tracker_follows_our_ticket_and_never_duplicates(
        backend: Backend, sessions: sessionmaker[Session], host: DbHost, db_url: str) -> None:
    cfg = config(backend)
    name = backend.name
    # One subject per tracker and database: the Roundup tracker serves every test in this module.
    subject = f"tcp/0.0.0.0:{20000 + 2 * (abs(hash(name)) % 5000) + db_url.startswith('postgresql')}"

    async def scenario() -> None:
        worker = NotifyWorker(host, cfg)
        worker.activate()  # enqueue() now writes deliveries for this target
        tid = await asyncio.to_thread(open_ticket, sessions, subject, "critical")
        await asyncio.to_thread(comment, sessions, tid, "first look: redis bound to all interfaces")
        await asyncio.to_thread(transition, sessions, tid, "in_progress")
        await asyncio.to_thread(transition, sessions, tid, "resolved", "bound to 127.0.0.1")
        worker.start()
        await until(lambda: all(d.status == "delivered" for d in deliveries(sessions, name)), what="delivery")
        await worker.stop()

    asyncio.run(scenario())
    with sessions() as s:
        tid = s.scalars(select(OutboxMessage.ticket_id)).first()
        assert tid is not None
        ext = s.get(ExternalTicket, (name, tid))
        assert ext is not None and ext.url
    tag = tag_of(sessions, tid)
    [item] = backend.items(tag)
    assert backend.state(item) == backend.states["resolved"]
    notes = backend.notes(item)
    assert any("first look: redis bound to all interfaces" in n for n in notes), notes
    assert any("in_progress" in n for n in notes) and any("bound to 127.0.0.1" in n for n in notes)
    # In order: the comment came before the resolution.
    assert next(i for i, n in enumerate(notes) if "first look" in n) < next(
        i for i, n in enumerate(notes) if "bound to 127.0.0.1" in n)
    ok = [a for a in attempts(sessions, name) if a.ok]
    assert len(ok) == 4 and "created" in ok[0].detail

    # The controller forgets the counterpart and sends the opening again (a crash between the tracker
    # accepting it and our record of it), then the ticket is reopened: still one issue over there.
    with sessions.begin() as s:
        s.execute(delete(ExternalTicket))
        first = s.scalars(select(Delivery.outbox_id).where(Delivery.target == name).order_by(Delivery.outbox_id)
                          ).first()
        s.execute(update(Delivery).where(Delivery.outbox_id == first, Delivery.target == name)
                  .values(status="pending"))
    cfg2 = config(backend)

    async def restart() -> None:
        worker = NotifyWorker(host, cfg2)  # a fresh worker: nothing remembered in memory either
        worker.activate()
        await asyncio.to_thread(transition, sessions, tid, "open", "came back after a reboot")
        worker.start()
        await until(lambda: all(d.status == "delivered" for d in deliveries(sessions, name)), what="redelivery")
        await worker.stop()

    asyncio.run(restart())
    [item] = backend.items(tag)
    assert backend.state(item) == backend.states["open"]
    assert any("found" in a.detail and "by fingerprint" in a.detail for a in attempts(sessions, name) if a.ok)


def test_check_reads_without_writing(backend: Backend) -> None:
    target = build(config(backend).targets[0])
    assert target.check()


def test_wrong_credentials_are_a_refusal_that_is_retried(
        backend: Backend, sessions: sessionmaker[Session], host: DbHost, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("T_JIRA_TOKEN", "T_SN_PASSWORD", "T_ROUNDUP_PASSWORD"):
        monkeypatch.setenv(var, "wrong")
    cfg = config(backend)

    async def scenario() -> None:
        worker = NotifyWorker(host, cfg)
        worker.activate()
        await asyncio.to_thread(open_ticket, sessions, "tcp/0.0.0.0:31337")
        assert await worker.run_once() == 1
        await worker.stop()

    asyncio.run(scenario())
    [d] = deliveries(sessions, backend.name)
    assert d.status == "pending" and d.attempts == 1 and "401" in d.last_error
    assert "wrong" not in d.last_error

