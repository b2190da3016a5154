"""Operations keep their documents as text on PostgreSQL.

An operation's document is written once, when its job is admitted, and read once, by the
drain that applies it; nothing queries inside it. As ``jsonb`` every admitted operation
paid for a parse into the binary form (about a tenth of the ``COPY`` of a large job);
as text it is stored as sent, and decoded once, by the drain. SQLite stores JSON as
text already: nothing changes there.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "operations",
            "data",
            type_=sa.Text(),
            existing_type=postgresql.JSONB(),
            postgresql_using="data::text",
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "operations",
            "data",
            type_=postgresql.JSONB(),
            existing_type=sa.Text(),
            postgresql_using="data::jsonb",
        )
