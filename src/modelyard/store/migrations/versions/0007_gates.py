"""Promotion gates: every gate evaluation of a model version and each gate's result.

Revision ID: 0007_gates
Revises: 0006_pipelines
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_gates"
down_revision = "0006_pipelines"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gate_evaluations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("against", sa.String(64), nullable=False),
        sa.Column("champion_version", sa.Integer(), nullable=True),
        sa.Column("eval_digest", sa.String(64), nullable=False),
        sa.Column("config_digest", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gate_evaluations"),
    )
    op.create_index(
        "ix_gate_evaluations_model_version_against_created_at",
        "gate_evaluations",
        ["model", "version", "against", "created_at"],
    )
    op.create_table(
        "gate_results",
        sa.Column("evaluation_id", sa.String(32), nullable=False),
        sa.Column("gate", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("numbers", sa.Text(), nullable=False),
        sa.Column("ci_low", sa.Float(), nullable=True),
        sa.Column("ci_high", sa.Float(), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["evaluation_id"],
            ["gate_evaluations.id"],
            name="fk_gate_results_evaluation_id_gate_evaluations",
        ),
        sa.PrimaryKeyConstraint("evaluation_id", "gate", name="pk_gate_results"),
    )


def downgrade() -> None:
    op.drop_table("gate_results")
    op.drop_index(
        "ix_gate_evaluations_model_version_against_created_at", table_name="gate_evaluations"
    )
    op.drop_table("gate_evaluations")
