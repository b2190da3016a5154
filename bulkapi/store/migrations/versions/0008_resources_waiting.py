"""Keys waiting for a crashed rule's retry, indexed on their own.

A drain skips the keys whose ``retry_at`` lies ahead. A partial index holds only the
keys that wait (almost always none), so finding them costs an index probe per batch
whatever the size of the tenant, and however stale the planner's statistics are.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_WAITING = sa.text("retry_at IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_resources_waiting",
        "resources",
        ["tenant_id"],
        postgresql_where=_WAITING,
        sqlite_where=_WAITING,
    )


def downgrade() -> None:
    op.drop_index("ix_resources_waiting", table_name="resources")
