"""Fleet: the traffic policy of each served model in the metadata store, and its audit.

Revision ID: 0009_traffic
Revises: 0008_agent
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_traffic"
down_revision = "0008_agent"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "traffic_policies",
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("model", name="pk_traffic_policies"),
    )
    op.create_table(
        "traffic_audit",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("policy_from", sa.Text(), nullable=True),
        sa.Column("policy_to", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_traffic_audit"),
        sa.UniqueConstraint("model", "version", name="uq_traffic_audit_model_version"),
    )


def downgrade() -> None:
    op.drop_table("traffic_audit")
    op.drop_table("traffic_policies")
