"""spool incarnations, sequence gaps, quarantined reports, sign-in throttling

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 04:30:00

Replay protection moves from (agent, sequence) to (agent, incarnation, sequence): an agent whose spool
was recreated restarts its sequences, and its new results must be stored, not refused as replays.
Rows stored before carry the empty incarnation, as do reports of agents that predate incarnations.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("incarnation", sa.String(length=32), nullable=False, server_default=""))
        batch_op.drop_constraint("uq_results_agent_sequence", type_="unique")
        batch_op.create_unique_constraint("uq_results_agent_incarnation_sequence",
                                          ["agent_id", "incarnation", "sequence"])
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("incarnation", sa.String(length=32), nullable=False, server_default=""))
    op.create_table(
        "agent_incarnations",
        sa.Column("agent_id", sa.String(length=64), sa.ForeignKey("agents.id"), primary_key=True),
        sa.Column("incarnation", sa.String(length=32), primary_key=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column("max_sequence", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("reports", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "sequence_gaps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(length=64), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("incarnation", sa.String(length=32), nullable=False),
        sa.Column("first", sa.BigInteger(), nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("filled", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_index("ix_sequence_gaps_agent_id", "sequence_gaps", ["agent_id"])
    op.create_table(
        "quarantined_reports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(length=64), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("incarnation", sa.String(length=32), nullable=False, server_default=""),
        sa.Column("sequence", sa.String(length=24), nullable=False),
        sa.Column("check_id", sa.String(length=32), nullable=False, server_default=""),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_quarantined_reports_agent_id", "quarantined_reports", ["agent_id"])
    op.create_table(
        "login_throttle",
        sa.Column("username", sa.String(length=128), primary_key=True),
        sa.Column("source", sa.String(length=255), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_login_throttle_last_at", "login_throttle", ["last_at"])


def downgrade() -> None:
    op.drop_index("ix_login_throttle_last_at", table_name="login_throttle")
    op.drop_table("login_throttle")
    op.drop_index("ix_quarantined_reports_agent_id", table_name="quarantined_reports")
    op.drop_table("quarantined_reports")
    op.drop_index("ix_sequence_gaps_agent_id", table_name="sequence_gaps")
    op.drop_table("sequence_gaps")
    op.drop_table("agent_incarnations")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("incarnation")
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_constraint("uq_results_agent_incarnation_sequence", type_="unique")
        batch_op.create_unique_constraint("uq_results_agent_sequence", ["agent_id", "sequence"])
        batch_op.drop_column("incarnation")
