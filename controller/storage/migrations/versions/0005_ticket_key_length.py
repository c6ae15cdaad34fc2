"""tickets.dedupe_key wide enough for asset|baseline|rule|subject

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 02:20:00

Since 0004 the key holds the baseline name too: 64 + 128 + 128 + 512 characters and three separators
reach 835, more than the 700 the column held (PostgreSQL refuses the longer value; SQLite never
enforced the length).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.alter_column("dedupe_key", existing_type=sa.String(length=700), type_=sa.String(length=1024),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.alter_column("dedupe_key", existing_type=sa.String(length=1024), type_=sa.String(length=700),
                              existing_nullable=False)
