"""The registered resource types, with the JSON Schema of their documents."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Response, current_app
from flask_smorest import Blueprint
from marshmallow import Schema

from bulkapi.api.auth import require_tenant
from bulkapi.api.context import runtime
from bulkapi.api.documented import problems
from bulkapi.api.responses import json_response
from bulkapi.api.schemas import ResourceTypeListSchema, ResourceTypeSchema
from bulkapi.core.errors import NotFound
from bulkapi.registry import RegisteredType, TypeRegistry

blp = Blueprint(
    "types",
    __name__,
    url_prefix="/v1/types",
    description="The resource types this deployment registers, to validate client-side.",
)

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _inline(schema: type[Schema]) -> str:
    """apispec inlines a nested schema whose name resolves to None (its documented use)."""
    return None  # type: ignore[return-value]


def json_schema(schema: Schema) -> dict[str, Any]:
    """A marshmallow schema as JSON Schema 2020-12 (OpenAPI 3.1's dialect), nested
    schemas inlined so the document stands alone."""
    plugin = MarshmallowPlugin(schema_name_resolver=_inline)
    APISpec("types", "1", "3.1.0", plugins=[plugin])  # binds the plugin's converter
    converted: dict[str, Any] = plugin.converter.schema2jsonschema(schema)  # type: ignore[union-attr]
    return {"$schema": _DIALECT, **converted}


def type_body(registered: RegisteredType) -> dict[str, Any]:
    return {
        "name": registered.name,
        "description": registered.declared.description,
        "schema": None if registered.schema is None else json_schema(registered.schema),
        "effects": list(registered.effects),
    }


def describe_types(registry: TypeRegistry) -> dict[str, dict[str, Any]]:
    """Every type's body, by name: built once at start, so a schema apispec cannot
    convert stops the process there rather than failing requests."""
    return {t.name: type_body(t) for t in sorted(registry, key=lambda t: t.name)}


def _described() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = current_app.extensions["bulkapi.types"]
    return found


@blp.route("", methods=["GET"])
@blp.response(200, ResourceTypeListSchema)
@blp.doc(operationId="listTypes")
@problems(blp)
def list_types() -> Response:
    """Every registered type; `strict` says whether other types are refused."""
    require_tenant()
    items = list(_described().values())
    return json_response({"items": items, "strict": runtime().registry.strict})


@blp.route("/<name>", methods=["GET"])
@blp.response(200, ResourceTypeSchema)
@blp.doc(operationId="getType")
@problems(blp, 404)
def get_type(name: str) -> Response:
    """One registered type; 404 if it is not registered."""
    require_tenant()
    found = _described().get(name)
    if found is None:
        raise NotFound(f"No registered resource type {name!r}.")
    return json_response(found)
