"""Notifications: ticket events go to an outbox in the same transaction as the event, and a worker
delivers them to the configured targets with retries, recording every attempt.

Public: ``enqueue``.
"""

from __future__ import annotations

from controller.notify.outbox import enqueue

__all__ = ["enqueue"]
