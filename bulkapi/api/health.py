"""Liveness and readiness."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint
from sqlalchemy import text

from bulkapi.api.context import runtime
from bulkapi.api.documented import problems
from bulkapi.api.problems import DEPENDENCY_RETRY, problem
from bulkapi.api.responses import json_response
from bulkapi.api.schemas import HealthSchema
from bulkapi.dispatch.broker import broker_reachable
from bulkapi.store.database import reading

blp = Blueprint("health", __name__, description="Operations endpoints.")


@blp.route("/healthz", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.doc(operationId="getHealth", security=[])
@problems(blp, authenticated=False)
def healthz() -> Response:
    """The process is alive."""
    return json_response({"status": "ok"})


@blp.route("/readyz", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.doc(operationId="getReadiness", security=[])
@problems(blp, 503, authenticated=False)
def readyz() -> Response:
    """The database and the broker are reachable."""
    rt = runtime()
    try:
        with reading(rt.engine) as conn:
            conn.execute(text("SELECT 1"))
    except Exception as error:
        return problem(
            503,
            "not_ready",
            "Not ready",
            f"Database unreachable: {type(error).__name__}.",
            DEPENDENCY_RETRY,
        )
    if not broker_reachable(rt.broker):
        return problem(503, "not_ready", "Not ready", "Broker unreachable.", DEPENDENCY_RETRY)
    return json_response({"status": "ok"})
