"""E-mail against a real SMTP server (aiosmtpd) and syslog against real UDP and TCP listeners, both
driven by the worker from the outbox."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from controller.notify.config import NotifyConfig, parse_config
from controller.notify.worker import NotifyWorker
from tests.controller.notify._servers import SyslogListener, free_port
from tests.controller.notify.conftest import DbHost, deliveries, open_ticket, transition, until

FAST = "retry: {initial: 50ms, max: 200ms}\nworker: {poll_interval: 50ms}\n"


class _Inbox:
    def __init__(self) -> None:
        self.mails: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        self.mails.append(msg)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Inbox, int]]:
    controller_mod = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd is not installed")
    inbox = _Inbox()
    port = free_port()
    ctl = controller_mod.Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield inbox, port
    finally:
        ctl.stop()


def run(host: DbHost, cfg: NotifyConfig, sessions: sessionmaker[Session], actions: Any, target: str) -> None:
    async def scenario() -> None:
        worker = NotifyWorker(host, cfg)
        worker.start()
        try:
            await asyncio.to_thread(actions)
            await until(lambda: bool(deliveries(sessions, target)) and all(
                d.status == "delivered" for d in deliveries(sessions, target)), what=f"delivery to {target}")
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_mail_per_event_with_countdown(smtp_server: tuple[_Inbox, int], sessions: sessionmaker[Session],
                                       host: DbHost) -> None:
    inbox, port = smtp_server
    cfg = parse_config(FAST + f"""\
targets:
  - name: mail
    type: smtp
    host: 127.0.0.1
    port: {port}
    tls: none
    from: vigil@example.com
    to: [soc@example.com, oncall@example.com]
""", "t.yaml")

    def actions() -> None:
        tid = open_ticket(sessions, "tcp/0.0.0.0:6379", "critical")
        transition(sessions, tid, "acknowledged", "on it")

    run(host, cfg, sessions, actions, "mail")
    assert len(inbox.mails) == 2
    first, second = inbox.mails
    assert re.fullmatch(r"\[Vigil\] critical #\d+ PORTS-ALLOWED on web-01: tcp/0\.0\.0\.0:6379 \(redis\) is not "
                        r"allowed", str(first["Subject"]))
    body = first.get_content()
    assert "Initial report (TPEx-CPA 3(12)2): due " in body and "min)" in body
    assert second["In-Reply-To"] == second["References"] and "Status open → acknowledged by alice" in \
        second.get_content()


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_syslog_cef(protocol: str, sessions: sessionmaker[Session], host: DbHost) -> None:
    listener = SyslogListener()
    port = listener.udp_port if protocol == "udp" else listener.tcp_port
    cfg = parse_config(FAST + f"""\
targets:
  - name: siem
    type: syslog
    host: 127.0.0.1
    port: {port}
    protocol: {protocol}
    hostname: ctl01
""", "t.yaml")
    try:
        run(host, cfg, sessions, lambda: open_ticket(sessions, "tcp/0.0.0.0:23", "high"), "siem")
        # UDP is fire-and-forget: the datagram may still be on its way when the send returned.
        asyncio.run(until(lambda: len(listener.snapshot()) == 1, what="the syslog message"))
    finally:
        listener.close()
    [(how, data)] = listener.snapshot()
    assert how == protocol
    line = data.decode()
    assert re.match(r"^<163>1 \S+Z ctl01 vigil \d+ opened - CEF:0\|Vigil\|Vigil\|[^|]+\|PORTS-ALLOWED\|", line)
    assert "|8|" in line and "cs1Label=fingerprint" in line
