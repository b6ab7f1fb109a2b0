"""Alembic environment: migrations run on the connection modelyard hands over.

For developers, ``alembic -c alembic.ini revision --autogenerate -m "..."`` writes a
new revision against the database in ``MODELYARD_DB_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from modelyard.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    engine = create_engine(os.environ.get("MODELYARD_DB_URL", "sqlite:///alembic-dev.db"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
