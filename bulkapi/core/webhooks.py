"""Webhooks without I/O: Standard Webhooks signing, retry delays, which targets are refused.

Signing follows https://www.standardwebhooks.com: the signed content is
``"{webhook-id}.{webhook-timestamp}.{body}"``, the key is the base64-decoded part of the
tenant's secret after ``whsec_``, and the signature header is ``v1,<base64 HMAC-SHA256>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from enum import StrEnum

#: Prefix of every signing secret (Standard Webhooks' convention).
SECRET_PREFIX = "whsec_"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: the base64 after the prefix, decoded.

    New secrets are standard base64 (what Standard Webhooks libraries expect); secrets
    made before that are URL-safe base64 without padding, so both alphabets are accepted
    and missing padding is restored.
    """
    encoded = secret.removeprefix(SECRET_PREFIX).strip()
    standard = encoded.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret must be 'whsec_' followed by base64") from None


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str, message_id: str, timestamp: int, body: bytes, user_agent: str
) -> dict[str, str]:
    """Every header of a delivery attempt."""
    return {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }


def retry_delay(attempt: int, first: float, cap: float, jitter: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): ``first`` doubling per
    attempt, capped at ``cap``, then spread by ``jitter`` (a random number in [0, 1):
    the delay is scaled by 0.75 to 1.25) so receivers that failed together do not get
    their retries all at once."""
    base = min(first * 2.0 ** (attempt - 1), cap)
    return base * (0.75 + 0.5 * jitter)


def forbidden_address(address: IPAddress) -> str | None:
    """Why an address may not receive webhooks (loopback, private, ...), or None.

    An IPv4 address mapped into IPv6 (``::ffff:127.0.0.1``) is judged as the IPv4 one.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-global", not address.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


def _base_of(part: str) -> int:
    if part[:2].lower() == "0x":
        return 16
    return 8 if part.startswith("0") and part != "0" else 10


def _numeric_ipv4(host: str) -> IPAddress | None:
    """Numeric IPv4 forms that resolvers accept besides dotted quads (``127.1``,
    ``2130706433``, ``0x7f.1``, octal parts), as ``inet_aton`` reads them."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    try:
        numbers = [
            int(
                part,
                16 if part[:2].lower() == "0x" else 8 if part[:1] == "0" and part != "0" else 10,
            )
            for part in parts
        ]
    except ValueError:
        return None
    *head, last = numbers
    if any(not 0 <= n <= 255 for n in head) or not 0 <= last < 256 ** (4 - len(head)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(value)


def ip_literal(host: str) -> IPAddress | None:
    """The address a host name spells directly (an IP literal in any form), or None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return _numeric_ipv4(host) if host and host[0].isdigit() else None


def forbidden_host(host: str) -> str | None:
    """Why a callback host is refused without looking it up, or None: IP literals in a
    forbidden range, and names that always mean this machine (``localhost``,
    ``*.localhost``). Other names are checked when a delivery resolves them."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback"
    address = ip_literal(name)
    return None if address is None else forbidden_address(address)
