"""Effects are claimed in place: a claim is a HOT update.

A runner's claim sets ``attempts`` and ``next_attempt_at`` on every effect of its pass
before calling a handler. While ``next_attempt_at`` (and ``id``) rode along in
``ix_effects_pending_resource``, each claim wrote a new row version plus an entry in each
of the table's five indexes; the effect's outcome (``status`` changes, which the partial
index names) writes another. Without them in the index, and with half
of each page left free for the claims' new versions, a claim changes no indexed column
and stays on its page: no index is touched. The runner's window query now reads
``next_attempt_at`` from the rows it was reading anyway (fresh rows are not yet
all-visible, so an index-only scan went to the heap for them too).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

pending = sa.text("status = 'pending'")
_IN_RESOURCE_ORDER = ["partition", "tenant_id", "type", "rid", "version", "position"]


def upgrade() -> None:
    op.drop_index("ix_effects_pending_resource", table_name="effects")
    op.create_index(
        "ix_effects_pending_resource",
        "effects",
        _IN_RESOURCE_ORDER,
        postgresql_where=pending,
        sqlite_where=pending,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE effects SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE effects RESET (fillfactor)")
    op.drop_index("ix_effects_pending_resource", table_name="effects")
    op.create_index(
        "ix_effects_pending_resource",
        "effects",
        [*_IN_RESOURCE_ORDER, "next_attempt_at", "id"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
