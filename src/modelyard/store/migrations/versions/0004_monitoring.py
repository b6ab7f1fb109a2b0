"""Monitoring: results per window (drift, performance) and alert incidents.

Revision ID: 0004_monitoring
Revises: 0003_features
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_monitoring"
down_revision = "0003_features"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "monitor_windows",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("alarm", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("computed_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_monitor_windows"),
        sa.UniqueConstraint(
            "model",
            "version",
            "kind",
            "window_start",
            "window_end",
            name="uq_monitor_windows_model_version_kind_window_start_window_end",
        ),
    )
    op.create_index(
        "ix_monitor_windows_model_version_kind_window_end",
        "monitor_windows",
        ["model", "version", "kind", "window_end"],
    )
    op.create_table(
        "monitor_incidents",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("cause", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_monitor_incidents"),
        sa.UniqueConstraint(
            "model",
            "version",
            "rule",
            "cause",
            name="uq_monitor_incidents_model_version_rule_cause",
        ),
    )


def downgrade() -> None:
    op.drop_table("monitor_incidents")
    op.drop_index("ix_monitor_windows_model_version_kind_window_end", "monitor_windows")
    op.drop_table("monitor_windows")
