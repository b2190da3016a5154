"""Initial schema: tenants, keys, resources, jobs and operations.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
timestamp = sa.DateTime(timezone=True)
pending = sa.text("status = 'pending'")
open_status = sa.text("status IN ('queued', 'processing')")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("signing_secret", sa.String(100), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("revoked_at", timestamp),
    )
    op.create_table(
        "resources",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("rid", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("admitted_seq", sa.Integer, nullable=False),
        sa.Column("data", document),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "type", "rid"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("started_at", timestamp),
        sa.Column("finished_at", timestamp),
        sa.Column("callback_url", sa.Text),
        sa.Column("meta", document),
        sa.Column("deadline", timestamp),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("request_hash", sa.String(64)),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_idempotency"),
    )
    op.create_index("ix_jobs_tenant_id", "jobs", ["tenant_id", "id"])
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])
    op.create_table(
        "status_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(40), nullable=False),
    )
    op.create_index("ix_status_tokens_job_id", "status_tokens", ["job_id"])
    op.create_index(
        "ix_jobs_open",
        "jobs",
        ["status"],
        postgresql_where=open_status,
        sqlite_where=open_status,
    )
    op.create_table(
        "job_status_history",
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("at", timestamp, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "status"),
    )
    op.create_table(
        "job_counts",
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("succeeded", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("cancelled", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "partition"),
    )
    op.create_table(
        "operations",
        sa.Column("id", row_id, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("rid", sa.String(128), nullable=False),
        sa.Column("partition", sa.SmallInteger, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("data", document),
        sa.Column("if_version", sa.Integer),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("error_code", sa.String(32)),
        sa.Column("error_message", sa.Text),
        sa.Column("finished_at", timestamp),
        sa.UniqueConstraint("job_id", "idx", name="uq_operations_job_idx"),
    )
    op.create_index(
        "ix_operations_pending_partition",
        "operations",
        ["partition", "tenant_id", "id"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.create_index(
        "ix_operations_pending_key",
        "operations",
        ["tenant_id", "type", "rid", "seq"],
        postgresql_where=pending,
        sqlite_where=pending,
    )


def downgrade() -> None:
    for table in (
        "operations",
        "job_counts",
        "job_status_history",
        "status_tokens",
        "jobs",
        "resources",
        "api_keys",
        "tenants",
    ):
        op.drop_table(table)
