"""Resource types: schemas at the door, rules at apply time, GET /v1/types and
strict mode.

Every test runs on both modes: the ``crm`` service with BULKAPI_TYPES=examples.crm (the
example module as shipped), the ``service`` with the suite's own types (``window``,
``guarded``, ``fragile``). Side effects are in test_effects.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from bulkapi.store.tables import operations as operations_table
from tests.api.conftest import assert_problem, strict_types, tenant_of
from tests.conftest import InProcessApi, Service
from tests.types_for_tests import FRAGILE_N


def _lead(rid: str, **data: Any) -> dict[str, Any]:
    return {"op": "upsert", "type": "lead", "id": rid, "data": data}


# --- schemas at the door -------------------------------------------------------------


def test_a_sync_put_with_a_bad_field_is_a_422_naming_it_and_stores_nothing(
    crm_api: InProcessApi,
) -> None:
    api = crm_api
    body = assert_problem(
        api.put("/v1/resources/lead/l-1", json={"score": "abc"}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"score"}
    assert api.get("/v1/resources/lead/l-1").status_code == 404


def test_a_sync_put_missing_a_required_field_names_it(crm_api: InProcessApi) -> None:
    api = crm_api
    body = assert_problem(
        api.put("/v1/resources/lead/l-2", json={"status": "new"}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"score"}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"score": -1}, "score"),
        ({"score": 1, "status": "won"}, "status"),
        ({"score": 1, "colour": "red"}, "colour"),
        ({"score": 1.5}, "score"),
        ({"score": True}, "score"),
    ],
)
def test_sync_put_checks_every_schema_constraint(
    crm_api: InProcessApi, document: dict[str, Any], field: str
) -> None:
    api = crm_api
    body = assert_problem(api.put("/v1/resources/lead/l-3", json=document), 422, "validation_error")
    assert field in body["errors"], body


def test_a_valid_lead_is_stored_as_sent(crm_api: InProcessApi) -> None:
    api = crm_api
    response = api.put("/v1/resources/lead/l-4", json={"score": 0, "status": "new"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["data"] == {"score": 0, "status": "new"}


def test_a_sync_patch_is_checked_as_a_patch(crm_api: InProcessApi) -> None:
    api = crm_api
    assert api.put("/v1/resources/lead/l-5", json={"score": 3}).status_code == 201
    # Its own values are checked ...
    body = assert_problem(
        api.patch("/v1/resources/lead/l-5", json={"score": "x"}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"score"}
    # ... a required field cannot be removed, an optional one can ...
    body = assert_problem(
        api.patch("/v1/resources/lead/l-5", json={"score": None}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"score"}
    assert api.patch("/v1/resources/lead/l-5", json={"status": "contacted"}).status_code == 200
    removed = api.patch("/v1/resources/lead/l-5", json={"status": None})
    assert removed.status_code == 200, removed.get_json()
    assert removed.get_json()["data"] == {"score": 3}


def test_a_sync_patch_is_checked_as_the_merged_document(api: InProcessApi) -> None:
    """A cross-field check that only the whole patched document can fail."""
    assert api.put("/v1/resources/window/w-1", json={"start": 5, "end": 9}).status_code == 201
    body = assert_problem(
        api.patch("/v1/resources/window/w-1", json={"end": 1}), 422, "validation_error"
    )
    assert "end" in body["errors"], body
    current = api.get("/v1/resources/window/w-1").get_json()
    assert (current["version"], current["data"]) == (1, {"start": 5, "end": 9})


def test_one_bad_lead_among_a_thousand_is_a_422_at_its_index_only_and_nothing_is_queued(
    crm: Service, crm_api: InProcessApi
) -> None:
    api = crm_api
    operations = [_lead(f"bulk-{i}", score=i, status="new") for i in range(1000)]
    operations[637] = _lead("bulk-637", score="abc", status="new")
    body = assert_problem(
        api.post("/v1/bulk", json={"operations": operations}), 422, "validation_error"
    )
    assert body["errors"] == {"637": {"data": {"score": ["Not a valid integer."]}}}
    assert api.get("/v1/jobs").get_json()["items"] == []
    assert api.get("/v1/resources/lead").get_json()["items"] == []
    with crm.runtime.engine.connect() as conn:
        queued = conn.execute(
            select(func.count())
            .select_from(operations_table)
            .where(operations_table.c.tenant_id == tenant_of(crm, crm_api))
        ).scalar()
    assert queued == 0


def test_bulk_patches_are_checked_at_admission_with_every_bad_index_named(
    crm_api: InProcessApi,
) -> None:
    api = crm_api
    operations = [
        {"op": "patch", "type": "lead", "id": "p-0", "data": {"status": "contacted"}},
        {"op": "patch", "type": "lead", "id": "p-1", "data": {"score": None}},
        {"op": "patch", "type": "lead", "id": "p-2", "data": {"status": "maybe"}},
        {"op": "delete", "type": "lead", "id": "p-3"},
        {"op": "upsert", "type": "untyped", "id": "p-4", "data": {"score": "anything"}},
    ]
    body = assert_problem(
        api.post("/v1/bulk", json={"operations": operations}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"1", "2"}
    assert set(body["errors"]["1"]["data"]) == {"score"}
    assert set(body["errors"]["2"]["data"]) == {"status"}


# --- rules and merged patches at apply time ------------------------------------------


def test_a_rule_rejection_fails_only_its_operation_with_code_and_message(
    crm_api: InProcessApi,
) -> None:
    api = crm_api
    setup = api.submit([_lead("r-1", score=5, status="qualified")])
    assert api.wait_job(setup["id"])["status"] == "succeeded"
    job = api.submit(
        [
            {"op": "patch", "type": "lead", "id": "r-1", "data": {"status": "new"}},
            _lead("r-3", score=1),
        ]
    )
    assert api.wait_job(job["id"])["status"] == "partially_succeeded"
    rejected, fine = api.results(job["id"])
    assert rejected["status"] == "failed"
    assert rejected["error"]["code"] == "rule_rejected"
    assert "cannot go back to new" in rejected["error"]["message"]
    assert "effects_status" not in rejected
    assert fine["status"] == "succeeded"
    assert api.get("/v1/resources/lead/r-1").get_json()["data"]["status"] == "qualified"


def test_a_bulk_patch_whose_merged_document_is_invalid_fails_alone(api: InProcessApi) -> None:
    window = {"op": "upsert", "type": "window", "id": "r-2", "data": {"start": 1, "end": 4}}
    assert api.wait_job(api.submit([window])["id"])["status"] == "succeeded"
    job = api.submit([{"op": "patch", "type": "window", "id": "r-2", "data": {"start": 10}}])
    assert api.wait_job(job["id"])["status"] == "failed"
    (merged,) = api.results(job["id"])
    assert merged["error"]["code"] == "rule_rejected"
    assert "end" in merged["error"]["message"]
    assert api.get("/v1/resources/window/r-2").get_json()["data"] == {"start": 1, "end": 4}


def test_a_crashing_schema_is_a_503_apply_failed_and_records_nothing(
    service: Service, api: InProcessApi
) -> None:
    """Operator code that crashes while validating is not the client's fault: 503, never
    a 500, and neither the sync write nor the bulk request leaves anything behind."""
    crashed = api.put("/v1/resources/fragile/f-1", json={"n": FRAGILE_N})
    assert_problem(crashed, 503, "apply_failed")
    assert int(crashed.headers["Retry-After"]) >= 1
    assert api.get("/v1/resources/fragile/f-1").status_code == 404
    fine = {"op": "upsert", "type": "fragile", "id": "f-2", "data": {"n": 1}}
    crashing = {"op": "upsert", "type": "fragile", "id": "f-3", "data": {"n": FRAGILE_N}}
    assert_problem(api.post("/v1/bulk", json={"operations": [fine, crashing]}), 503, "apply_failed")
    assert api.get("/v1/jobs").get_json()["items"] == []
    assert api.get("/v1/resources/fragile").get_json()["items"] == []
    assert api.put("/v1/resources/fragile/f-1", json={"n": 1}).status_code == 201


# --- GET /v1/types ---------------------------------------------------------------------


def test_types_list_the_registered_types_with_json_schema(
    crm: Service, crm_api: InProcessApi
) -> None:
    api = crm_api
    body = api.get("/v1/types").get_json()
    by_name = {item["name"]: item for item in body["items"]}
    assert set(by_name) == {"lead", "org"}
    assert body["strict"] is False
    lead = by_name["lead"]["schema"]
    assert lead["type"] == "object"
    assert lead["required"] == ["score"]
    assert lead["properties"]["score"] == {"type": "integer", "minimum": 0}
    assert lead["properties"]["status"]["enum"] == ["new", "contacted", "qualified", "lost"]
    assert by_name["org"]["effects"] == ["unlink_sso"]
    assert by_name["org"]["schema"]["properties"]["allow_custom_sso"] == {"type": "boolean"}
    assert api.get("/v1/types/lead").get_json() == by_name["lead"]
    assert_problem(api.get("/v1/types/nope"), 404, "not_found")
    assert_problem(crm.anonymous().get("/v1/types"), 401, "unauthorized")


def test_a_type_without_schema_is_listed_as_free_form(api: InProcessApi) -> None:
    recorded = api.get("/v1/types/recorded").get_json()
    assert recorded == {
        "name": "recorded",
        "description": "",
        "schema": None,
        "effects": ["record"],
    }
    window = api.get("/v1/types/window").get_json()["schema"]
    assert sorted(window["required"]) == ["end", "start"]


# --- strict mode -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(crm: Service) -> Iterator[Service]:
    """The crm deployment with BULKAPI_STRICT_TYPES=1."""
    yield from strict_types(crm)


def test_strict_mode_refuses_unregistered_types_and_records_nothing(strict: Service) -> None:
    api = strict.api()
    assert api.get("/v1/types").get_json()["strict"] is True
    body = assert_problem(api.put("/v1/resources/gadget/g-1", json={"a": 1}), 422, "unknown_type")
    assert "type" in body["errors"]
    assert_problem(api.delete("/v1/resources/gadget/g-1"), 422, "unknown_type")
    operations = [_lead("k-0", score=1), {"op": "upsert", "type": "gadget", "id": "g", "data": {}}]
    body = assert_problem(
        api.post("/v1/bulk", json={"operations": operations}), 422, "unknown_type"
    )
    assert set(body["errors"]) == {"1"}
    assert api.get("/v1/jobs").get_json()["items"] == []
    assert api.put("/v1/resources/lead/k-1", json={"score": 1}).status_code == 201
    accepted = api.post("/v1/bulk", json={"operations": [_lead("k-2", score=2)]})
    assert accepted.status_code == 202, accepted.get_json()
