"""One process's wiring: engine, broker, drain actor, wake-ups and (embedded) workers."""

from __future__ import annotations

import gc
import logging
from datetime import timedelta

import dramatiq
from sqlalchemy import Engine

from bulkapi.api.representations import job_body
from bulkapi.applier import Applier
from bulkapi.config import Settings
from bulkapi.core.plan import RetryPolicy
from bulkapi.dispatch.actors import WEBHOOKS_SHARD, declare_partition_actors
from bulkapi.dispatch.broker import build_broker, scheduled_flags
from bulkapi.dispatch.drainer import PartitionDrainer
from bulkapi.dispatch.effects import EffectRunner
from bulkapi.dispatch.lanes import Lane
from bulkapi.dispatch.sweeper import Sweeper
from bulkapi.dispatch.wakeups import Waker
from bulkapi.dispatch.webhooks import WebhookSender
from bulkapi.registry import load_registry
from bulkapi.store.database import make_engine
from bulkapi.writes import SyncWriter

logger = logging.getLogger(__name__)

#: Seconds an embedded worker gets to finish its current batch at shutdown.
EMBEDDED_STOP_TIMEOUT_MS = 30_000


def freeze_startup_objects() -> None:
    """Leave the objects made at startup (modules, the app, the registry) out of the
    cycle collector's passes from now on. They live as long as the process, and every
    full pass walked all of them: a drain or an admission makes thousands of objects a
    batch, so full passes came often, and they were a tenth of a drain's time."""
    gc.freeze()


class Runtime:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(
            settings.database_url, settings.db_pool_size, settings.db_sessions
        )
        self.broker = build_broker(settings)
        self.registry = load_registry(settings.types_module, strict=settings.strict_types)
        self.decide = Applier(self.registry, max_document_bytes=settings.max_document_bytes)
        self.rule_retries = RetryPolicy(attempts=settings.rule_attempts)
        self.writer = SyncWriter(
            self.engine,
            self.decide,
            self.rule_retries,
            settings.retry_after,
            settings.history_versions,
        )
        drainer = PartitionDrainer(
            self.engine,
            settings.batch_size,
            settings.drain_budget,
            self.decide,
            self.rule_retries,
            settings.history_versions,
        )
        effect_runner = EffectRunner(
            self.engine,
            self.registry,
            settings.effect_attempts,
            settings.effect_backoff,
            settings.drain_budget,
        )
        webhook_sender = WebhookSender(
            self.engine,
            job_body,
            settings.webhook_attempts,
            settings.webhook_backoff,
            settings.webhook_max_backoff,
            settings.webhook_timeout,
            settings.allow_private_callbacks,
            settings.drain_budget,
            connect_timeout=settings.webhook_connect_timeout,
        )
        self.actors = declare_partition_actors(
            self.broker,
            drainer,
            effect_runner.run,
            send_webhooks=webhook_sender.run,
            busy_retry_delay=settings.busy_retry_delay,
            flags=scheduled_flags(self.broker, settings),
            drain_group=settings.drain_group,
        )
        self.broker.add_middleware(
            Sweeper(
                self.engine,
                self.actors.lanes[Lane.REGULAR].send,
                self.actors.lanes[Lane.EFFECTS].send,
                settings.sweep_interval,
                timedelta(seconds=settings.retention_seconds),
                wake_webhooks=lambda: self.actors.lanes[Lane.WEBHOOKS].send(WEBHOOKS_SHARD),
            )
        )
        self.waker = Waker(self.actors.senders())
        self._worker: dramatiq.Worker | None = None
        self._booted = False

    def wake_webhook_sender(self) -> None:
        """A job ended with a callback to send: one shard's sender serves every tenant."""
        self.waker.wake([WEBHOOKS_SHARD], lane=Lane.WEBHOOKS)

    def start_embedded_worker(self) -> None:
        """Run the drain workers as threads of this process (no broker configured)."""
        if self._worker is not None:
            return
        if not self._booted:
            self.broker.emit_after("process_boot")  # TimeLimit and friends start here
            self._booted = True
        self._worker = dramatiq.Worker(
            self.broker, worker_threads=self.settings.embedded_worker_threads
        )
        self._worker.start()
        logger.info("embedded workers started (%s threads)", self.settings.embedded_worker_threads)

    def stop_embedded_worker(self) -> None:
        """Let the embedded workers finish their current batch, then stop them."""
        if self._worker is not None:
            self._worker.stop(timeout=EMBEDDED_STOP_TIMEOUT_MS)
            self._worker = None

    def stop(self) -> None:
        """Send outstanding wake-ups, let workers finish their batch, release connections."""
        self.waker.flush_and_stop()
        self.stop_embedded_worker()
        self.broker.close()
        self.engine.dispose()
