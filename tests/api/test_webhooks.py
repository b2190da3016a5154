"""Webhooks: a finished job is POSTed to its callback_url, signed, retried, listed.

The receiver is a real HTTP server on 127.0.0.1 started by each test; the test services
allow private callbacks (tests/support.py), except ``strict`` below, which keeps the
default and so refuses them. Signatures are checked with the test's own implementation
of the Standard Webhooks scheme, not with bulkapi's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bulkapi.core.webhooks import forbidden_host
from bulkapi.store.tenants import signing_secret
from tests.api.conftest import NDJSON, assert_problem
from tests.conftest import InProcessApi, Service, embedded_service
from tests.receivers import Received, Receiver
from tests.support import TEST_WEBHOOK_ATTEMPTS, WAIT_SECONDS, free_port

FINAL = {"delivered", "failed"}


@pytest.fixture
def tenant(service: Service) -> tuple[InProcessApi, str]:
    """A fresh tenant's API and its webhook signing secret."""
    name = f"hooks-{uuid.uuid4().hex[:10]}"
    api = service.api(name)
    with service.runtime.engine.connect() as conn:
        secret = signing_secret(conn, name)
    assert secret is not None
    return api, secret


def _op(rid: str = "w1") -> dict[str, Any]:
    return {"op": "upsert", "type": "hook", "id": rid, "data": {"n": 1}}


def _verify(secret: str, request: Received) -> None:
    """Standard Webhooks verification, written from the spec: HMAC-SHA256 keyed with
    the base64-decoded secret after ``whsec_``, over ``id.timestamp.body``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    assert timestamp.isdigit()
    signed = f"{msg_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [
        sig.split(",", 1)[1]
        for sig in request.headers["webhook-signature"].split()
        if sig.startswith("v1,")
    ]
    assert any(hmac.compare_digest(expected, sig) for sig in offered), request.headers


def _deliveries(api: InProcessApi, job_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/jobs/{job_id}/deliveries")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _final_deliveries(api: InProcessApi, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        body = _deliveries(api, job_id)
        if body.get("delivery", {}).get("status") in FINAL:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery of {job_id} did not end: {body}")
        time.sleep(0.1)


def test_a_finished_job_is_posted_signed_with_exactly_its_representation(
    tenant: tuple[InProcessApi, str], receiver: Receiver
) -> None:
    api, secret = tenant
    job = api.submit([_op()], callback_url=receiver.url("/hook?src=bulk"))
    api.wait_job(job["id"])
    listed = _final_deliveries(api, job["id"])

    assert listed["delivery"]["status"] == "delivered"
    [request] = receiver.received()
    assert request.path == "/hook?src=bulk"
    assert orjson.loads(request.body) == api.get(f"/v1/jobs/{job['id']}").get_json()
    assert orjson.loads(request.body)["status"] == "succeeded"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("bulkapi")
    assert request.headers["webhook-id"] == listed["delivery"]["webhook_id"]
    _verify(secret, request)
    [attempt] = listed["items"]
    assert attempt["attempt"] == 1 and attempt["status_code"] == 204
    assert attempt["error"] is None and attempt["duration_ms"] >= 0
    assert attempt["at"].endswith("Z")
    assert listed["delivery"]["url"] == receiver.url("/hook?src=bulk")


def test_failed_attempts_are_retried_under_one_webhook_id_and_each_is_listed(
    tenant: tuple[InProcessApi, str], receiver: Receiver
) -> None:
    api, secret = tenant
    receiver.failures = 2
    job = api.submit([_op()], callback_url=receiver.url())
    api.wait_job(job["id"])
    listed = _final_deliveries(api, job["id"])

    assert listed["delivery"]["status"] == "delivered"
    requests = receiver.received()
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {listed["delivery"]["webhook_id"]}
    assert {r.body for r in requests} == {requests[0].body}
    for request in requests:
        _verify(secret, request)
    assert [(a["attempt"], a["status_code"]) for a in listed["items"]] == [
        (1, 500),
        (2, 500),
        (3, 204),
    ]
    assert [a["error"] for a in listed["items"]] == ["HTTP 500", "HTTP 500", None]
    assert listed["delivery"]["attempts"] == 3


def test_a_receiver_that_always_fails_gets_every_attempt_then_the_delivery_fails(
    tenant: tuple[InProcessApi, str], receiver: Receiver
) -> None:
    api, _ = tenant
    receiver.failures = 1_000
    job = api.submit([_op()], callback_url=receiver.url())
    api.wait_job(job["id"])
    listed = _final_deliveries(api, job["id"])

    assert listed["delivery"]["status"] == "failed"
    assert listed["delivery"]["next_attempt_at"] is None
    assert len(receiver.received()) == TEST_WEBHOOK_ATTEMPTS
    assert [a["attempt"] for a in listed["items"]] == list(range(1, TEST_WEBHOOK_ATTEMPTS + 1))
    assert all(a["status_code"] == 500 and a["error"] for a in listed["items"])


def test_no_answer_is_a_failed_attempt_with_no_status_code(
    tenant: tuple[InProcessApi, str],
) -> None:
    api, _ = tenant
    job = api.submit([_op()], callback_url=f"http://127.0.0.1:{free_port()}/nobody")
    api.wait_job(job["id"])
    listed = _final_deliveries(api, job["id"])

    assert listed["delivery"]["status"] == "failed"
    assert len(listed["items"]) == TEST_WEBHOOK_ATTEMPTS
    assert all(a["status_code"] is None and a["error"] for a in listed["items"])


def test_a_job_without_callback_url_has_no_delivery(api: InProcessApi) -> None:
    job = api.submit([_op()])
    api.wait_job(job["id"])
    assert _deliveries(api, job["id"]) == {"items": []}


def test_a_cancelled_job_is_delivered_too(
    service: Service, tenant: tuple[InProcessApi, str], receiver: Receiver
) -> None:
    api, secret = tenant
    with service.drains_paused():
        job = api.submit([_op("c1"), _op("c2")], callback_url=receiver.url())
        cancelled = api.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 202, cancelled.get_json()
    listed = _final_deliveries(api, job["id"])  # embedded: workers run again after the block
    assert listed["delivery"]["status"] == "delivered"
    [request] = receiver.received()
    sent = orjson.loads(request.body)
    assert sent["status"] == "cancelled"
    assert sent == api.get(f"/v1/jobs/{job['id']}").get_json()
    _verify(secret, request)


def test_deliveries_are_read_with_the_api_key_only_and_hidden_from_other_tenants(
    service: Service, tenant: tuple[InProcessApi, str], receiver: Receiver
) -> None:
    api, _ = tenant
    job = api.submit([_op()], callback_url=receiver.url())
    api.wait_job(job["id"])
    assert _final_deliveries(api, job["id"])["items"]

    other = service.api()
    assert_problem(other.get(f"/v1/jobs/{job['id']}/deliveries"), 404, "not_found")
    # A status token reads the job's status, results and events, nothing else.
    by_token = InProcessApi(api.client, job["status_token"])
    assert by_token.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert_problem(by_token.get(f"/v1/jobs/{job['id']}/deliveries"), 401, "unauthorized")
    assert_problem(service.anonymous().get(f"/v1/jobs/{job['id']}/deliveries"), 401, "unauthorized")


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An embedded service with the default setting: private callbacks refused."""
    yield from embedded_service(
        tmp_path_factory.mktemp("strict-callbacks"), allow_private_callbacks=False
    )


def _assert_refused_at_admission(api: InProcessApi, url: str) -> None:
    """Refused in JSON and NDJSON submits alike, with nothing recorded."""
    body = assert_problem(
        api.post("/v1/bulk", json={"operations": [_op()], "callback_url": url}),
        422,
        "callback_url_forbidden",
    )
    assert list(body["errors"]) == ["callback_url"]
    ndjson = api.post(
        "/v1/bulk",
        data=orjson.dumps(_op()),
        headers=NDJSON,
        query_string={"callback_url": url},
    )
    assert_problem(ndjson, 422, "callback_url_forbidden")
    assert api.get("/v1/jobs").get_json()["items"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
        "http://localhost:8000/hook",
        "https://admin.localhost/hook",
        "http://127.1/hook",
    ],
)
def test_callbacks_to_local_or_private_targets_are_refused_at_admission(
    strict: Service, url: str
) -> None:
    _assert_refused_at_admission(strict.api(), url)


def _this_machine() -> str:
    """A name from /etc/hosts, resolved without DNS: this machine's own."""
    name = socket.gethostname()
    assert forbidden_host(name) is None  # only its addresses can tell
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    assert all(forbidden_host(str(address)) for address in addresses), (
        f"these tests need the machine's host name to resolve to itself (/etc/hosts); "
        f"{name} resolves to {addresses}"
    )
    return name


def test_a_name_that_resolves_to_a_forbidden_address_is_refused_at_admission(
    strict: Service, receiver: Receiver
) -> None:
    _assert_refused_at_admission(strict.api(), receiver.url(host=_this_machine()))


@pytest.fixture(scope="module")
def strict_without_lookups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Private callbacks refused, names not resolved at submit: only deliveries check."""
    yield from embedded_service(
        tmp_path_factory.mktemp("strict-no-lookups"),
        allow_private_callbacks=False,
        callback_lookup_timeout=0.0,
    )


def test_a_name_that_resolves_to_a_forbidden_address_fails_at_delivery_without_a_request(
    strict_without_lookups: Service, receiver: Receiver
) -> None:
    api = strict_without_lookups.api()
    job = api.submit([_op()], callback_url=receiver.url(host=_this_machine()))
    api.wait_job(job["id"])
    listed = _final_deliveries(api, job["id"])

    assert listed["delivery"]["status"] == "failed"
    [attempt] = listed["items"]  # refused for good: no retries
    assert attempt["status_code"] is None and attempt["error"].startswith("refused:")
    assert receiver.received() == []
