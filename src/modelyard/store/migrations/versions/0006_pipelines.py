"""Training pipelines: pipeline runs, their steps, outputs, inputs (lineage) and the cache.

Revision ID: 0006_pipelines
Revises: 0005_metric_batches
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_pipelines"
down_revision = "0005_metric_batches"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("module", sa.String(255), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resumed_from", sa.String(32), nullable=True),
        sa.Column("executor", sa.String(32), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_pipeline_runs_run_id_runs"),
        sa.PrimaryKeyConstraint("run_id", name="pk_pipeline_runs"),
    )
    op.create_index(
        "ix_pipeline_runs_pipeline_started_at", "pipeline_runs", ["pipeline", "started_at"]
    )
    op.create_table(
        "pipeline_steps",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("pipeline_run_id", sa.String(32), nullable=False),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("function", sa.String(512), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=True),
        sa.Column("source_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cached_from", sa.String(32), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("logs_sha256", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_pipeline_steps_run_id_runs"),
        sa.ForeignKeyConstraint(
            ["pipeline_run_id"], ["runs.id"], name="fk_pipeline_steps_pipeline_run_id_runs"
        ),
        sa.PrimaryKeyConstraint("run_id", name="pk_pipeline_steps"),
        sa.UniqueConstraint(
            "pipeline_run_id", "step", name="uq_pipeline_steps_pipeline_run_id_step"
        ),
    )
    op.create_index("ix_pipeline_steps_cache_key", "pipeline_steps", ["cache_key"])
    op.create_table(
        "pipeline_outputs",
        sa.Column("step_run_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("type", sa.String(512), nullable=False),
        sa.Column("materializer", sa.String(128), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["step_run_id"], ["runs.id"], name="fk_pipeline_outputs_step_run_id_runs"
        ),
        sa.PrimaryKeyConstraint("step_run_id", "name", name="pk_pipeline_outputs"),
    )
    op.create_index("ix_pipeline_outputs_digest", "pipeline_outputs", ["digest"])
    op.create_table(
        "pipeline_inputs",
        sa.Column("step_run_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source_step_run_id", sa.String(32), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["step_run_id"], ["runs.id"], name="fk_pipeline_inputs_step_run_id_runs"
        ),
        sa.PrimaryKeyConstraint("step_run_id", "name", name="pk_pipeline_inputs"),
    )
    op.create_index("ix_pipeline_inputs_digest", "pipeline_inputs", ["digest"])
    op.create_table(
        "step_cache",
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("step_run_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["step_run_id"], ["runs.id"], name="fk_step_cache_step_run_id_runs"
        ),
        sa.PrimaryKeyConstraint("cache_key", name="pk_step_cache"),
    )


def downgrade() -> None:
    op.drop_table("step_cache")
    op.drop_index("ix_pipeline_inputs_digest", table_name="pipeline_inputs")
    op.drop_table("pipeline_inputs")
    op.drop_index("ix_pipeline_outputs_digest", table_name="pipeline_outputs")
    op.drop_table("pipeline_outputs")
    op.drop_index("ix_pipeline_steps_cache_key", table_name="pipeline_steps")
    op.drop_table("pipeline_steps")
    op.drop_index("ix_pipeline_runs_pipeline_started_at", table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
