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


#: NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _stands_for(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one is only another spelling of: IPv4-mapped
    (``::ffff:127.0.0.1``) or NAT64 (``64:ff9b::7f00:1``, which a translator turns into a
    connection to that IPv4 address)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnel_ends(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a tunnelled IPv6 address leads to through a relay: the 6to4
    gateway (``2002:7f00:1::`` is 127.0.0.1), or the Teredo server and client."""
    ends = [address.sixtofour] if address.sixtofour is not None else []
    ends.extend(address.teredo or ())
    return tuple(ends)


def forbidden_address(address: IPAddress) -> str | None:
    """Why an address may not receive webhooks (loopback, private, ...), or None.

    An IPv6 address that stands for an IPv4 one (IPv4-mapped, NAT64) is judged as that
    IPv4 address; a 6to4 or Teredo address is refused when an IPv4 address it tunnels to
    is, since a relay would carry the request there.
    """
    if isinstance(address, ipaddress.IPv6Address):
        plain = _stands_for(address)
        if plain is not None:
            return forbidden_address(plain)
        for end in _tunnel_ends(address):
            reason = forbidden_address(end)
            if reason is not None:
                return reason
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
