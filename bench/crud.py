"""The sync PUT baseline: a plain Flask + psycopg 3 CRUD endpoint, as a user would write it.

``PUT /crud/<type>/<id>`` upserts the JSON document into a table of the same shape as
bulkapi's resources (``bench.baseline_sql``), bumps the version in the same statement
and answers the resource with ``ETag: "<version>"`` (201 when it was created). One
psycopg connection pool per process; served by gunicorn gthread exactly as bulkapi is.
``BENCH_CRUD_DSN`` names the database; the bench creates the table before starting the
app (two processes creating it at once would collide).
"""

from __future__ import annotations

import os

import orjson
from flask import Flask, Response, request
from psycopg_pool import ConnectionPool

from bench.baseline_sql import CRUD_TABLE, upsert_sql

#: The one tenant of the baseline (bulkapi's key resolves to a tenant; this has no auth).
TENANT = "bench"
#: Connections per process: one per gunicorn thread, so no request waits for the pool.
POOL_SIZE = int(os.environ.get("BENCH_CRUD_POOL_SIZE", "16"))
UPSERT = upsert_sql(CRUD_TABLE)

pool = ConnectionPool(
    os.environ["BENCH_CRUD_DSN"], min_size=POOL_SIZE, max_size=POOL_SIZE, open=True
)
app = Flask("bench-crud")


@app.put("/crud/<rtype>/<rid>")
def put(rtype: str, rid: str) -> Response:
    data = orjson.loads(request.get_data())
    if not isinstance(data, dict):
        return Response(b'{"title":"a JSON object is required"}', 422, mimetype="application/json")
    with pool.connection() as conn:
        row = conn.execute(UPSERT, (TENANT, rtype, rid, orjson.dumps(data).decode())).fetchone()
    assert row is not None
    version = int(row[0])
    body = orjson.dumps({"type": rtype, "id": rid, "version": version, "data": data})
    headers = {"ETag": f'"{version}"'}
    if version == 1:
        headers["Location"] = f"/crud/{rtype}/{rid}"
    return Response(body, 201 if version == 1 else 200, headers, mimetype="application/json")


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")
