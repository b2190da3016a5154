"""The schema. Migrations in ``migrations/`` must create exactly this."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

#: JSONB on PostgreSQL, JSON text elsewhere; Python None is SQL NULL (absent).
Document = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class _JsonText(TypeDecorator[Any]):
    """A JSON document stored as the text it came as, decoded only when read."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else orjson.loads(value)


#: An operation's document: written once by admission, read once by the drain that
#: applies it, never queried inside. PostgreSQL keeps it as text, so admission's
#: ``COPY`` does not build a ``jsonb`` value per operation; SQLite keeps JSON text anyway.
OperationDocument = JSON(none_as_null=True).with_variant(_JsonText(), "postgresql")
#: A 64-bit id that is still SQLite's rowid alias (so it autoincrements there).
RowId = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = DateTime(timezone=True)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("signing_secret", String(100), nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
    Column("revoked_at", Timestamp),
)

#: One row per key ever written. ``data`` NULL = absent (placeholder or tombstone);
#: ``admitted_seq`` is the per-key sequence handed to each accepted bulk operation,
#: ``pending`` how many of them are not finished yet (sync writes apply only at zero),
#: ``retry_at`` until when the key waits for a crashed rule's next attempt.
resources = Table(
    "resources",
    metadata,
    Column("tenant_id", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("rid", String(128), nullable=False),
    Column("version", Integer, nullable=False, server_default=text("0")),
    Column("admitted_seq", Integer, nullable=False),
    Column("pending", Integer, nullable=False, server_default=text("0")),
    Column("retry_at", Timestamp),
    Column("data", Document),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("tenant_id", "type", "rid"),
    Index(
        "ix_resources_waiting",
        "tenant_id",
        postgresql_where=text("retry_at IS NOT NULL"),
        sqlite_where=text("retry_at IS NOT NULL"),
    ),
)

#: Every applied version of a key, newest kept (``BULKAPI_HISTORY_VERSIONS`` per key):
#: which write made it (``job_id``/``idx`` for bulk, both NULL for a sync write), and when.
resource_history = Table(
    "resource_history",
    metadata,
    Column("tenant_id", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("rid", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("op", String(8), nullable=False),
    Column("job_id", String(40)),
    Column("idx", Integer),
    Column("applied_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("tenant_id", "type", "rid", "version"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("status", String(24), nullable=False),
    Column("total", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("started_at", Timestamp),
    Column("finished_at", Timestamp),
    Column("callback_url", Text),
    Column("meta", Document),
    Column("deadline", Timestamp),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64)),
    #: When a cancel was asked; drains cancel the operations it could not reach.
    Column("cancelled_at", Timestamp),
    #: The job whose failed and cancelled operations this one runs again, if any.
    Column("retry_of", String(40)),
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_idempotency"),
    Index("ix_jobs_tenant_id", "tenant_id", "id"),
    Index("ix_jobs_finished_at", "finished_at"),
    Index(
        "ix_jobs_open",
        "status",
        postgresql_where=text("status IN ('queued', 'processing')"),
        sqlite_where=text("status IN ('queued', 'processing')"),
    ),
    Index(
        "ix_jobs_retry_of",
        "retry_of",
        postgresql_where=text("retry_of IS NOT NULL"),
        sqlite_where=text("retry_of IS NOT NULL"),
    ),
)

#: Job-scoped read tokens (hashes): one per submit, and one more per idempotent replay.
status_tokens = Table(
    "status_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("job_id", String(40), nullable=False, index=True),
)

#: One row per status a job entered; the primary key makes each transition unique.
job_status_history = Table(
    "job_status_history",
    metadata,
    Column("job_id", String(40), nullable=False),
    Column("status", String(24), nullable=False),
    Column("at", Timestamp, nullable=False),
    PrimaryKeyConstraint("job_id", "status"),
)

#: Outcome counters per (job, partition): each drain touches only its own row, so
#: partitions never queue up behind one hot job row; readers add the rows up.
#: ``pending`` starts at the job's operations in the partition (written at admission):
#: the drain that takes it to zero is the one that may finish the job.
job_counts = Table(
    "job_counts",
    metadata,
    Column("job_id", String(40), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("succeeded", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("cancelled", Integer, nullable=False),
    Column("pending", Integer, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("job_id", "partition"),
)

_PENDING = text("status = 'pending'")

operations = Table(
    "operations",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("job_id", String(40), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("rid", String(128), nullable=False),
    Column("partition", SmallInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("op", String(8), nullable=False),
    Column("data", OperationDocument),
    Column("if_version", Integer),
    Column("status", String(10), nullable=False),
    #: Attempts that ended in a crash of operator code (retried after a backoff).
    Column("attempts", SmallInteger, nullable=False, server_default=text("0")),
    Column("version", Integer),
    Column("error_code", String(32)),
    Column("error_message", Text),
    Column("finished_at", Timestamp),
    UniqueConstraint("job_id", "idx", name="uq_operations_job_idx"),
    Index(
        "ix_operations_pending_partition",
        "partition",
        "tenant_id",
        "id",
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    ),
    Index(
        "ix_operations_pending_key",
        "tenant_id",
        "type",
        "rid",
        "seq",
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    ),
)

#: The side-effect outbox: one row per (change, effect), written in the transaction that
#: applied the change, run after commit in per-resource order (version, then position).
effects = Table(
    "effects",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("rid", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", SmallInteger, nullable=False),
    Column("name", String(64), nullable=False),
    Column("partition", SmallInteger, nullable=False),
    Column("operation_id", String(80), nullable=False),
    Column("job_id", String(40)),
    Column("idx", Integer),
    Column("op", String(8), nullable=False),
    Column("before", Document),
    Column("after", Document),
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Timestamp, nullable=False),
    Column("last_error", Text),
    Column("created_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp),
    UniqueConstraint("tenant_id", "type", "rid", "version", "position", name="uq_effects_change"),
    # A partition's pending effects in per-resource order: the runner and the sweeper find
    # each resource's due effects in one ordered scan. No index names what a claim sets
    # (attempts, next_attempt_at), and half of each page is kept free, so a claim is a
    # HOT update on PostgreSQL: the row's new version stays on its page, no index entry.
    Index(
        "ix_effects_pending_resource",
        "partition",
        "tenant_id",
        "type",
        "rid",
        "version",
        "position",
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    ),
    Index("ix_effects_job", "job_id", "idx"),
    Index("ix_effects_finished_at", "finished_at"),
    postgresql_with={"fillfactor": 50},
)

#: The webhook outbox: one row per job that finished with a ``callback_url``, written in
#: the transaction that made the job terminal. ``id`` is the ``webhook-id`` header, the
#: same on every attempt; ``payload`` is the job representation, fixed at the first attempt.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(40), nullable=False, unique=True),
    Column("tenant_id", String(40), nullable=False),
    Column("url", Text, nullable=False),
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Timestamp, nullable=False),
    Column("payload", Text),
    Column("created_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp),
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    ),
)

#: Every delivery attempt, recorded when it is claimed (before the request) and
#: completed with its outcome; ``status_code`` NULL = no answer.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("delivery_id", String(40), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", Timestamp, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer),
    PrimaryKeyConstraint("delivery_id", "attempt"),
)
