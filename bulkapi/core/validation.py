"""Admission rules for a bulk request: all-or-nothing, every problem reported at once.

Hand-written rather than a marshmallow schema per operation: this runs on the critical
path for up to 100,000 items, where a schema load per item costs seconds. The OpenAPI
document still describes the same shape (``bulkapi.api.schemas``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from bulkapi.core.errors import (
    CallbackUrlForbidden,
    DuplicateResources,
    TooManyOperations,
    ValidationFailed,
)
from bulkapi.core.keys import ID_RULE, ResourceKey, is_valid_id, is_valid_type
from bulkapi.core.operations import Operation, OpKind
from bulkapi.core.webhooks import forbidden_host

#: Furthest a job deadline may lie ahead.
MAX_DEADLINE = timedelta(days=365)
#: Largest version a key can reach (versions are 32-bit integers).
MAX_VERSION = 2**31 - 1
#: Longest callback URL accepted.
MAX_URL_LENGTH = 2048
#: Highest TCP port (a callback URL's port must be 1 to this).
MAX_PORT = 65535
#: Longest host name DNS can carry (RFC 1035), without the final dot.
MAX_HOST_LENGTH = 253

_OP_FIELDS = frozenset({"op", "type", "id", "data", "if_version"})
_KINDS = {kind.value: kind for kind in OpKind}


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_operations: int
    max_document_bytes: int
    max_document_depth: int = 32


FieldErrors = dict[str, list[str]]
#: Turns a document into its JSON bytes (injected: the core does no I/O or encoding choice).
Serializer = Callable[[object], bytes]


def nesting_depth_exceeds(data: object, limit: int) -> bool:
    """Whether objects/arrays nest deeper than ``limit`` (walks without recursion)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[object] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_document(data: object, limits: AdmissionLimits, serialize: Serializer) -> list[str]:
    """Problems with a resource document: a JSON object, within the size and depth
    limits, without NUL characters (PostgreSQL's jsonb cannot store them, and they would
    fail at apply time instead of now)."""
    if not isinstance(data, dict):
        return ["Must be a JSON object."]
    too_deep = [f"Nested deeper than {limits.max_document_depth} levels."]
    try:
        serialized = serialize(data)
    except (TypeError, RecursionError, ValueError):  # serializers refuse extreme nesting
        return too_deep
    # Each level of nesting takes two bytes, and a document with fewer brackets than
    # the limit cannot nest deeper: only then is the walk needed.
    if (
        len(serialized) > 2 * limits.max_document_depth
        and serialized.count(b"{") + serialized.count(b"[") > limits.max_document_depth
        and nesting_depth_exceeds(data, limits.max_document_depth)
    ):
        return too_deep
    if len(serialized) > limits.max_document_bytes:
        return [f"Longer than {limits.max_document_bytes} bytes serialized."]
    # The byte search is a cheap filter: a backslash followed by "u0000" in the text
    # serializes the same way, so only a hit pays for the exact walk.
    if b"\\u0000" in serialized and _contains_nul(data):
        return ["Must not contain NUL (U+0000) characters."]
    return []


def _contains_nul(data: object) -> bool:
    stack: list[object] = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _valid_key(item: dict[Any, Any], types: set[str]) -> ResourceKey | None:
    """The item's key when its type and id are valid (a type already seen valid in this
    request, in ``types``, is not matched again)."""
    rtype, rid = item.get("type"), item.get("id")
    if type(rtype) is not str or type(rid) is not str or not is_valid_id(rid):
        return None
    if rtype not in types:
        if not is_valid_type(rtype):
            return None
        types.add(rtype)
    return ResourceKey(rtype, rid)


def _valid_operation(
    item: dict[Any, Any],
    limits: AdmissionLimits,
    serialize: Serializer,
    types: set[str],
    key: ResourceKey | None,
) -> Operation | None:
    """The operation when every rule holds; None sends the item to ``_check_operation``,
    which names each problem. The common case pays for no error bookkeeping. ``key``:
    the item's key, checked already (``parse_keys``)."""
    op = item.get("op")
    kind = _KINDS.get(op) if type(op) is str else None
    if kind is None or not _OP_FIELDS.issuperset(item):
        return None
    if key is None and (key := _valid_key(item, types)) is None:
        return None
    if_version = item.get("if_version")
    if if_version is not None and (
        type(if_version) is not int or not 0 <= if_version <= MAX_VERSION
    ):
        return None
    if kind is OpKind.DELETE:
        return None if "data" in item else Operation(kind, key, None, if_version)
    data = item.get("data")
    if type(data) is not dict or check_document(data, limits, serialize):
        return None
    return Operation(kind, key, data, if_version)


def parse_keys(items: list[Any], max_operations: int) -> list[ResourceKey] | None:
    """The items' keys, in order, when every item is an object with a valid key, no key
    comes twice and there are 1 to ``max_operations`` items: all admission needs to
    start (it locks and numbers the keys while the rest is checked). None otherwise, and
    ``parse_operations`` names every problem."""
    if not 0 < len(items) <= max_operations:
        return None
    types: set[str] = set()
    keys: list[ResourceKey] = []
    for item in items:
        key = _valid_key(item, types) if type(item) is dict else None
        if key is None:
            return None
        keys.append(key)
    return keys if len(set(keys)) == len(keys) else None


def _check_operation(
    item: object, limits: AdmissionLimits, serialize: Serializer
) -> tuple[Operation | None, FieldErrors]:
    if not isinstance(item, dict):
        return None, {"_schema": ["Must be a JSON object."]}
    errors: FieldErrors = {}
    for name in item.keys() - _OP_FIELDS:
        errors[str(name)] = ["Unknown field."]
    kind = _KINDS.get(item["op"]) if isinstance(item.get("op"), str) else None
    if "op" not in item:
        errors["op"] = ["Missing data for required field."]
    elif kind is None:
        errors["op"] = ["Must be one of: upsert, patch, delete."]
    rtype, rid = item.get("type"), item.get("id")
    if not is_valid_type(rtype):
        errors["type"] = ["Must match ^[a-z][a-z0-9_-]{0,63}$."]
    if not is_valid_id(rid):
        errors["id"] = [ID_RULE]
    data = item.get("data")
    if kind is OpKind.DELETE:
        if "data" in item:
            errors["data"] = ["A delete takes no data."]
    elif kind is not None:
        problems = (
            check_document(data, limits, serialize)
            if "data" in item
            else ["Missing data for required field."]
        )
        if problems:
            errors["data"] = problems
    if_version = item.get("if_version")
    if if_version is not None and (
        not isinstance(if_version, int)
        or isinstance(if_version, bool)
        or not 0 <= if_version <= MAX_VERSION
    ):
        errors["if_version"] = [f"Must be an integer from 0 to {MAX_VERSION}."]
    if errors or kind is None:
        return None, errors
    assert isinstance(rtype, str) and isinstance(rid, str)
    return Operation(kind, ResourceKey(rtype, rid), data, if_version), {}


def parse_operations(
    items: list[Any],
    limits: AdmissionLimits,
    serialize: Serializer,
    keys: list[ResourceKey] | None = None,
) -> list[Operation]:
    """Turn raw items into operations, or raise with every problem found.

    Raises ``TooManyOperations`` as soon as the count passes the limit, so a huge
    request is not validated item by item first. Each item is dropped from ``items``
    (set to None) once read: its operation keeps the document, and the item's own dict
    and strings go, so a large request never holds both forms of every operation.
    With ``keys`` (from ``parse_keys`` over the same items) each operation takes its key
    from there, checked already.
    """
    operations: list[Operation] = []
    errors: dict[str, FieldErrors] = {}
    #: The first index of each key, and every index of a key seen more than once.
    first: dict[ResourceKey, int] = {}
    repeated: dict[ResourceKey, list[int]] = {}
    types: set[str] = set()
    for index, item in enumerate(items):
        if index >= limits.max_operations:
            raise TooManyOperations(
                f"A bulk request takes at most {limits.max_operations} operations."
            )
        operation = (
            _valid_operation(item, limits, serialize, types, None if keys is None else keys[index])
            if type(item) is dict
            else None
        )
        if operation is None:
            operation, problems = _check_operation(item, limits, serialize)
            if operation is None:
                errors[str(index)] = problems
                continue
        items[index] = None
        operations.append(operation)
        if keys is None:  # ``parse_keys`` found each key once already
            seen = first.setdefault(operation.key, index)
            if seen != index:
                repeated.setdefault(operation.key, [seen]).append(index)
    if errors:
        raise ValidationFailed(f"{len(errors)} operation(s) are invalid.", errors)
    if not operations:
        raise ValidationFailed(
            "A bulk request needs at least one operation.",
            {"operations": ["Must contain at least one operation."]},
        )
    if repeated:
        duplicates = [
            {"type": key.type, "id": key.id, "indexes": indexes}
            for key, indexes in sorted(repeated.items(), key=lambda entry: entry[1][0])
        ]
        raise DuplicateResources(
            "Each resource may appear at most once in a bulk request.",
            {
                str(i): {"id": ["Duplicate resource in this request."]}
                for d in duplicates
                for i in d["indexes"]
            },
            duplicates=duplicates,
        )
    return operations


@dataclass(frozen=True, slots=True)
class Envelope:
    """A bulk request's fields besides its operations."""

    callback_url: str | None = None
    metadata: dict[str, Any] | None = None
    #: As sent: an RFC 3339 timestamp, or seconds from now (see ``parse_deadline``).
    deadline: str | int | float | None = None


def check_envelope(body: object) -> tuple[list[Any], Envelope]:
    """Split a JSON bulk body into its operations and its other (checked) fields."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            "The body must be a JSON object.", {"_schema": ["Must be an object."]}
        )
    errors: FieldErrors = {}
    for name in body.keys() - {"operations", "callback_url", "metadata", "deadline"}:
        errors[str(name)] = ["Unknown field."]
    operations = body.get("operations")
    if not isinstance(operations, list):
        errors["operations"] = ["Must be a list of operations."]
    callback_url = body.get("callback_url")
    if callback_url is not None and not isinstance(callback_url, str):
        errors["callback_url"] = ["Must be a string."]
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        errors["metadata"] = ["Must be a JSON object."]
    deadline = body.get("deadline")
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, str | int | float)
    ):
        errors["deadline"] = ["Must be an RFC 3339 timestamp or a number of seconds."]
    if errors:
        raise ValidationFailed("The bulk request is invalid.", errors)
    assert isinstance(operations, list)
    return operations, Envelope(callback_url, metadata, deadline)


def check_metadata(
    metadata: dict[str, Any] | None, limits: AdmissionLimits, serialize: Serializer
) -> None:
    """Job metadata is held to the same rules as a document (size, depth, no NUL)."""
    if metadata is None:
        return
    problems = check_document(metadata, limits, serialize)
    if problems:
        raise ValidationFailed("The metadata is invalid.", {"metadata": problems})


def check_callback_url(url: str | None, *, allow_private: bool = False) -> None:
    """An absolute http(s) URL; unless ``allow_private``, not aimed at this machine or a
    private network as far as can be told without DNS (deliveries check again)."""
    if url is None:
        return
    if any(ord(char) < 0x21 for char in url):  # no NUL, control characters or spaces
        raise ValidationFailed(
            "The callback URL is invalid.",
            {"callback_url": ["Must not contain spaces or control characters."]},
        )
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # e.g. an unclosed or malformed IPv6 literal
        hostname = None
    if hostname is None or parts.scheme not in ("http", "https") or len(url) > MAX_URL_LENGTH:
        raise ValidationFailed(
            "The callback URL is invalid.",
            {"callback_url": ["Must be an absolute http or https URL."]},
        )
    try:
        port = parts.port  # None when absent; ValueError when not a number or > 65535
    except ValueError:
        port = 0
    if port is not None and not 1 <= port <= MAX_PORT:
        raise ValidationFailed(
            "The callback URL is invalid.",
            {"callback_url": [f"The port must be a number from 1 to {MAX_PORT}."]},
        )
    if not _is_host_name(hostname):
        raise ValidationFailed(
            "The callback URL is invalid.",
            {"callback_url": ["The host is not a valid name: labels of 1 to 63 characters."]},
        )
    reason = None if allow_private else forbidden_host(hostname)
    if reason is not None:
        raise CallbackUrlForbidden(
            "The callback URL targets an address webhooks may not reach.",
            {"callback_url": [f"Must not target a {reason} address."]},
        )


def _is_host_name(host: str) -> bool:
    """A host a resolver could be asked for: IDNA-encodable (no empty label, none over 63
    characters) and at most 253 characters; IPv6 literals pass through unchanged."""
    try:
        encoded = host.encode("idna")
    except UnicodeError:
        return False
    return len(encoded.rstrip(b".")) <= MAX_HOST_LENGTH


def parse_deadline(value: str | float | None, now: datetime) -> datetime | None:
    """A job deadline from an RFC 3339 timestamp or a number of seconds from ``now``.

    It must lie in the future (and within a year): a deadline already past would
    accept work only to cancel it.
    """
    if value is None:
        return None
    problem = ["Must be an RFC 3339 timestamp or seconds, in the future, within a year."]
    try:
        if isinstance(value, str) and not _is_number(value):
            deadline = datetime.fromisoformat(value)
            if deadline.tzinfo is None:
                raise ValueError("no time zone")
        else:
            deadline = now + timedelta(seconds=float(value))
    except (ValueError, OverflowError):
        raise ValidationFailed("The deadline is invalid.", {"deadline": problem}) from None
    if not now < deadline <= now + MAX_DEADLINE:
        raise ValidationFailed("The deadline is invalid.", {"deadline": problem})
    return deadline


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
