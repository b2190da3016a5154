"""Single-resource endpoints: read, write synchronously, list."""

from __future__ import annotations

import re
from typing import Any

import orjson
from flask import Response, request
from flask_smorest import Blueprint

from bulkapi.api.auth import require_tenant
from bulkapi.api.bodies import read_document
from bulkapi.api.context import runtime
from bulkapi.api.documented import ETAG, LOCATION, links, problems
from bulkapi.api.holds import may_wait, wait_preference
from bulkapi.api.pagination import MAX_INDEX, decode_cursor, page_body
from bulkapi.api.preconditions import etag, none_match, parse_if_match, parse_prefer_wait
from bulkapi.api.representations import effect_body, history_body, resource_body
from bulkapi.api.responses import json_response
from bulkapi.api.schemas import (
    DocumentSchema,
    EffectPageSchema,
    HistoryPageSchema,
    PageArgs,
    ResourcePageSchema,
    ResourceSchema,
)
from bulkapi.core.errors import NotFound, PayloadTooLarge, ValidationFailed
from bulkapi.core.keys import (
    ID_RULE,
    ResourceKey,
    is_valid_id,
    is_valid_type,
    partition_of,
)
from bulkapi.core.operations import Operation, OpKind
from bulkapi.core.preconditions import Preconditions
from bulkapi.core.validation import check_document, nesting_depth_exceeds
from bulkapi.dispatch.lanes import Lane
from bulkapi.store.database import reading, single_read
from bulkapi.store.effects import effects_of_resource, effects_of_versions
from bulkapi.store.history import history_of
from bulkapi.store.resources import StoredResource, WriteResult, get_resource, list_resources

blp = Blueprint(
    "resources",
    __name__,
    url_prefix="/v1/resources",
    description="Single resources, written synchronously and in order with bulk work.",
)

#: An effects cursor names a (version, position) pair: ASCII digits only.
_EFFECTS_POSITION = re.compile(r"([0-9]{1,10})\.([0-9]{1,10})")


def _key(rtype: str, rid: str) -> ResourceKey:
    errors = {}
    if not is_valid_type(rtype):
        errors["type"] = ["Must match ^[a-z][a-z0-9_-]{0,63}$."]
    if not is_valid_id(rid):
        errors["id"] = [ID_RULE]
    if errors:
        raise ValidationFailed("The resource key is invalid.", errors)
    return ResourceKey(rtype, rid)


def _resource_response(resource: StoredResource, status: int = 200) -> Response:
    headers = {"ETag": etag(resource.version)}
    if status == 201:
        headers["Location"] = f"/v1/resources/{resource.type}/{resource.id}"
    return json_response(resource_body(resource), status, headers)


def _document() -> dict[str, Any]:
    """The request's document, held to the same rules as a bulk operation's data."""
    settings = runtime().settings
    document = read_document(settings.max_document_wire_bytes)
    limits = settings.admission_limits
    # Depth first: serializing a very deep document is what would fail otherwise.
    if not nesting_depth_exceeds(document, limits.max_document_depth) and (
        len(orjson.dumps(document)) > limits.max_document_bytes
    ):
        raise PayloadTooLarge(f"A document takes at most {limits.max_document_bytes} bytes.")
    problems = check_document(document, limits, orjson.dumps)
    if problems:
        raise ValidationFailed("The document is invalid.", {"_schema": problems})
    return document


def _write(rtype: str, rid: str, kind: OpKind, data: dict[str, Any] | None) -> WriteResult:
    tenant_id = require_tenant()
    key = _key(rtype, rid)
    rt = runtime()
    operation = Operation(kind, key, data)
    preconditions = Preconditions(
        parse_if_match(request.headers.get("If-Match")),
        if_none_match=request.headers.get("If-None-Match", "").strip() == "*",
    )
    rt.registry.check_write(operation)
    partition = partition_of(tenant_id, key, rt.settings.partitions)
    wait_seconds = parse_prefer_wait(request.headers.get("Prefer"))
    with (
        may_wait(tenant_id, wanted=wait_seconds > 0) as waiting,
        wait_preference(wait_seconds, waiting),
    ):
        result = rt.writer.write(
            tenant_id,
            operation,
            partition=partition,
            wait_seconds=wait_seconds if waiting else 0.0,
            preconditions=preconditions,
        )
    if result.effects:
        rt.waker.wake([partition], lane=Lane.EFFECTS)
    return result


#: Errors a document write may answer besides the authenticated set.
_WRITE_ERRORS = (400, 404, 408, 409, 412, 413, 415)

_DOCUMENT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": DocumentSchema}},
}
_MERGE_PATCH_BODY = {
    "required": True,
    "description": "A JSON Merge Patch (RFC 7396): `null` removes a member.",
    "content": {
        "application/merge-patch+json": {"schema": DocumentSchema},
        "application/json": {"schema": DocumentSchema},
    },
}
_WRITE_HEADERS = [
    {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": 'Apply only if the current version is this ETag (`"<version>"`).',
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "`wait=N` (N ≤ 30): wait up to N seconds for accepted bulk work on "
        "the resource, then apply.",
    },
]
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "PUT: `*` creates only. GET: an ETag answers 304 if unchanged.",
}


@blp.route("/<rtype>/<rid>", methods=["GET"])
@blp.response(200, ResourceSchema, headers=ETAG)
@blp.alt_response(304, description="Not modified (`If-None-Match` matched)", headers=ETAG)
@blp.doc(operationId="getResource", parameters=[_IF_NONE_MATCH])
@problems(blp, 404)
def get(rtype: str, rid: str) -> Response:
    """Read one resource; 404 if absent or deleted."""
    tenant_id = require_tenant()
    with single_read(runtime().engine) as conn:
        resource = get_resource(conn, tenant_id, _key(rtype, rid))
    if none_match(request.headers.get("If-None-Match"), resource.version):
        return Response(status=304, headers={"ETag": etag(resource.version)})
    return _resource_response(resource)


@blp.route("/<rtype>/<rid>", methods=["PUT"])
@blp.response(200, ResourceSchema, description="Replaced", headers=ETAG)
@blp.alt_response(201, schema=ResourceSchema, description="Created", headers=ETAG | LOCATION)
@blp.doc(
    operationId="putResource",
    requestBody=_DOCUMENT_BODY,
    parameters=[*_WRITE_HEADERS, _IF_NONE_MATCH],
)
@links(blp, 201, "getResource", rtype="$response.body#/type", rid="$response.body#/id")
@problems(blp, *_WRITE_ERRORS)
def put(rtype: str, rid: str) -> Response:
    """Create or replace a resource; honours `If-Match`, `If-None-Match: *` and `Prefer: wait=N`."""
    result = _write(rtype, rid, OpKind.UPSERT, _document())
    return _resource_response(result.resource, 201 if result.created else 200)


@blp.route("/<rtype>/<rid>", methods=["PATCH"])
@blp.response(200, ResourceSchema, headers=ETAG)
@blp.doc(operationId="patchResource", requestBody=_MERGE_PATCH_BODY, parameters=_WRITE_HEADERS)
@problems(blp, *_WRITE_ERRORS)
def patch(rtype: str, rid: str) -> Response:
    """Apply a JSON Merge Patch (RFC 7396); 404 if the resource is absent."""
    result = _write(rtype, rid, OpKind.PATCH, _document())
    return _resource_response(result.resource)


@blp.route("/<rtype>/<rid>", methods=["DELETE"])
@blp.response(204, description="Deleted", headers=ETAG)
@blp.doc(operationId="deleteResource", parameters=_WRITE_HEADERS)
@problems(blp, 404, 409, 412)
def delete(rtype: str, rid: str) -> Response:
    """Delete a resource, leaving a tombstone so its versions are never reused."""
    result = _write(rtype, rid, OpKind.DELETE, None)
    return Response(status=204, headers={"ETag": etag(result.resource.version)})


@blp.route("/<rtype>", methods=["GET"])
@blp.arguments(PageArgs, location="query", as_kwargs=True)
@blp.response(200, ResourcePageSchema)
@blp.doc(operationId="listResources")
@problems(blp)
def list_of_type(rtype: str, limit: int, cursor: str | None) -> Response:
    """List existing resources of one type in id order (keyset pagination)."""
    tenant_id = require_tenant()
    if not is_valid_type(rtype):
        raise ValidationFailed(
            "The resource type is invalid.", {"type": ["Must match ^[a-z][a-z0-9_-]{0,63}$."]}
        )
    after = decode_cursor(cursor, str)
    with single_read(runtime().engine) as conn:
        page = list_resources(conn, tenant_id, rtype, limit + 1, after)  # type: ignore[arg-type]
    return json_response(page_body(page, limit, resource_body, lambda resource: resource.id))


def _effects_cursor(cursor: str | None) -> tuple[int, int] | None:
    position = decode_cursor(cursor, str)
    if position is None:
        return None
    found = _EFFECTS_POSITION.fullmatch(str(position))
    numbers = (int(found[1]), int(found[2])) if found else None
    if numbers is None or max(numbers) > MAX_INDEX:
        raise ValidationFailed(
            "The cursor is not one this API handed out.", {"cursor": ["Invalid cursor."]}
        )
    return numbers


@blp.route("/<rtype>/<rid>/history", methods=["GET"])
@blp.arguments(PageArgs, location="query", as_kwargs=True)
@blp.response(200, HistoryPageSchema)
@blp.doc(operationId="listResourceHistory")
@problems(blp, 404)
def history(rtype: str, rid: str, limit: int, cursor: str | None) -> Response:
    """Every version of a resource, newest first: which write made it (a bulk operation,
    or `sync`), when, and the side effects it triggered. The newest
    `BULKAPI_HISTORY_VERSIONS` versions of each resource are kept."""
    tenant_id = require_tenant()
    key = _key(rtype, rid)
    before = decode_cursor(cursor, int)
    with reading(runtime().engine) as conn:
        page = history_of(conn, tenant_id, key, limit + 1, before)  # type: ignore[arg-type]
        if page is None:
            raise NotFound(f"No resource {key.type}/{key.id}.")
        versions = [entry.version for entry in page[:limit]]
        effects = effects_of_versions(conn, tenant_id, key, versions)
    return json_response(
        page_body(
            page,
            limit,
            lambda entry: history_body(entry, effects.get(entry.version, ())),
            lambda entry: entry.version,
        )
    )


@blp.route("/<rtype>/<rid>/effects", methods=["GET"])
@blp.arguments(PageArgs, location="query", as_kwargs=True)
@blp.response(200, EffectPageSchema)
@blp.doc(operationId="listResourceEffects")
@problems(blp)
def effects_of(rtype: str, rid: str, limit: int, cursor: str | None) -> Response:
    """The side effects of a resource's changes, newest change first: status, attempts
    and last error of each (sync writes' effects are visible only here)."""
    tenant_id = require_tenant()
    key = _key(rtype, rid)
    after = _effects_cursor(cursor)
    with reading(runtime().engine) as conn:
        page = effects_of_resource(conn, tenant_id, key, limit + 1, after)
    return json_response(
        page_body(page, limit, effect_body, lambda effect: f"{effect.version}.{effect.position}")
    )
