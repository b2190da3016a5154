"""Settings: the only place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from bulkapi.core.rates import Rate, parse_rate
from bulkapi.core.validation import AdmissionLimits

T = TypeVar("T", int, float)


def _parsed(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = env.get(name, "")
    try:
        return default if raw == "" else parse(raw)
    except ValueError:
        kind = "an integer" if parse is int else "a number"
        raise ValueError(f"{name} must be {kind}, not {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return _parsed(env, name, default, int)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return _parsed(env, name, default, float)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0 (true/false), not {raw!r}")


#: A document as sent may be this many times its serialized limit ...
_WIRE_FACTOR = 6
#: ... plus this many bytes of white space around it.
_WIRE_SLACK = 4096
#: Partitions are stored in a 16-bit column.
MAX_PARTITIONS = 32767


@dataclass(frozen=True)
class SessionLimits:
    """Time limits every PostgreSQL session gets, so a host that vanishes or freezes
    loses what it holds (its transaction, the partition locks in it) within a bound.

    Seconds; 0 turns a limit off.
    """

    #: A transaction left idle this long is ended by the server (its locks go with it).
    idle_in_transaction: float = 10.0
    #: Data unacknowledged, or an idle peer silent, this long: the TCP connection is dead.
    dead_peer: float = 10.0
    #: Longest one statement waits for a row or advisory lock (then 503, or a retried drain).
    lock_wait: float = 5.0
    #: Longest one statement may run (0: no limit).
    statement: float = 0.0
    #: Longest a new connection may take to be established.
    connect: float = 5.0

    def __post_init__(self) -> None:
        if min(self.idle_in_transaction, self.dead_peer, self.lock_wait, self.statement) < 0:
            raise ValueError("BULKAPI_DB_* timeouts must be >= 0")
        if self.connect < 0:
            raise ValueError("BULKAPI_DB_CONNECT_TIMEOUT must be >= 0")


@dataclass(frozen=True)
class Settings:
    #: SQLAlchemy URL of the record of truth.
    database_url: str = "sqlite:///bulkapi.db"
    #: ``redis://…`` for Dramatiq on Redis; None runs workers inside the API process.
    broker_url: str | None = None
    #: Prefix of every Redis key the broker writes, so deployments can share a Redis.
    broker_namespace: str = "bulkapi"
    #: Seconds any Redis connect or command may take before it counts as failed.
    redis_timeout: float = 5.0
    #: Number of partitions; bounds drain parallelism. Change only while nothing is pending.
    partitions: int = 64
    #: Operations applied per drain transaction.
    batch_size: int = 500
    #: Versions of each resource kept in its history (newest first).
    history_versions: int = 100
    #: Seconds one drain message may keep a partition before yielding to others.
    drain_budget: float = 2.0
    #: Seconds between sweeps that re-send wake-ups for pending work and settle jobs.
    sweep_interval: float = 5.0
    #: Jobs with at most this many operations are woken on the prompt lane (fairness).
    prompt_job_operations: int = 1000
    #: Partitions one prompt-lane wake-up names, drained together in shared batches.
    drain_group: int = 8
    #: Seconds a wake-up waits before retrying a partition another worker holds.
    busy_retry_delay: float = 0.25
    max_operations: int = 100_000
    max_body_bytes: int = 64 * 1024 * 1024
    max_document_bytes: int = 64 * 1024
    #: Seconds a request body may take to arrive in full (slow uploads get 408).
    body_timeout: float = 30.0
    #: Seconds a client may take no part of an answer (its socket buffers full) before
    #: the connection is cut: a reader that stops reading holds a thread no longer.
    send_timeout: float = 15.0
    #: Bytes the kernel may buffer for one connection's answers (0: its own autotuning,
    #: up to megabytes). Small, a reader that stops stops the answer early and cheaply.
    send_buffer: int = 256 * 1024
    #: Seconds a request line and its headers may take to arrive (slower: 408, closed).
    header_timeout: float = 10.0
    #: Deepest nesting of objects and arrays a document may have.
    max_document_depth: int = 32
    #: Worker threads inside `bulkapi serve` when no broker is configured.
    embedded_worker_threads: int = 2
    #: SQLAlchemy pool size per process (raise with worker threads).
    db_pool_size: int = 10
    #: Session time limits on every PostgreSQL connection (they bound takeover).
    db_sessions: SessionLimits = SessionLimits()
    #: Seconds a client is told to wait (Retry-After) before polling a job or retrying a busy key.
    retry_after: int = 1
    #: gunicorn worker processes behind `bulkapi serve` (0: 1 embedded, 2 with a broker).
    web_processes: int = 0
    #: Threads per gunicorn process (long polls hold one each).
    web_threads: int = 16
    #: Requests per API process that may wait (long polls, event streams, ``Prefer:
    #: wait``), a tenant at most half of them; others answer at once. Keep it below
    #: ``web_threads`` so waiting clients always leave threads for everything else.
    max_waiting_requests: int = 8
    #: Seconds an API process remembers a valid key (a revocation takes this long at most).
    credential_cache_seconds: float = 5.0
    #: Requests per tenant per window, such as "200/second" or "10000 per minute" (empty: no limit).
    rate_limit: str = "1000/second"
    #: Seconds between two exchanges of an API process's rate counts with the fleet's (Redis).
    rate_sync_interval: float = 0.1
    #: Operations a tenant may have waiting before new bulk requests get 429.
    max_pending_operations: int = 2_000_000
    #: Seconds finished jobs and their per-operation results are kept (resources: forever).
    retention_seconds: int = 7 * 24 * 3600
    #: Dotted path of the operator's resource types module (``TYPES = [...]``).
    types_module: str | None = None
    #: Attempts a crashing business rule gets before its write fails (apply_failed).
    rule_attempts: int = 3
    #: Refuse writes to types the types module does not register (422 unknown_type).
    strict_types: bool = False
    #: Attempts a side effect gets before it is marked failed (the write stays).
    effect_attempts: int = 5
    #: Seconds before a failed side effect's first retry; doubles on every further one.
    effect_backoff: float = 1.0
    #: Attempts a webhook delivery gets before it is marked failed.
    webhook_attempts: int = 8
    #: Seconds before a failed delivery's first retry; doubles on every further one (±25 %).
    webhook_backoff: float = 5.0
    #: Longest wait between two delivery attempts, in seconds.
    webhook_max_backoff: float = 1800.0
    #: Seconds one delivery attempt may take in all: lookup, connect, TLS, request, answer.
    webhook_timeout: float = 10.0
    #: Seconds a receiver gets to accept the connection (within ``webhook_timeout``).
    webhook_connect_timeout: float = 3.0
    #: Seconds a submit may spend resolving its callback host (0: not resolved at submit).
    callback_lookup_timeout: float = 2.0
    #: Let callback URLs target loopback, private, link-local and other non-global
    #: addresses (refused with 422 callback_url_forbidden otherwise).
    allow_private_callbacks: bool = False
    #: Fault injection for recovery tests only: the API process dies right after
    #: committing an admission, before its wake-ups are sent.
    fault_crash_after_commit: bool = False
    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def serving_processes(self) -> int:
        """SQLite has one writer: embedded mode serves from one process."""
        if self.web_processes > 0:
            return self.web_processes
        return 1 if self.embedded else 2

    @property
    def rate(self) -> Rate | None:
        return parse_rate(self.rate_limit)

    @property
    def max_document_wire_bytes(self) -> int:
        """Longest a document may be as sent: clients escape non-ASCII characters
        (``\\u00e9`` is 6 bytes for 2) and indent, and the limit that counts is checked
        on the document re-serialized."""
        return _WIRE_FACTOR * self.max_document_bytes + _WIRE_SLACK

    @property
    def admission_limits(self) -> AdmissionLimits:
        return AdmissionLimits(
            self.max_operations, self.max_document_bytes, self.max_document_depth
        )

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ValueError(f"BULKAPI_PARTITIONS must be between 1 and {MAX_PARTITIONS}")
        if (
            min(
                self.batch_size,
                self.rule_attempts,
                self.effect_attempts,
                self.max_operations,
                self.history_versions,
            )
            < 1
        ):
            raise ValueError(
                "batch size, rule attempts, effect attempts, max operations and history"
                " versions must be >= 1"
            )
        if self.drain_group < 1:
            raise ValueError("BULKAPI_DRAIN_GROUP must be >= 1")
        if self.max_waiting_requests < 0:
            raise ValueError("BULKAPI_MAX_WAITING_REQUESTS must be >= 0")
        if self.redis_timeout <= 0:
            raise ValueError("BULKAPI_REDIS_TIMEOUT must be > 0")
        if self.effect_backoff < 0:
            raise ValueError("BULKAPI_EFFECT_BACKOFF must be >= 0")
        if min(self.body_timeout, self.header_timeout) <= 0:
            raise ValueError("BULKAPI_BODY_TIMEOUT and BULKAPI_HEADER_TIMEOUT must be > 0")
        if self.send_timeout <= 0:
            raise ValueError("BULKAPI_SEND_TIMEOUT must be > 0")
        if self.send_buffer < 0:
            raise ValueError("BULKAPI_SEND_BUFFER must be >= 0")
        if self.webhook_attempts < 1:
            raise ValueError("BULKAPI_WEBHOOK_ATTEMPTS must be >= 1")
        if min(self.webhook_backoff, self.webhook_max_backoff) < 0:
            raise ValueError("BULKAPI_WEBHOOK_BACKOFF and _MAX_BACKOFF must be >= 0")
        if min(self.webhook_timeout, self.webhook_connect_timeout) <= 0:
            raise ValueError("BULKAPI_WEBHOOK_TIMEOUT and _CONNECT_TIMEOUT must be > 0")
        if self.callback_lookup_timeout < 0:
            raise ValueError("BULKAPI_CALLBACK_LOOKUP_TIMEOUT must be >= 0")
        if self.rate_sync_interval <= 0:
            raise ValueError("BULKAPI_RATE_SYNC_INTERVAL must be > 0")
        parse_rate(self.rate_limit)  # a misspelt rate stops the process at start

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            database_url=env.get("BULKAPI_DATABASE_URL") or defaults.database_url,
            broker_url=env.get("BULKAPI_BROKER_URL") or None,
            broker_namespace=env.get("BULKAPI_BROKER_NAMESPACE") or defaults.broker_namespace,
            redis_timeout=_float(env, "BULKAPI_REDIS_TIMEOUT", defaults.redis_timeout),
            partitions=_int(env, "BULKAPI_PARTITIONS", defaults.partitions),
            batch_size=_int(env, "BULKAPI_BATCH_SIZE", defaults.batch_size),
            history_versions=_int(env, "BULKAPI_HISTORY_VERSIONS", defaults.history_versions),
            drain_budget=_float(env, "BULKAPI_DRAIN_BUDGET", defaults.drain_budget),
            sweep_interval=_float(env, "BULKAPI_SWEEP_INTERVAL", defaults.sweep_interval),
            prompt_job_operations=_int(
                env, "BULKAPI_PROMPT_JOB_OPERATIONS", defaults.prompt_job_operations
            ),
            drain_group=_int(env, "BULKAPI_DRAIN_GROUP", defaults.drain_group),
            busy_retry_delay=_float(env, "BULKAPI_BUSY_RETRY_DELAY", defaults.busy_retry_delay),
            max_operations=_int(env, "BULKAPI_MAX_OPERATIONS", defaults.max_operations),
            max_body_bytes=_int(env, "BULKAPI_MAX_BODY_BYTES", defaults.max_body_bytes),
            max_document_bytes=_int(env, "BULKAPI_MAX_DOCUMENT_BYTES", defaults.max_document_bytes),
            body_timeout=_float(env, "BULKAPI_BODY_TIMEOUT", defaults.body_timeout),
            header_timeout=_float(env, "BULKAPI_HEADER_TIMEOUT", defaults.header_timeout),
            send_timeout=_float(env, "BULKAPI_SEND_TIMEOUT", defaults.send_timeout),
            send_buffer=_int(env, "BULKAPI_SEND_BUFFER", defaults.send_buffer),
            max_document_depth=_int(env, "BULKAPI_MAX_DOCUMENT_DEPTH", defaults.max_document_depth),
            embedded_worker_threads=_int(
                env, "BULKAPI_EMBEDDED_WORKER_THREADS", defaults.embedded_worker_threads
            ),
            db_pool_size=_int(env, "BULKAPI_DB_POOL_SIZE", defaults.db_pool_size),
            db_sessions=_session_limits(env, defaults.db_sessions),
            retry_after=_int(env, "BULKAPI_RETRY_AFTER", defaults.retry_after),
            web_processes=_int(env, "BULKAPI_WEB_PROCESSES", defaults.web_processes),
            web_threads=_int(env, "BULKAPI_WEB_THREADS", defaults.web_threads),
            max_waiting_requests=_int(
                env, "BULKAPI_MAX_WAITING_REQUESTS", defaults.max_waiting_requests
            ),
            credential_cache_seconds=_float(
                env, "BULKAPI_CREDENTIAL_CACHE_SECONDS", defaults.credential_cache_seconds
            ),
            rate_limit=env.get("BULKAPI_RATE_LIMIT", defaults.rate_limit),
            rate_sync_interval=_float(
                env, "BULKAPI_RATE_SYNC_INTERVAL", defaults.rate_sync_interval
            ),
            max_pending_operations=_int(
                env, "BULKAPI_MAX_PENDING_OPERATIONS", defaults.max_pending_operations
            ),
            retention_seconds=_int(env, "BULKAPI_RETENTION_SECONDS", defaults.retention_seconds),
            types_module=env.get("BULKAPI_TYPES") or None,
            rule_attempts=_int(env, "BULKAPI_RULE_ATTEMPTS", defaults.rule_attempts),
            strict_types=_bool(env, "BULKAPI_STRICT_TYPES", defaults.strict_types),
            effect_attempts=_int(env, "BULKAPI_EFFECT_ATTEMPTS", defaults.effect_attempts),
            effect_backoff=_float(env, "BULKAPI_EFFECT_BACKOFF", defaults.effect_backoff),
            webhook_attempts=_int(env, "BULKAPI_WEBHOOK_ATTEMPTS", defaults.webhook_attempts),
            webhook_backoff=_float(env, "BULKAPI_WEBHOOK_BACKOFF", defaults.webhook_backoff),
            webhook_max_backoff=_float(
                env, "BULKAPI_WEBHOOK_MAX_BACKOFF", defaults.webhook_max_backoff
            ),
            webhook_timeout=_float(env, "BULKAPI_WEBHOOK_TIMEOUT", defaults.webhook_timeout),
            webhook_connect_timeout=_float(
                env, "BULKAPI_WEBHOOK_CONNECT_TIMEOUT", defaults.webhook_connect_timeout
            ),
            callback_lookup_timeout=_float(
                env, "BULKAPI_CALLBACK_LOOKUP_TIMEOUT", defaults.callback_lookup_timeout
            ),
            allow_private_callbacks=_bool(
                env, "BULKAPI_ALLOW_PRIVATE_CALLBACKS", defaults.allow_private_callbacks
            ),
            fault_crash_after_commit=env.get("BULKAPI_FAULT_CRASH_AFTER_COMMIT") == "1",
            api_url=env.get("BULKAPI_API_URL") or defaults.api_url,
            api_key=env.get("BULKAPI_API_KEY") or None,
        )


def _session_limits(env: Mapping[str, str], defaults: SessionLimits) -> SessionLimits:
    return SessionLimits(
        idle_in_transaction=_float(
            env, "BULKAPI_DB_IDLE_IN_TRANSACTION_TIMEOUT", defaults.idle_in_transaction
        ),
        dead_peer=_float(env, "BULKAPI_DB_DEAD_PEER_TIMEOUT", defaults.dead_peer),
        lock_wait=_float(env, "BULKAPI_DB_LOCK_TIMEOUT", defaults.lock_wait),
        statement=_float(env, "BULKAPI_DB_STATEMENT_TIMEOUT", defaults.statement),
        connect=_float(env, "BULKAPI_DB_CONNECT_TIMEOUT", defaults.connect),
    )
