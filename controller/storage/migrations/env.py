"""Alembic environment: runs migrations on the connection the controller hands over."""

from __future__ import annotations

from alembic import context

from controller.storage.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through controller.storage.store.upgrade(), which passes a connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
