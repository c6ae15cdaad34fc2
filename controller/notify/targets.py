"""The one list of target types: configuration class -> the module that delivers to it."""

from __future__ import annotations

from typing import Any

from controller.notify.base import Notifier, Target, TicketSink
from controller.notify.config import (
    JiraTarget,
    RoundupTarget,
    ServiceNowTarget,
    SmtpTarget,
    SyslogTarget,
    WebhookTarget,
)


def build(cfg: Any) -> Target:
    """The notifier or ticket sink for one validated ``targets:`` entry."""
    if isinstance(cfg, WebhookTarget):
        from controller.notify.webhook import Webhook

        return Webhook(cfg)
    if isinstance(cfg, SmtpTarget):
        from controller.notify.smtp import Smtp

        return Smtp(cfg)
    if isinstance(cfg, SyslogTarget):
        from controller.notify.syslog import Syslog

        return Syslog(cfg)
    if isinstance(cfg, JiraTarget):
        from controller.notify.jira import Jira

        return Jira(cfg)
    if isinstance(cfg, ServiceNowTarget):
        from controller.notify.servicenow import ServiceNow

        return ServiceNow(cfg)
    if isinstance(cfg, RoundupTarget):
        from controller.notify.roundup import Roundup

        return Roundup(cfg)
    raise TypeError(f"no target type for {type(cfg).__name__}")


def is_ticket_sink(target: Target) -> bool:
    return isinstance(target, TicketSink) and not isinstance(target, Notifier)
