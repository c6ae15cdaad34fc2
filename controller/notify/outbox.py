"""The transactional outbox: one row per ticket event, written by the caller's transaction."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from controller.db.models import Agent, OutboxMessage, Ticket, TicketEvent
from controller.serialize import event_json, ticket_json


def enqueue(session: Session, ticket: Ticket, event: TicketEvent, at: dt.datetime | None = None) -> OutboxMessage:
    """Queue ``event`` of ``ticket`` for every notification target, in the caller's transaction."""
    agent = session.get(Agent, ticket.asset)
    msg = OutboxMessage(
        created_at=at or event.at,
        kind=event.kind,
        ticket_id=ticket.id,
        payload={"event": event_json(event), "ticket": ticket_json(ticket, agent.hostname if agent else None)},
    )
    session.add(msg)
    return msg
