"""Host name lookups with a time bound, for callback URLs (at submit and at delivery).

``socket.getaddrinfo`` takes no timeout: an unresponsive name server can hold the caller
for as long as the system resolver keeps retrying. Here each lookup runs in a daemon
thread that the caller waits for at most ``timeout`` seconds; a lookup still running
then is left to end on its own (its thread holds nothing else) and the caller gets
``TimeoutError``. At most ``MAX_LOOKUPS_IN_FLIGHT`` such threads exist per process, so a
resolver that hangs for everyone cannot pile them up either.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable

from bulkapi.core.webhooks import IPAddress

#: Lookups one process runs at once; past it a lookup fails at once (as timed out).
MAX_LOOKUPS_IN_FLIGHT = 32

#: Looks a host name up: its addresses, or ``OSError`` (replaceable in tests).
Resolve = Callable[[str], list[IPAddress]]

_slots = threading.BoundedSemaphore(MAX_LOOKUPS_IN_FLIGHT)


def system_addresses(host: str) -> list[IPAddress]:
    """Every address the system resolver gives for ``host``, first seen first, without
    duplicates or IPv6 zone ids."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise OSError(f"{host} has no address")
    return found


def lookup(host: str, timeout: float, resolve: Resolve = system_addresses) -> list[IPAddress]:
    """``resolve(host)``, waited for at most ``timeout`` seconds (``TimeoutError`` then)."""
    if timeout <= 0:
        raise TimeoutError(f"no time left to look up {host}")
    if not _slots.acquire(blocking=False):
        raise TimeoutError(f"looking up {host}: {MAX_LOOKUPS_IN_FLIGHT} lookups already running")
    done = threading.Event()
    outcome: list[list[IPAddress] | Exception] = []

    def run() -> None:
        try:
            outcome.append(resolve(host))
        except Exception as error:  # handed to the caller below
            outcome.append(error)
        finally:
            _slots.release()
            done.set()

    threading.Thread(target=run, name=f"lookup {host}", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"looking up {host} took longer than {timeout:g} s")
    [result] = outcome
    if isinstance(result, Exception):
        raise result
    return result
