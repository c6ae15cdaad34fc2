"""E-mail over SMTP (standard library ``smtplib``): one plain-text mail per message.

Subject ``[Vigil] <severity> #<id> <title>``. Critical and high tickets show how long is left until the
initial report is due (TPEx-CPA 3(12)2: 30 minutes), counted when the mail is sent. Mails of one ticket
carry ``References`` to the same root id so that mail clients thread them; the ``Message-ID`` derives
from the outbox id, so a retried mail can be recognised as the same one.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime

from controller.notify._http import ssl_context
from controller.notify.base import DeliveryError, Message, TargetUnavailable, describe_event, describe_ticket
from controller.notify.config import SmtpTarget


def subject_of(msg: Message) -> str:
    t = msg.ticket
    title = " ".join(str(t.get("title", "")).split())
    return f"[Vigil] {t.get('severity')} #{t.get('id')} {title}"[:250]


def compose(cfg: SmtpTarget, msg: Message, now: dt.datetime | None = None) -> EmailMessage:
    now = now or dt.datetime.now(dt.UTC)
    domain = cfg.sender.rpartition("@")[2] or "vigil.invalid"
    mail = EmailMessage()
    mail["Subject"] = subject_of(msg)
    mail["From"] = cfg.sender
    mail["To"] = ", ".join(cfg.to)
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = f"<vigil-outbox-{msg.outbox_id}@{domain}>"
    root = f"<vigil-ticket-{msg.ticket.get('id')}@{domain}>"
    if msg.kind != "opened":
        mail["In-Reply-To"] = root
        mail["References"] = root
    mail["X-Vigil-Event"] = msg.kind
    mail["X-Vigil-Ticket"] = str(msg.ticket.get("id"))
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(describe_event(msg) + "\n\n" + "-" * 60 + "\n" + describe_ticket(msg, now) + "\n")
    return mail


class Smtp:
    def __init__(self, cfg: SmtpTarget) -> None:
        self.name = cfg.name
        self.cfg = cfg

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        ctx: ssl.SSLContext = ssl_context(cfg.ca_file)
        try:
            if cfg.tls == "implicit":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.effective_port, timeout=cfg.timeout, context=ctx)
            else:
                conn = smtplib.SMTP(cfg.host, cfg.effective_port, timeout=cfg.timeout)
            conn.ehlo()
            if cfg.tls == "starttls":
                conn.starttls(context=ctx)
                conn.ehlo()
            if cfg.username:
                conn.login(cfg.username, cfg.password.get_secret_value() if cfg.password else "")
            return conn
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP {cfg.host}: login as {cfg.username} refused ({exc.smtp_code})") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"SMTP {cfg.host}: {exc}; set tls: none or implicit if the server has no "
                                "STARTTLS") from None
        except (TimeoutError, OSError, smtplib.SMTPException) as exc:
            raise TargetUnavailable(f"SMTP {cfg.host}:{cfg.effective_port}: {exc}") from None

    def _deliver(self, mail: EmailMessage) -> str:
        conn = self._connect()
        try:
            refused = conn.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"SMTP {self.cfg.host}: every recipient refused: {sorted(exc.recipients)}") from None
        except smtplib.SMTPResponseException as exc:
            err = TargetUnavailable if 400 <= exc.smtp_code < 500 else DeliveryError
            raise err(f"SMTP {self.cfg.host}: {exc.smtp_code} {exc.smtp_error!r}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TargetUnavailable(f"SMTP {self.cfg.host}: {exc}") from None
        finally:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                conn.close()
        detail = f"accepted for {len(self.cfg.to) - len(refused)} recipient(s)"
        return detail + (f"; refused {sorted(refused)}" if refused else "")

    def send(self, msg: Message) -> str:
        return self._deliver(compose(self.cfg, msg))

    def check(self) -> str:
        test = Message(0, "test", dt.datetime.now(dt.UTC),
                       {"id": 0, "title": "test notification", "severity": "low", "status": "open"},
                       {"kind": "test", "text": "A test sent by an administrator."})
        return "test mail " + self._deliver(compose(self.cfg, test))
