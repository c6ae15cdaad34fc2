"""The transactional outbox: one row per ticket event, written by the caller's transaction.

With the message go its deliveries, one per target that wants it (severity and event filters), in the
same transaction: a message is never committed without knowing whom it is for, and a target added
later starts with the events after it was added rather than being flooded with history.

A process that has no notification configuration active (the CLI, a unit test) queues the message for
:data:`ANY_TARGET` instead; the worker of a running controller fans such rows out to the targets it
knows, so an event recorded there is not lost either.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from controller.notify.config import active
from controller.storage.models import Agent, Delivery, OutboxMessage, Ticket, TicketEvent
from controller.storage.serialize import event_json, ticket_json

# The target of a delivery whose targets are not decided yet (see the module docstring).
ANY_TARGET = "*"
_WAKE = "vigil.notify.wake"


def enqueue(session: Session, ticket: Ticket, event: TicketEvent, at: dt.datetime | None = None) -> OutboxMessage:
    """Queue ``event`` of ``ticket`` for every notification target, in the caller's transaction."""
    agent = session.get(Agent, ticket.asset)
    created = at or event.at
    msg = OutboxMessage(
        created_at=created,
        kind=event.kind,
        ticket_id=ticket.id,
        payload={"event": event_json(event), "ticket": ticket_json(ticket, agent.hostname if agent else None)},
    )
    bind: Any = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    act = active(engine)
    if act is None:
        targets = [ANY_TARGET]
    else:
        targets = act.config.wanting(event.kind, ticket.severity)
        if targets and act.wake is not None:
            session.info[_WAKE] = act.wake
            if not sa_event.contains(session, "after_commit", _after_commit):
                sa_event.listen(session, "after_commit", _after_commit)
                sa_event.listen(session, "after_soft_rollback", _after_rollback)
    for target in targets:
        msg.deliveries.append(Delivery(target=target, status="pending", attempts=0, next_attempt_at=created,
                                       last_error=""))
    session.add(msg)
    return msg


def _after_commit(session: Session) -> None:
    wake = session.info.pop(_WAKE, None)
    if wake is not None:
        wake()


def _after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(_WAKE, None)
