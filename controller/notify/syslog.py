"""Syslog for SIEMs: RFC 5424 messages whose MSG is an ArcSight CEF record.

::

    <PRI>1 2026-03-02T08:00:00.000Z ctl01 vigil 4242 opened - CEF:0|Vigil|Vigil|0.1.0|PORTS-ALLOWED|...|8|rt=...

Transports: UDP (RFC 5426, one message per datagram, fire-and-forget: a SIEM that is down loses it, so
prefer tcp), TCP (RFC 6587 octet counting: ``<length> <message>``) and TLS (RFC 5425, same framing).
PRI = facility * 8 + syslog severity (critical -> 2 crit, high -> 3 err, medium -> 4 warning, low -> 5
notice). CEF severity: low 3, medium 5, high 8, critical 10.

CEF escaping: in the header ``\\`` and ``|`` are backslash-escaped; in extension values ``\\`` and ``=``
are, and line breaks become the two characters ``\\n`` (``\\r``).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
from typing import Any

from common import __version__
from controller.notify._http import ssl_context
from controller.notify.base import Message, TargetUnavailable
from controller.notify.config import SyslogTarget

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5}
CEF_SEVERITY = {"critical": 10, "high": 8, "medium": 5, "low": 3}


def cef_header(value: Any) -> str:
    text = " ".join(str(value).splitlines())
    return text.replace("\\", "\\\\").replace("|", "\\|")


def cef_value(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def _epoch_ms(value: Any) -> str | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return str(int(when.timestamp() * 1000))


def cef(msg: Message) -> str:
    t, e = msg.ticket, msg.event
    plain: list[tuple[str, Any]] = [
        ("rt", _epoch_ms(e.get("at")) or str(int(msg.created_at.timestamp() * 1000))),
        ("act", msg.kind),
        ("externalId", t.get("id")),
        ("dhost", t.get("asset_name") or t.get("asset")),
        ("deviceExternalId", t.get("asset")),
        ("cat", t.get("check")),
        ("suser", e.get("actor")),
        ("msg", e.get("text") or t.get("title")),
    ]
    custom: list[tuple[str, str, Any]] = [
        ("cs1", "fingerprint", t.get("fingerprint")),
        ("cs2", "status", t.get("status")),
        ("cs3", "subject", t.get("subject")),
        ("cs4", "refs", ",".join(t.get("refs") or [])),
        ("cs5", "initialReportDue", t.get("initial_report_due")),
        ("cs6", "transition", f"{e.get('from')}->{e.get('to')}" if msg.kind == "transition" else None),
        ("cn1", "occurrences", t.get("occurrences")),
    ]
    pairs = [(k, v) for k, v in plain if v not in (None, "")]
    for key, label, value in custom:
        if value not in (None, ""):
            pairs += [(key + "Label", label), (key, value)]
    header = "|".join(cef_header(v) for v in (
        "CEF:0", "Vigil", "Vigil", __version__, t.get("rule_id") or msg.kind, t.get("title") or msg.kind,
        CEF_SEVERITY.get(msg.severity, 3),
    ))
    return header + "|" + " ".join(f"{k}={cef_value(v)}" for k, v in pairs)


def rfc5424(cfg: SyslogTarget, msg: Message, hostname: str | None = None, now: dt.datetime | None = None) -> bytes:
    pri = FACILITIES[cfg.facility] * 8 + SYSLOG_SEVERITY.get(msg.severity, 5)
    ts = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    host = cfg.hostname or hostname or socket.getfqdn() or "-"
    host = "".join(c for c in host if "!" <= c <= "~")[:255] or "-"
    msgid = "".join(c for c in msg.kind if "!" <= c <= "~")[:32] or "-"
    head = f"<{pri}>1 {ts} {host} {cfg.app_name} {os.getpid()} {msgid} - "
    data = (head + cef(msg)).encode("utf-8")
    return data[: cfg.max_bytes]


def frame(data: bytes) -> bytes:
    """RFC 6587 octet counting."""
    return str(len(data)).encode("ascii") + b" " + data


class Syslog:
    def __init__(self, cfg: SyslogTarget) -> None:
        self.name = cfg.name
        self.cfg = cfg

    def _emit(self, data: bytes) -> str:
        cfg = self.cfg
        where = f"syslog {cfg.protocol}://{cfg.host}:{cfg.effective_port}"
        try:
            if cfg.protocol == "udp":
                infos = socket.getaddrinfo(cfg.host, cfg.effective_port, type=socket.SOCK_DGRAM)
                family, _, _, _, addr = infos[0]
                with socket.socket(family, socket.SOCK_DGRAM) as udp:
                    udp.settimeout(cfg.timeout)
                    udp.sendto(data, addr)
                return f"sent {len(data)} bytes over udp"
            with socket.create_connection((cfg.host, cfg.effective_port), timeout=cfg.timeout) as raw:
                sock: socket.socket | ssl.SSLSocket = raw
                if cfg.protocol == "tls":
                    sock = ssl_context(cfg.ca_file).wrap_socket(raw, server_hostname=cfg.host)
                sock.sendall(frame(data))
                if isinstance(sock, ssl.SSLSocket):
                    sock.unwrap()
            return f"sent {len(data)} bytes over {cfg.protocol}"
        except (OSError, ssl.SSLError) as exc:
            raise TargetUnavailable(f"{where}: {exc}") from None

    def send(self, msg: Message) -> str:
        return self._emit(rfc5424(self.cfg, msg))

    def check(self) -> str:
        test = Message(0, "test", dt.datetime.now(dt.UTC),
                       {"id": 0, "title": "Vigil test notification", "severity": "low", "rule_id": "VIGIL-TEST"},
                       {"kind": "test", "text": "a test sent by an administrator", "actor": "admin"})
        return "test message " + self._emit(rfc5424(self.cfg, test))
