"""Property-based contract tests: schemathesis against the app's own /openapi.json.

The fuzz test runs on both modes (the ``service`` fixture), authenticated as a fresh
tenant, bounded in examples per operation and derandomized so a run is repeatable. Each
generated request must not be a server error, its status code must be one the document
lists for the operation (explicitly: a catch-all ``default`` does not count), its body must
match the schema documented for that status, and every error must be a problem document.

Every operation is fuzzed three ways: valid requests (positive), invalid ones (negative),
and valid ones aimed at a job and a resource that exist, so the success bodies are
checked too and not only the 404s random ids produce. PUT and PATCH also get generated
JSON documents as bodies.

schemathesis' own pytest plugin (``from_fixture``) does not run under pytest 9, so the
operations are driven here with ``APIOperation.as_strategy`` and Hypothesis' ``given``.

The other tests check the document itself: what the fuzzer cannot see because the
document does not describe it (error media type, request bodies, statuses every
authenticated operation can answer).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from tests.api.conftest import PROBLEM_FIELDS
from tests.conftest import InProcessApi, Service, embedded_service

#: Examples per operation and generation mode: bounded, and the same every run.
MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
PROBLEM_MEDIA_TYPE = "application/problem+json"
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
#: Arbitrary JSON objects (resource documents), NUL characters and odd unicode included.
JSON_OBJECTS = st.dictionaries(
    st.text(max_size=10),
    st.recursive(
        _scalars,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children)
        ),
        max_leaves=8,
    ),
    max_size=4,
)


def _documented_statuses(operation: Any) -> set[int]:
    return {int(code) for code in operation.definition.raw["responses"] if code.isdigit()}


def _check_response(case: schemathesis.Case, response: Any) -> None:
    """What the built-in checks cannot see while the document calls errors application/json."""
    where = f"{case.as_curl_command()}\n-> {response.status_code} {response.text[:300]}"
    assert response.status_code in _documented_statuses(case.operation), (
        f"status {response.status_code} is not listed for {case.operation.label}: {where}"
    )
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith(PROBLEM_MEDIA_TYPE), where
        body = response.json()
        assert body.keys() >= PROBLEM_FIELDS, where
        assert body["status"] == response.status_code, where
        assert "Traceback" not in response.text, where


def _fuzz(strategy: st.SearchStrategy[Any], headers: dict[str, str]) -> None:
    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        _check_response(case, response)

    run()


def _with_document(case: schemathesis.Case, document: dict[str, Any]) -> schemathesis.Case:
    case.body = document
    case.media_type = "application/json"
    return case


def _existing_targets(api: InProcessApi) -> dict[str, str]:
    """A job and a resource of this tenant, for path parameters that hit real records."""
    assert api.put("/v1/resources/thing/one", json={"n": 1}).status_code == 201
    job = api.submit([{"op": "upsert", "type": "thing", "id": "two", "data": {}}])
    api.wait_job(job["id"])
    return {"job_id": job["id"], "rtype": "thing", "rid": "one"}


def _strategies(operation: Any, targets: dict[str, str]) -> dict[str, st.SearchStrategy[Any]]:
    names = {parameter.name for parameter in operation.path_parameters}
    fixed = {name: value for name, value in targets.items() if name in names}
    strategies = {"positive": operation.as_strategy(GenerationMode.POSITIVE)}
    if operation.path_parameters or operation.query or operation.body:
        # An operation without inputs (/healthz) has no invalid input to generate.
        strategies["negative"] = operation.as_strategy(GenerationMode.NEGATIVE)
    if fixed:
        strategies["existing"] = operation.as_strategy(
            GenerationMode.POSITIVE, path_parameters=fixed
        )
    if operation.method.upper() in ("PUT", "PATCH"):
        strategies["documents"] = st.builds(
            _with_document,
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed),
            JSON_OBJECTS,
        )
    return strategies


def test_every_operation_conforms_to_its_openapi_document(service: Service) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", service.app)
    api = service.api()
    headers = {"Authorization": f"Bearer {api.key}"}
    targets = _existing_targets(api)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [operation.label for operation in operations]
    failures: list[str] = []
    for operation in operations:
        for mode, strategy in _strategies(operation, targets).items():
            try:
                _fuzz(strategy, headers)
            except Exception as error:
                failures.append(f"--- {operation.label} ({mode}):\n{error}")
    assert not failures, "\n\n".join(failures)


# --- the document itself ------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi_document(rate_limited: Service) -> dict[str, Any]:
    """The document (the same in both modes)."""
    document: dict[str, Any] = rate_limited.app.test_client().get("/openapi.json").get_json()
    return document


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield method.upper(), path, operation


def test_error_responses_are_documented_as_problem_details(
    openapi_document: dict[str, Any],
) -> None:
    """Every error body is application/problem+json with the Problem schema; documented as
    application/json, schemathesis skips validating every error body, and a ``default``
    pointing at another schema contradicts the body of any status not listed."""
    wrong = []
    for method, path, operation in _operations(openapi_document):
        for status, listed in operation["responses"].items():
            if status.isdigit() and int(status) < 400:
                continue
            response = listed
            if "$ref" in listed:
                name = listed["$ref"].rsplit("/", 1)[-1]
                response = openapi_document["components"]["responses"][name]
            content = response.get("content", {})
            schema = content.get(PROBLEM_MEDIA_TYPE, {}).get("schema", {})
            if set(content) != {PROBLEM_MEDIA_TYPE} or schema != {
                "$ref": "#/components/schemas/Problem"
            }:
                wrong.append(f"{method} {path} {status}: {content}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_document_writes_describe_their_request_body(
    openapi_document: dict[str, Any], method: str
) -> None:
    operation = openapi_document["paths"]["/v1/resources/{rtype}/{rid}"][method.lower()]
    assert "requestBody" in operation, f"{method} /v1/resources/{{rtype}}/{{rid}} has no body"
    assert "application/json" in operation["requestBody"]["content"]


@pytest.fixture(scope="module")
def rate_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An embedded service allowing one request per tenant an hour."""
    yield from embedded_service(tmp_path_factory.mktemp("rate-limited"), rate_limit="1/hour")


def test_rate_limited_is_documented_wherever_it_is_answered(
    rate_limited: Service, openapi_document: dict[str, Any]
) -> None:
    """Every authenticated operation counts against the tenant's rate, so each can be 429."""
    undocumented = []
    for method, path, operation in _operations(openapi_document):
        if operation.get("security") == [] or path in ("/healthz", "/readyz"):
            continue
        api = rate_limited.api(f"rate-{uuid.uuid4().hex[:10]}")
        concrete = path.replace("{job_id}", "job_x").replace("{rtype}", "t").replace("{rid}", "i")
        api.get("/v1/jobs")  # spends the tenant's one request
        response = api.request(method, concrete, json={})
        assert response.status_code == 429, (method, path, response.get_json())
        if "429" not in operation["responses"]:
            undocumented.append(f"{method} {path}")
    assert not undocumented, f"429 rate_limited answered but not documented: {undocumented}"


def test_not_modified_is_documented_for_conditional_reads(
    service: Service, openapi_document: dict[str, Any]
) -> None:
    api = service.api()
    api.put("/v1/resources/thing/cached", json={})
    response = api.get("/v1/resources/thing/cached", headers={"If-None-Match": '"1"'})
    assert response.status_code == 304
    responses = openapi_document["paths"]["/v1/resources/{rtype}/{rid}"]["get"]["responses"]
    assert "304" in responses, "GET /v1/resources/{rtype}/{rid} answers 304 undocumented"


#: What any request can be answered before a view sees it (gunicorn: malformed, slow, too
#: long a request line, too large headers).
TRANSPORT_STATUSES = {"400", "408", "414", "431"}


def test_every_operation_documents_the_answers_any_request_can_get(
    openapi_document: dict[str, Any],
) -> None:
    missing = [
        f"{method} {path}: {sorted(TRANSPORT_STATUSES - set(operation['responses']))}"
        for method, path, operation in _operations(openapi_document)
        if not set(operation["responses"]) >= TRANSPORT_STATUSES
    ]
    assert not missing, "\n".join(missing)


def test_every_operation_has_an_id_and_markdown_text(openapi_document: dict[str, Any]) -> None:
    """Generators name functions after operationIds; Swagger UI and generated docstrings
    render Markdown, where reStructuredText's double backticks show up as noise."""
    ids = [operation.get("operationId") for _, _, operation in _operations(openapi_document)]
    assert None not in ids
    assert len(set(ids)) == len(ids), ids
    text = json.dumps(openapi_document)
    assert "``" not in text


def test_document_bodies_share_one_named_schema(openapi_document: dict[str, Any]) -> None:
    item = openapi_document["paths"]["/v1/resources/{rtype}/{rid}"]
    schemas = [
        media["schema"]
        for method in ("put", "patch")
        for media in item[method]["requestBody"]["content"].values()
    ]
    assert schemas == [{"$ref": "#/components/schemas/Document"}] * len(schemas)
    assert item["patch"]["requestBody"]["content"].keys() >= {"application/merge-patch+json"}


def _link_targets(response: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {link["operationId"]: link["parameters"] for link in response["links"].values()}


def test_links_lead_from_a_submit_to_the_job_and_from_the_job_onwards(
    openapi_document: dict[str, Any],
) -> None:
    paths = openapi_document["paths"]
    by_id = {operation["operationId"] for _, _, operation in _operations(openapi_document)}
    submitted = _link_targets(paths["/v1/bulk"]["post"]["responses"]["202"])
    job = _link_targets(paths["/v1/jobs/{job_id}"]["get"]["responses"]["200"])
    assert submitted["getJob"] == {"job_id": "$response.body#/id"}
    assert {"listJobResults", "streamJobEvents", "cancelJob"} <= job.keys()
    assert set(submitted) | set(job) <= by_id


def test_the_conformance_checks_really_run(openapi_document: dict[str, Any]) -> None:
    """A response with an undocumented status, or a body its schema forbids, is caught:
    the fuzz test above would pass vacuously if the checks were switched off."""
    schema = schemathesis.openapi.from_dict(openapi_document)
    operation = schema["/v1/jobs/{job_id}"]["GET"]
    case = operation.Case(path_parameters={"job_id": "job_x"})
    undocumented = _fake_response(418, {"status": "teapot"})
    with pytest.raises(FailureGroup) as caught:
        case.validate_response(undocumented, checks=[status_code_conformance])
    assert [type(failure).__name__ for failure in caught.value.exceptions] == [
        "UndefinedStatusCode"
    ]
    malformed = _fake_response(200, {"id": 1})
    with pytest.raises(FailureGroup) as caught:
        case.validate_response(malformed, checks=[response_schema_conformance])
    assert "JsonSchemaError" in {type(failure).__name__ for failure in caught.value.exceptions}


def _fake_response(status: int, body: dict[str, Any]) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    response.request = requests.Request("GET", "http://bulkapi.test/v1/jobs/job_x").prepare()
    return response
