"""The bare Flask baseline for case 3: parse the JSON body, echo it back, nothing else."""

from __future__ import annotations

import orjson
from flask import Flask, Response, request

app = Flask("bench-echo")


@app.put("/echo/<rtype>/<rid>")
def echo(rtype: str, rid: str) -> Response:
    data = orjson.loads(request.get_data())
    body = orjson.dumps({"type": rtype, "id": rid, "version": 1, "data": data})
    return Response(body, status=200, mimetype="application/json")


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")
