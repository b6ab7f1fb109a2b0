"""Feature definitions (content-hashed, versioned) and the materialization log.

Revision ID: 0003_features
Revises: 0002_registry
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_features"
down_revision = "0002_registry"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "feature_definitions",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", "version", name="pk_feature_definitions"),
    )
    op.create_index("ix_feature_definitions_kind_active", "feature_definitions", ["kind", "active"])
    op.create_table(
        "materializations",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("view", sa.String(128), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=True),
        sa.Column("end", sa.BigInteger(), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_materializations"),
    )
    op.create_index("ix_materializations_view_id", "materializations", ["view", "id"])


def downgrade() -> None:
    op.drop_table("materializations")
    op.drop_table("feature_definitions")
