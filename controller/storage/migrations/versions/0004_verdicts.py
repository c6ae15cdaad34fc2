"""unknown verdicts, findings and tickets keyed by baseline, when each task last reported

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 01:30:00

- findings: the unique key becomes (asset, baseline, rule_id, subject), so two baselines that share a
  rule id keep separate findings; ``status`` may now be ``unknown`` (the column already fits it).
- tickets: ``dedupe_key`` becomes ``asset|baseline|rule_id|subject``; existing keys are rewritten from
  the ticket's own columns, so every open ticket keeps its history and is found again by ingest.
- agents.last_results: task id -> when its last result arrived (liveness judges silent tasks unknown).
- compliance_snapshots.findings_unknown: how many findings could not be judged (NULL before this).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.drop_constraint("uq_findings_key", type_="unique")
        batch_op.create_unique_constraint("uq_findings_key", ["asset", "baseline", "rule_id", "subject"])

    op.execute(
        "UPDATE tickets SET dedupe_key = asset || '|' || baseline || '|' || rule_id || '|' || subject"
    )

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_results", sa.JSON(), nullable=False, server_default="{}"))

    with op.batch_alter_table("compliance_snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("findings_unknown", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("compliance_snapshots", schema=None) as batch_op:
        batch_op.drop_column("findings_unknown")

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("last_results")

    # The old key cannot hold one rule id judged by two baselines: refuse rather than drop history.
    bind = op.get_bind()
    for table in ("findings", "tickets"):
        shared = bind.execute(sa.text(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} GROUP BY asset, rule_id, subject HAVING COUNT(*) > 1) AS d"
        )).scalar_one()
        if shared:
            raise RuntimeError(f"cannot downgrade below 0004: {shared} {table} keys are shared by two baselines")
    op.execute("UPDATE findings SET status = 'fail' WHERE status = 'unknown'")
    op.execute("UPDATE tickets SET dedupe_key = asset || '|' || rule_id || '|' || subject")
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.drop_constraint("uq_findings_key", type_="unique")
        batch_op.create_unique_constraint("uq_findings_key", ["asset", "rule_id", "subject"])
