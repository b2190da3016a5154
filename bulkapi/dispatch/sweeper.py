"""The sweeper: heals lost wake-ups and unsettled jobs, at start and then periodically.

Messages are only wake-ups; the database is the queue of record. A message lost to a
crash between commit and send, a Redis restart or a killed worker is made good here
within one sweep interval, and a job whose last batch committed but whose settle step
did not run is settled here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import dramatiq
from sqlalchemy import Engine

from bulkapi.store.database import utcnow
from bulkapi.store.effect_runs import due_partitions
from bulkapi.store.effects import purge_finished_effects
from bulkapi.store.jobs import open_job_ids, pending_partitions, purge_finished, settle
from bulkapi.store.webhooks import any_due

logger = logging.getLogger(__name__)

#: Jobs settled per statement when the sweeper catches up.
SETTLE_CHUNK = 500
#: Expired jobs purged per sweep (bounded, so a sweep stays short); effects: ten times it.
PURGE_CHUNK = 200


def sweep_once(
    engine: Engine,
    wake: Callable[[int], Any],
    wake_effects: Callable[[int], Any],
    retention: timedelta,
    wake_webhooks: Callable[[], Any] = lambda: None,
) -> int:
    """Wake every partition with pending work or due side effects (retries come due
    here), and the webhook lane if a delivery is due (retries, lost wake-ups); settle
    open jobs, purge expired ones.

    Returns how many partitions were woken for pending operations.
    """
    with engine.begin() as conn:
        partitions = pending_partitions(conn)
        effect_partitions = due_partitions(conn, utcnow())
        job_ids = open_job_ids(conn)
        webhooks_due = any_due(conn, utcnow())
    for partition in partitions:
        wake(partition)
    for partition in effect_partitions:
        wake_effects(partition)
    for start in range(0, len(job_ids), SETTLE_CHUNK):
        with engine.begin() as conn:
            settled = settle(conn, job_ids[start : start + SETTLE_CHUNK], utcnow())
        webhooks_due = webhooks_due or settled.webhooks > 0
    if webhooks_due:
        wake_webhooks()
    with engine.begin() as conn:
        purge_finished(conn, utcnow() - retention, PURGE_CHUNK)
        purge_finished_effects(conn, utcnow() - retention, PURGE_CHUNK * 10)
    return len(partitions)


class Sweeper(dramatiq.Middleware):
    """Runs the sweep in a thread of every worker process, from boot to shutdown."""

    def __init__(
        self,
        engine: Engine,
        wake: Callable[[int], Any],
        wake_effects: Callable[[int], Any],
        interval: float,
        retention: timedelta,
        *,
        wake_webhooks: Callable[[], Any] = lambda: None,
    ) -> None:
        self.engine = engine
        self.wake = wake
        self.wake_effects = wake_effects
        self.wake_webhooks = wake_webhooks
        self.interval = interval
        self.retention = retention
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bulkapi-sweeper", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            try:
                sweep_once(
                    self.engine, self.wake, self.wake_effects, self.retention, self.wake_webhooks
                )
            except Exception:
                logger.exception("sweep failed; trying again in %ss", self.interval)
            if self._stop.wait(self.interval):
                return
