"""Callback host names looked up at submit, so that a name resolving to a
forbidden address is refused with 422 ``callback_url_forbidden``, as an IP literal is.

This is I/O, so it lives here at the edge and not in ``core/validation.py``. The lookup
is bounded (``BULKAPI_CALLBACK_LOOKUP_TIMEOUT``) and its answer kept for
``CACHE_SECONDS`` per process, so a burst of submits naming one receiver costs one
lookup. A name that cannot be resolved in time, or at all, is accepted: that is not a
forbidden target (the receiver's DNS may be down for a while), and every delivery
resolves and checks the name again anyway, which also catches an answer that changes
after submit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import current_app

from bulkapi.core.errors import CallbackUrlForbidden
from bulkapi.core.webhooks import IPAddress, forbidden_address, ip_literal
from bulkapi.resolver import Resolve, lookup, system_addresses

logger = logging.getLogger(__name__)

#: Seconds a lookup's answer (or its failure) is reused.
CACHE_SECONDS = 30.0
#: Names remembered at most; the cache starts afresh when full.
CACHE_ENTRIES = 4096


class CallbackLookups:
    """One process's lookups of callback hosts, each kept for ``CACHE_SECONDS``."""

    def __init__(
        self,
        timeout: float,
        resolve: Resolve = system_addresses,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Seconds one lookup may take; 0 turns the check off (deliveries still check).
        self.timeout = timeout
        self._resolve = resolve
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, list[IPAddress]]] = {}

    def addresses(self, host: str) -> list[IPAddress]:
        """What ``host`` resolves to; empty when that could not be told in time."""
        now = self._clock()
        with self._lock:
            known = self._known.get(host)
        if known is not None and now < known[0]:
            return known[1]
        try:
            found = lookup(host, self.timeout, self._resolve)
        except (OSError, ValueError) as error:  # not found, timed out, not a valid name
            logger.debug("callback host %s not resolved at submit: %s", host, error)
            found = []
        with self._lock:
            if len(self._known) >= CACHE_ENTRIES:
                self._known.clear()
            self._known[host] = (now + CACHE_SECONDS, found)
        return found

    def check(self, url: str | None, *, allow_private: bool) -> None:
        """Refuse a callback URL (already checked by ``check_callback_url``) whose host
        name resolves to any forbidden address."""
        if url is None or allow_private or self.timeout <= 0:
            return
        host = urlsplit(url).hostname
        if not host or ip_literal(host) is not None:  # literals were judged already
            return
        for address in self.addresses(host):
            reason = forbidden_address(address)
            if reason is not None:
                raise CallbackUrlForbidden(
                    "The callback URL targets an address webhooks may not reach.",
                    {"callback_url": [f"Must not resolve to a {reason} address."]},
                )


def callback_lookups() -> CallbackLookups:
    found: CallbackLookups = current_app.extensions["bulkapi.callbacks"]
    return found
