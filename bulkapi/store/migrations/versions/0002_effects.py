"""Side-effect outbox: one row per (change, effect), run after commit in per-key order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
timestamp = sa.DateTime(timezone=True)
pending = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "effects",
        sa.Column("id", row_id, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("rid", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.SmallInteger, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("partition", sa.SmallInteger, nullable=False),
        sa.Column("operation_id", sa.String(80), nullable=False),
        sa.Column("job_id", sa.String(40)),
        sa.Column("idx", sa.Integer),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("before", document),
        sa.Column("after", document),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", timestamp, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("finished_at", timestamp),
        sa.UniqueConstraint(
            "tenant_id", "type", "rid", "version", "position", name="uq_effects_change"
        ),
    )
    op.create_index(
        "ix_effects_pending_partition",
        "effects",
        ["partition", "next_attempt_at"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.create_index("ix_effects_job", "effects", ["job_id", "idx"])
    op.create_index("ix_effects_finished_at", "effects", ["finished_at"])


def downgrade() -> None:
    op.drop_table("effects")
