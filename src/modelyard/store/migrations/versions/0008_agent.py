"""Continuous training: the agent's actions, their events and the agent's lease.

Revision ID: 0008_agent
Revises: 0007_gates
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_agent"
down_revision = "0007_gates"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agent_actions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("in_flight", sa.String(255), nullable=True),
        sa.Column("incident_id", _BigId, nullable=True),
        sa.Column("incident_opened_us", sa.BigInteger(), nullable=True),
        sa.Column("rule", sa.String(128), nullable=True),
        sa.Column("champion_version", sa.Integer(), nullable=True),
        sa.Column("candidate_version", sa.Integer(), nullable=True),
        sa.Column("pipeline", sa.String(255), nullable=True),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("window_start_us", sa.BigInteger(), nullable=True),
        sa.Column("window_end_us", sa.BigInteger(), nullable=True),
        sa.Column("pipeline_run_id", sa.String(32), nullable=True),
        sa.Column("gate_evaluation_id", sa.String(32), nullable=True),
        sa.Column("canary_started_us", sa.BigInteger(), nullable=True),
        sa.Column("decision", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.Column("recorded_us", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_actions"),
        sa.UniqueConstraint("in_flight", name="uq_agent_actions_in_flight"),
        sa.UniqueConstraint(
            "incident_id",
            "incident_opened_us",
            name="uq_agent_actions_incident_id_incident_opened_us",
        ),
    )
    op.create_index("ix_agent_actions_model_created_us", "agent_actions", ["model", "created_us"])
    op.create_table(
        "agent_events",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("action_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("time_us", sa.BigInteger(), nullable=False),
        sa.Column("recorded_us", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["action_id"], ["agent_actions.id"], name="fk_agent_events_action_id_agent_actions"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_agent_events"),
        sa.UniqueConstraint("action_id", "kind", "key", name="uq_agent_events_action_id_kind_key"),
    )
    op.create_table(
        "agent_leases",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("acquired_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_agent_leases"),
    )


def downgrade() -> None:
    op.drop_table("agent_leases")
    op.drop_table("agent_events")
    op.drop_index("ix_agent_actions_model_created_us", table_name="agent_actions")
    op.drop_table("agent_actions")
