"""Headers that go with the content: none where there is no content, and OPTIONS and
/docs answers that neither send HTML nor make browsers call other sites."""

from __future__ import annotations

from werkzeug.test import TestResponse

from tests.conftest import InProcessApi

RES = "/v1/resources/t/headers"


def _assert_no_content(response: TestResponse, status: int) -> None:
    assert response.status_code == status, response.get_data()
    assert response.get_data() == b""
    assert "Content-Type" not in response.headers, dict(response.headers)


def test_a_delete_answers_204_without_a_content_type(api: InProcessApi) -> None:
    assert api.put(RES, json={"a": 1}).status_code == 201
    _assert_no_content(api.delete(RES), 204)


def test_a_not_modified_read_has_no_content_type(api: InProcessApi) -> None:
    etag = api.put(RES, json={"a": 1}).headers["ETag"]
    _assert_no_content(api.get(RES, headers={"If-None-Match": etag}), 304)


def test_resuming_events_after_the_terminal_one_is_204_without_a_content_type(
    api: InProcessApi,
) -> None:
    job = api.submit([{"op": "upsert", "type": "t", "id": "sse", "data": {}}])
    api.wait_job(job["id"])
    stream = api.get(f"/v1/jobs/{job['id']}/events").get_data(as_text=True)
    last_id = [line for line in stream.splitlines() if line.startswith("id:")][-1][3:].strip()
    resumed = api.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": last_id})
    _assert_no_content(resumed, 204)


def test_options_says_what_is_allowed_without_an_html_body(api: InProcessApi) -> None:
    response = api.request("OPTIONS", RES)
    _assert_no_content(response, 204)
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}
    assert allowed >= {"GET", "PUT", "PATCH", "DELETE", "OPTIONS"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_swagger_ui_never_sends_the_spec_to_an_online_validator(api: InProcessApi) -> None:
    page = api.get("/docs").get_data(as_text=True)
    assert '"validatorUrl": null' in page, page
