"""Pending counts beside the rows they guard, retry times for crashed rules, cancel flags.

- ``resources.pending``: operations of the key accepted and not yet finished. A sync
  write may apply only at zero, and checks it on the row it locks, in the statement that
  writes (no second query that could miss an admission committed in between).
- ``resources.retry_at``: the key waits for a crashed rule's next attempt until then.
- ``operations.attempts``: attempts of the operation that ended in a crash.
- ``job_counts.pending``: a drain that takes a (job, partition) to zero is the one that
  may finish the job, so only it settles.
- ``jobs.cancelled_at``: cancel asked; drains cancel what a cancel could not reach.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    zero = sa.text("0")
    with op.batch_alter_table("resources") as table:
        table.add_column(sa.Column("pending", sa.Integer, nullable=False, server_default=zero))
        table.add_column(sa.Column("retry_at", timestamp))
    with op.batch_alter_table("operations") as table:
        table.add_column(
            sa.Column("attempts", sa.SmallInteger, nullable=False, server_default=zero)
        )
    with op.batch_alter_table("job_counts") as table:
        table.add_column(sa.Column("pending", sa.Integer, nullable=False, server_default=zero))
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("cancelled_at", timestamp))
    op.execute(
        """
        UPDATE resources SET pending = (
            SELECT count(*) FROM operations AS o
            WHERE o.status = 'pending' AND o.tenant_id = resources.tenant_id
              AND o.type = resources.type AND o.rid = resources.rid)
        WHERE EXISTS (
            SELECT 1 FROM operations AS o
            WHERE o.status = 'pending' AND o.tenant_id = resources.tenant_id
              AND o.type = resources.type AND o.rid = resources.rid)
        """
    )
    op.execute(
        """
        INSERT INTO job_counts (job_id, partition, succeeded, failed, cancelled, pending)
        SELECT DISTINCT o.job_id, o.partition, 0, 0, 0, 0 FROM operations AS o
        WHERE o.status = 'pending' AND NOT EXISTS (
            SELECT 1 FROM job_counts AS c
            WHERE c.job_id = o.job_id AND c.partition = o.partition)
        """
    )
    op.execute(
        """
        UPDATE job_counts SET pending = (
            SELECT count(*) FROM operations AS o
            WHERE o.status = 'pending' AND o.job_id = job_counts.job_id
              AND o.partition = job_counts.partition)
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.drop_column("cancelled_at")
    with op.batch_alter_table("job_counts") as table:
        table.drop_column("pending")
    with op.batch_alter_table("operations") as table:
        table.drop_column("attempts")
    with op.batch_alter_table("resources") as table:
        table.drop_column("retry_at")
        table.drop_column("pending")
