"""Operations endpoints: health, readiness, the OpenAPI document and the docs UI."""

from __future__ import annotations

import re

import orjson

from tests.conftest import Service

#: Every /v1 path of the resources, bulk and jobs contract, as OpenAPI spells them.
V1_PATHS = {
    "/v1/bulk",
    "/v1/jobs",
    "/v1/jobs/{job_id}",
    "/v1/jobs/{job_id}/results",
    "/v1/jobs/{job_id}/cancel",
    "/v1/resources/{rtype}",
    "/v1/resources/{rtype}/{rid}",
}


def test_healthz_answers_200_without_a_key(service: Service) -> None:
    response = service.anonymous().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_answers_200_when_database_and_broker_are_reachable(service: Service) -> None:
    response = service.anonymous().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_openapi_document_is_json_listing_every_v1_path(service: Service) -> None:
    response = service.anonymous().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = orjson.loads(response.data)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "bulkapi"
    assert document["paths"].keys() >= V1_PATHS
    assert {"get", "put", "patch", "delete"} <= document["paths"][
        "/v1/resources/{rtype}/{rid}"
    ].keys()
    assert "post" in document["paths"]["/v1/bulk"]
    assert "post" in document["paths"]["/v1/jobs/{job_id}/cancel"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_openapi_document_describes_the_bulk_202_answer(service: Service) -> None:
    document = orjson.loads(service.anonymous().get("/openapi.json").data)
    responses = document["paths"]["/v1/bulk"]["post"]["responses"]
    assert {"202", "413", "415", "422"} <= responses.keys()


def test_docs_page_is_html_whose_scripts_are_served_locally(service: Service) -> None:
    client = service.anonymous()
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
    assert scripts, html
    for src in scripts:
        assert not src.startswith(("http://", "https://", "//")), src
        asset = client.get(src)
        assert asset.status_code == 200, src
        assert "javascript" in asset.mimetype, (src, asset.mimetype)
        assert len(asset.data) > 1000
    assert "/openapi.json" in html
    for href in re.findall(r'<link[^>]+href="([^"]+)"', html):
        assert not href.startswith(("http://", "https://", "//")), href
        assert client.get(href).status_code == 200, href
