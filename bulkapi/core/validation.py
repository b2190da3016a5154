"""Admission rules for a bulk request: all-or-nothing, every problem reported at once.

Hand-written rather than a marshmallow schema per operation: this runs on the critical
path for up to 100,000 items, where a schema load per item costs seconds. The OpenAPI
document still describes the same shape (``bulkapi.api.schemas``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bulkapi.core.errors import DuplicateResources, TooManyOperations, ValidationFailed
from bulkapi.core.keys import ResourceKey, is_valid_id, is_valid_type
from bulkapi.core.operations import Operation, OpKind

_OP_FIELDS = frozenset({"op", "type", "id", "data", "if_version"})
_KINDS = {kind.value: kind for kind in OpKind}


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_operations: int
    max_document_bytes: int


FieldErrors = dict[str, list[str]]


def check_document(
    data: object, limits: AdmissionLimits, size_of: Callable[[object], int]
) -> list[str]:
    """Problems with a resource document (a JSON object within the size limit)."""
    if not isinstance(data, dict):
        return ["Must be a JSON object."]
    if size_of(data) > limits.max_document_bytes:
        return [f"Longer than {limits.max_document_bytes} bytes serialized."]
    return []


def _check_operation(
    item: object, limits: AdmissionLimits, size_of: Callable[[object], int]
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
        errors["id"] = ["Must match ^[A-Za-z0-9._:-]{1,128}$."]
    data = item.get("data")
    if kind is OpKind.DELETE:
        if "data" in item:
            errors["data"] = ["A delete takes no data."]
    elif kind is not None:
        problems = (
            check_document(data, limits, size_of)
            if "data" in item
            else ["Missing data for required field."]
        )
        if problems:
            errors["data"] = problems
    if_version = item.get("if_version")
    if if_version is not None and (
        not isinstance(if_version, int) or isinstance(if_version, bool) or if_version < 0
    ):
        errors["if_version"] = ["Must be an integer >= 0."]
    if errors or kind is None:
        return None, errors
    assert isinstance(rtype, str) and isinstance(rid, str)
    return Operation(kind, ResourceKey(rtype, rid), data, if_version), {}


def parse_operations(
    items: Iterable[object], limits: AdmissionLimits, size_of: Callable[[object], int]
) -> list[Operation]:
    """Turn raw items into operations, or raise with every problem found.

    Raises ``TooManyOperations`` as soon as the count passes the limit, so a huge
    request is not validated item by item first.
    """
    operations: list[Operation] = []
    errors: dict[str, FieldErrors] = {}
    seen: dict[ResourceKey, list[int]] = {}
    for index, item in enumerate(items):
        if index >= limits.max_operations:
            raise TooManyOperations(
                f"A bulk request takes at most {limits.max_operations} operations."
            )
        operation, problems = _check_operation(item, limits, size_of)
        if operation is None:
            errors[str(index)] = problems
            continue
        operations.append(operation)
        seen.setdefault(operation.key, []).append(index)
    if errors:
        raise ValidationFailed(f"{len(errors)} operation(s) are invalid.", errors)
    if not operations:
        raise ValidationFailed(
            "A bulk request needs at least one operation.",
            {"operations": ["Must contain at least one operation."]},
        )
    duplicates = [
        {"type": key.type, "id": key.id, "indexes": indexes}
        for key, indexes in seen.items()
        if len(indexes) > 1
    ]
    if duplicates:
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


def check_envelope(body: object) -> tuple[list[Any], dict[str, Any]]:
    """Split a JSON bulk body into its operations and its other (checked) fields."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            "The body must be a JSON object.", {"_schema": ["Must be an object."]}
        )
    errors: FieldErrors = {}
    for name in body.keys() - {"operations", "callback_url", "metadata"}:
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
    if errors:
        raise ValidationFailed("The bulk request is invalid.", errors)
    assert isinstance(operations, list)
    return operations, {"callback_url": callback_url, "metadata": metadata}
