"""Metric batches: the id of every batch of metric points written, so a retry is a no-op.

Revision ID: 0005_metric_batches
Revises: 0004_monitoring
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_metric_batches"
down_revision = "0004_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_batches",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("written_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metric_batches"),
    )


def downgrade() -> None:
    op.drop_table("metric_batches")
