"""Pending effects indexed in per-resource order, so a partition's due effects are found
in one ordered scan.

Replaces ``ix_effects_pending_partition`` (partition, next_attempt_at): finding each
resource's earliest pending effect by its due time needed a per-row search for earlier
effects, which no index served. ``next_attempt_at`` and ``id`` ride along, so both the
runner's and the sweeper's query can read the index alone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

pending = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_effects_pending_resource",
        "effects",
        ["partition", "tenant_id", "type", "rid", "version", "position", "next_attempt_at", "id"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.drop_index("ix_effects_pending_partition", table_name="effects")


def downgrade() -> None:
    op.create_index(
        "ix_effects_pending_partition",
        "effects",
        ["partition", "next_attempt_at"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.drop_index("ix_effects_pending_resource", table_name="effects")
