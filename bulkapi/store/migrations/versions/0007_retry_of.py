"""Retries of jobs: ``jobs.retry_of`` names the job a retry runs again.

A partial index finds a job's retries (``retried_by``) without indexing the many jobs
that are no retry.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_IS_RETRY = sa.text("retry_of IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("retry_of", sa.String(40)))
    op.create_index(
        "ix_jobs_retry_of",
        "jobs",
        ["retry_of"],
        postgresql_where=_IS_RETRY,
        sqlite_where=_IS_RETRY,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_retry_of", table_name="jobs")
    with op.batch_alter_table("jobs") as table:
        table.drop_column("retry_of")
