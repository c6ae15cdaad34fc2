"""What goes on the wire: CEF escaping, RFC 5424 framing, webhook signatures, mail subjects."""

from __future__ import annotations

import datetime as dt
import re

from controller.notify.base import Message, countdown, fingerprint_tag
from controller.notify.config import SmtpTarget, SyslogTarget
from controller.notify.smtp import compose, subject_of
from controller.notify.syslog import cef, cef_header, cef_value, frame, rfc5424
from controller.notify.webhook import body_of, sign, verify

NOW = dt.datetime(2026, 3, 2, 8, 10, tzinfo=dt.UTC)
TICKET = {
    "id": 7, "title": "PORTS-ALLOWED on web|01: a=b", "severity": "critical", "status": "open",
    "asset": "agt-1", "asset_name": "web-01", "check": "ports", "rule_id": "PORTS-ALLOWED",
    "subject": "tcp/0.0.0.0:6379", "refs": ["TPEx-CPA 3(10)5"], "occurrences": 2,
    "initial_report_due": "2026-03-02T08:30:00Z", "fingerprint": "agt-1|PORTS-ALLOWED|tcp/0.0.0.0:6379",
    "evidence": {"diff": "--- a\n+++ b\n-x\n+y"},
}
MSG = Message(42, "opened", NOW, TICKET, {"at": "2026-03-02T08:00:00Z", "actor": "system", "kind": "opened",
                                          "text": "line one\nback\\slash = equals"})


def test_cef_escapes_header_and_extension() -> None:
    assert cef_header("a|b\\c") == "a\\|b\\\\c"
    assert cef_value("a=b\\c\nd\re") == "a\\=b\\\\c\\nd\\re"
    record = cef(MSG)
    head = record.split("|", 7)
    assert record.startswith("CEF:0|Vigil|Vigil|")
    assert "PORTS-ALLOWED on web\\|01: a=b" in record  # '=' needs no escape in the header
    assert record.split("|")[4] == "PORTS-ALLOWED"
    ext = record[record.index("|10|") + 4:]
    assert len(head) == 8 and "|10|" in record  # critical -> CEF severity 10
    assert "msg=line one\\nback\\\\slash \\= equals" in ext
    assert "cs1Label=fingerprint cs1=agt-1|PORTS-ALLOWED|tcp/0.0.0.0:6379" in ext
    assert "rt=1772438400000" in ext and "act=opened" in ext and "dhost=web-01" in ext
    assert "\n" not in record


def test_rfc5424_line_and_octet_counting() -> None:
    cfg = SyslogTarget(name="siem", type="syslog", host="127.0.0.1", facility="local4")
    data = rfc5424(cfg, MSG, hostname="ctl01", now=NOW)
    # <PRI>: local4 (20) * 8 + crit (2) = 162
    assert re.match(rb"^<162>1 2026-03-02T08:10:00\.000Z ctl01 vigil \d+ opened - CEF:0\|", data)
    assert frame(b"hello") == b"5 hello"
    assert frame("é".encode()) == b"2 \xc3\xa9"


def test_webhook_signature_covers_the_timestamp() -> None:
    body = body_of(MSG)
    sig = sign("k", 1_000, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify("k", body, "1000", sig, now=1_100)
    assert not verify("k", body, "1001", sig, now=1_100)  # a replay with a fresh timestamp fails
    assert not verify("k", body, "1000", sig, now=1_000 + 3600)  # too old
    assert not verify("other", body, "1000", sig, now=1_100)
    assert not verify("k", body + b" ", "1000", sig, now=1_100)


def test_mail_subject_and_initial_report_countdown() -> None:
    cfg = SmtpTarget.model_validate({"name": "m", "type": "smtp", "host": "h", "from": "vigil@example.com",
                                     "to": ["soc@example.com"]})
    assert subject_of(MSG) == "[Vigil] critical #7 PORTS-ALLOWED on web|01: a=b"
    mail = compose(cfg, MSG, NOW)
    text = mail.get_content()
    assert "Initial report (TPEx-CPA 3(12)2): due 2026-03-02T08:30:00Z (in 20 min)" in text
    assert "+y" in text and mail["Message-ID"] == "<vigil-outbox-42@example.com>"
    assert countdown("2026-03-02T08:30:00Z", NOW + dt.timedelta(minutes=25)).endswith("(OVERDUE by 5 min)")


def test_fingerprint_tag_is_short_and_stable() -> None:
    tag = fingerprint_tag(MSG)
    assert re.fullmatch(r"vigil-[0-9a-f]{20}", tag) and tag == fingerprint_tag(MSG)
