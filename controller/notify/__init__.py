"""Notifications: ticket events go to an outbox in the same transaction as the event, and a worker
delivers them to the configured targets with retries, recording every attempt.

Public: ``enqueue`` (controller.domain.tickets), ``start_worker``/``NotifyWorker`` (controller.server),
``load_config``/``NotifyConfig`` (notifications.yaml), ``TicketSink``/``Notifier`` (the target
interfaces), ``register_routes`` lives in ``controller.rest.notifications``. See docs/notifications.md.
"""

from __future__ import annotations

from controller.notify.base import (
    DeliveryError,
    ExternalRef,
    Message,
    Notifier,
    NotifyConfigError,
    NotifyError,
    TargetUnavailable,
    TicketSink,
)
from controller.notify.config import NotifyConfig, load_config, parse_config
from controller.notify.outbox import enqueue

__all__ = [
    "DeliveryError",
    "ExternalRef",
    "Message",
    "Notifier",
    "NotifyConfig",
    "NotifyConfigError",
    "NotifyError",
    "TargetUnavailable",
    "TicketSink",
    "enqueue",
    "load_config",
    "parse_config",
]
