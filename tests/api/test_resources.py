"""Single-resource endpoints: reads, synchronous writes, preconditions, lists."""

from __future__ import annotations

import pytest

from tests.api.conftest import JSON, assert_problem, parse_time
from tests.conftest import InProcessApi


def test_put_creates_with_201_etag_and_location(api: InProcessApi) -> None:
    response = api.put("/v1/resources/user/u-1", json={"name": "Ada"})
    assert response.status_code == 201
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == "/v1/resources/user/u-1"
    body = response.get_json()
    assert body["type"] == "user"
    assert body["id"] == "u-1"
    assert body["version"] == 1
    assert body["data"] == {"name": "Ada"}
    parse_time(body["updated_at"])


def test_put_replaces_existing_with_200_and_next_version(api: InProcessApi) -> None:
    api.put("/v1/resources/user/u1", json={"name": "Ada", "role": "admin"})
    response = api.put("/v1/resources/user/u1", json={"name": "Grace"})
    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    assert "Location" not in response.headers
    assert response.get_json()["version"] == 2
    assert response.get_json()["data"] == {"name": "Grace"}  # replaced, not merged


def test_get_returns_the_stored_resource_with_etag(api: InProcessApi) -> None:
    written = api.put("/v1/resources/user/u1", json={"tags": ["a", "b"], "n": 1.5}).get_json()
    response = api.get("/v1/resources/user/u1")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["ETag"] == '"1"'
    assert response.get_json() == written
    assert set(written) == {"type", "id", "version", "data", "updated_at"}


def test_get_absent_resource_is_not_found(api: InProcessApi) -> None:
    assert_problem(api.get("/v1/resources/user/nobody"), 404, "not_found")


def test_patch_applies_json_merge_patch(api: InProcessApi) -> None:
    api.put(
        "/v1/resources/user/u1",
        json={"name": "Ada", "gone": True, "nested": {"keep": 1, "drop": 2}, "list": [1, 2]},
    )
    response = api.patch(
        "/v1/resources/user/u1",
        json={"gone": None, "nested": {"drop": None, "add": {"deep": 3}}, "list": [3], "new": 4},
    )
    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    assert response.get_json()["data"] == {
        "name": "Ada",
        "nested": {"keep": 1, "add": {"deep": 3}},
        "list": [3],
        "new": 4,
    }
    assert api.get("/v1/resources/user/u1").get_json()["data"] == response.get_json()["data"]


def test_patch_accepts_merge_patch_media_type(api: InProcessApi) -> None:
    api.put("/v1/resources/user/u1", json={"a": 1})
    response = api.patch(
        "/v1/resources/user/u1",
        data=b'{"b": 2}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200
    assert response.get_json()["data"] == {"a": 1, "b": 2}


def test_patch_replacing_an_object_with_a_scalar_and_back(api: InProcessApi) -> None:
    api.put("/v1/resources/user/u1", json={"a": {"b": 1}, "c": 5})
    api.patch("/v1/resources/user/u1", json={"a": 7, "c": {"d": None, "e": 1}})
    assert api.get("/v1/resources/user/u1").get_json()["data"] == {"a": 7, "c": {"e": 1}}


def test_patch_absent_resource_is_not_found_and_creates_nothing(api: InProcessApi) -> None:
    assert_problem(api.patch("/v1/resources/user/nobody", json={"a": 1}), 404, "not_found")
    assert_problem(api.get("/v1/resources/user/nobody"), 404, "not_found")


def test_delete_answers_204_then_get_is_not_found(api: InProcessApi) -> None:
    api.put("/v1/resources/user/u1", json={"a": 1})
    response = api.delete("/v1/resources/user/u1")
    assert response.status_code == 204
    assert response.data == b""
    assert_problem(api.get("/v1/resources/user/u1"), 404, "not_found")


def test_delete_absent_or_deleted_resource_is_not_found(api: InProcessApi) -> None:
    assert_problem(api.delete("/v1/resources/user/nobody"), 404, "not_found")
    api.put("/v1/resources/user/u1", json={"a": 1})
    assert api.delete("/v1/resources/user/u1").status_code == 204
    assert_problem(api.delete("/v1/resources/user/u1"), 404, "not_found")
    assert_problem(api.patch("/v1/resources/user/u1", json={"a": 2}), 404, "not_found")


def test_recreating_a_deleted_resource_continues_its_versions(api: InProcessApi) -> None:
    api.put("/v1/resources/user/u1", json={"a": 1})
    api.patch("/v1/resources/user/u1", json={"b": 2})
    deleted = api.delete("/v1/resources/user/u1")
    assert deleted.headers["ETag"] == '"3"'
    recreated = api.put("/v1/resources/user/u1", json={"c": 3})
    assert recreated.status_code == 201
    assert recreated.headers["ETag"] == '"4"'
    assert recreated.get_json()["version"] == 4
    assert recreated.get_json()["data"] == {"c": 3}


def test_if_match_with_current_version_applies(api: InProcessApi) -> None:
    api.put("/v1/resources/user/u1", json={"a": 1})
    put = api.put("/v1/resources/user/u1", json={"a": 2}, headers={"If-Match": '"1"'})
    assert put.status_code == 200
    patch = api.patch("/v1/resources/user/u1", json={"b": 1}, headers={"If-Match": '"2"'})
    assert patch.status_code == 200
    delete = api.delete("/v1/resources/user/u1", headers={"If-Match": '"3"'})
    assert delete.status_code == 204


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_if_match_with_stale_version_is_version_mismatch_and_changes_nothing(
    api: InProcessApi, method: str
) -> None:
    api.put("/v1/resources/user/u1", json={"a": 1})
    api.put("/v1/resources/user/u1", json={"a": 2})
    body = None if method == "DELETE" else {"a": 3}
    response = api.request(method, "/v1/resources/user/u1", json=body, headers={"If-Match": '"1"'})
    assert_problem(response, 412, "version_mismatch")
    current = api.get("/v1/resources/user/u1")
    assert current.headers["ETag"] == '"2"'
    assert current.get_json()["data"] == {"a": 2}


@pytest.mark.parametrize(
    "value", ['"abc"', "1", 'W/"1"', '"2", "3"', '""', '"\u00b2"', '"1' + "0" * 40 + '"', "**"]
)
def test_if_match_that_names_no_version_fails_the_precondition(
    api: InProcessApi, value: str
) -> None:
    api.put("/v1/resources/user/u1", json={"a": 1})
    response = api.put("/v1/resources/user/u1", json={"a": 2}, headers={"If-Match": value})
    assert_problem(response, 412, "version_mismatch")
    assert api.get("/v1/resources/user/u1").get_json()["data"] == {"a": 1}


def test_if_match_with_a_list_applies_when_any_tag_names_the_current_version(
    api: InProcessApi,
) -> None:
    api.put("/v1/resources/user/u1", json={"a": 1})
    listed = api.put("/v1/resources/user/u1", json={"a": 2}, headers={"If-Match": '"7", "1"'})
    assert listed.status_code == 200
    assert listed.headers["ETag"] == '"2"'


def test_if_match_star_applies_to_an_existing_resource_only(api: InProcessApi) -> None:
    """RFC 9110: ``If-Match: *`` holds when there is a current representation."""
    absent = api.put("/v1/resources/user/u9", json={"a": 1}, headers={"If-Match": "*"})
    assert_problem(absent, 412, "version_mismatch")
    assert_problem(api.get("/v1/resources/user/u9"), 404, "not_found")
    api.put("/v1/resources/user/u9", json={"a": 1})
    updated = api.put("/v1/resources/user/u9", json={"a": 2}, headers={"If-Match": "*"})
    assert updated.status_code == 200
    assert updated.get_json()["data"] == {"a": 2}
    assert api.delete("/v1/resources/user/u9", headers={"If-Match": "*"}).status_code == 204
    # Deleted: PATCH and DELETE are 404 whatever the preconditions (RFC 9110 13.2.1).
    for method in ("PATCH", "DELETE"):
        for tag in ("*", '"1"', '"2"'):
            gone = api.request(
                method, "/v1/resources/user/u9", json={"a": 3}, headers={"If-Match": tag}
            )
            assert_problem(gone, 404, "not_found")
    tombstone = api.put("/v1/resources/user/u9", json={"a": 3}, headers={"If-Match": "*"})
    assert_problem(tombstone, 412, "version_mismatch")


def test_if_match_on_an_absent_resource_fails_the_precondition(api: InProcessApi) -> None:
    """Versions start at 1, so no If-Match can hold for a resource that never existed."""
    response = api.put("/v1/resources/user/never", json={"a": 1}, headers={"If-Match": '"0"'})
    assert_problem(response, 412, "version_mismatch")
    assert_problem(api.get("/v1/resources/user/never"), 404, "not_found")


@pytest.mark.parametrize("tag", ['"2"', 'W/"2"', "*", '"9", "2"'])
def test_get_with_if_none_match_naming_the_current_version_is_304(
    api: InProcessApi, tag: str
) -> None:
    api.put("/v1/resources/user/n1", json={"a": 1})
    api.put("/v1/resources/user/n1", json={"a": 2})
    unchanged = api.get("/v1/resources/user/n1", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304
    assert unchanged.headers["ETag"] == '"2"'
    assert unchanged.data == b""


def test_get_with_if_none_match_naming_an_older_version_is_the_resource(
    api: InProcessApi,
) -> None:
    api.put("/v1/resources/user/n2", json={"a": 1})
    api.put("/v1/resources/user/n2", json={"a": 2})
    changed = api.get("/v1/resources/user/n2", headers={"If-None-Match": '"1", W/"3"'})
    assert changed.status_code == 200
    assert changed.get_json()["data"] == {"a": 2}


def test_if_none_match_star_on_existing_resource_is_already_exists(api: InProcessApi) -> None:
    api.put("/v1/resources/user/u1", json={"a": 1})
    response = api.put("/v1/resources/user/u1", json={"a": 2}, headers={"If-None-Match": "*"})
    assert_problem(response, 412, "already_exists")
    assert api.get("/v1/resources/user/u1").get_json()["data"] == {"a": 1}


def test_if_none_match_star_creates_absent_or_deleted_resource(api: InProcessApi) -> None:
    fresh = api.put("/v1/resources/user/u1", json={"a": 1}, headers={"If-None-Match": "*"})
    assert fresh.status_code == 201
    api.delete("/v1/resources/user/u1")
    again = api.put("/v1/resources/user/u1", json={"a": 2}, headers={"If-None-Match": "*"})
    assert again.status_code == 201
    assert again.get_json()["version"] == 3


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/resources/User/u1", "type"),
        ("/v1/resources/1user/u1", "type"),
        ("/v1/resources/" + "t" * 65 + "/u1", "type"),
        ("/v1/resources/user/bad%20id", "id"),
        ("/v1/resources/user/" + "i" * 129, "id"),
        ("/v1/resources/user/caf%C3%A9", "id"),
    ],
)
def test_invalid_resource_key_is_validation_error(api: InProcessApi, path: str, field: str) -> None:
    for response in (api.put(path, json={"a": 1}), api.get(path)):
        body = assert_problem(response, 422, "validation_error")
        assert field in body["errors"]


def test_longest_valid_key_is_accepted(api: InProcessApi) -> None:
    rtype, rid = "t" + "-" * 63, "A._:-" + "z" * 123
    response = api.put(f"/v1/resources/{rtype}/{rid}", json={})
    assert response.status_code == 201
    assert response.get_json()["id"] == rid
    assert api.get(f"/v1/resources/{rtype}/{rid}").get_json()["data"] == {}


@pytest.mark.parametrize("document", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_document_that_is_not_an_object_is_validation_error(
    api: InProcessApi, document: bytes
) -> None:
    response = api.put("/v1/resources/user/u1", data=document, headers=JSON)
    assert_problem(response, 422, "validation_error")
    assert_problem(api.get("/v1/resources/user/u1"), 404, "not_found")


@pytest.mark.parametrize("body", [b"{", b"{'a': 1}", b"", b"\xff\xfe"])
def test_invalid_json_document_is_malformed_body(api: InProcessApi, body: bytes) -> None:
    response = api.put("/v1/resources/user/u1", data=body, headers=JSON)
    assert_problem(response, 400, "malformed_body")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_document_with_wrong_content_type_is_unsupported_media_type(
    api: InProcessApi, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    for method in ("PUT", "PATCH"):
        response = api.request(method, "/v1/resources/user/u1", data=b'{"a":1}', headers=headers)
        assert_problem(response, 415, "unsupported_media_type")


def test_list_walks_every_live_resource_of_a_type_with_keyset_pagination(
    api: InProcessApi,
) -> None:
    for rid in ["e", "a", "d", "b", "c", "f"]:
        api.put(f"/v1/resources/item/{rid}", json={"rid": rid})
    api.put("/v1/resources/other/a", json={"rid": "other"})
    api.delete("/v1/resources/item/d")

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = api.get(f"/v1/resources/item{query}")
        assert response.status_code == 200
        page = response.get_json()
        assert len(page["items"]) <= 2
        for item in page["items"]:
            assert item["type"] == "item"
            assert item["data"] == {"rid": item["id"]}
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a", "b", "c", "e", "f"]
    assert pages == 3


def test_list_of_a_type_without_resources_is_empty(api: InProcessApi) -> None:
    page = api.get("/v1/resources/nothing").get_json()
    assert page == {"items": [], "next_cursor": None}


def test_list_shows_current_versions(api: InProcessApi) -> None:
    api.put("/v1/resources/item/a", json={"v": 1})
    api.patch("/v1/resources/item/a", json={"v": 2})
    items = api.get("/v1/resources/item").get_json()["items"]
    assert [(item["id"], item["version"], item["data"]) for item in items] == [("a", 2, {"v": 2})]


@pytest.mark.parametrize(
    "query", ["?cursor=not-a-cursor", "?cursor=eyJhZnRlciI6IDF9", "?limit=0", "?limit=abc"]
)
def test_list_with_invalid_arguments_is_validation_error(api: InProcessApi, query: str) -> None:
    assert_problem(api.get(f"/v1/resources/item{query}"), 422, "validation_error")


def test_list_of_an_invalid_type_is_validation_error(api: InProcessApi) -> None:
    assert_problem(api.get("/v1/resources/Not_A_Type"), 422, "validation_error")


@pytest.mark.parametrize("rid", [".", ".."])
def test_dot_segment_ids_are_refused_in_bulk_and_on_every_single_resource_call(
    api: InProcessApi, rid: str
) -> None:
    """HTTP clients drop ``.`` and ``..`` path segments, so no URL could name such a
    resource: they are invalid ids, refused before anything is stored."""
    operations = [
        {"op": "upsert", "type": "dots", "id": "fine", "data": {}},
        {"op": "upsert", "type": "dots", "id": rid, "data": {}},
    ]
    body = assert_problem(
        api.post("/v1/bulk", json={"operations": operations}), 422, "validation_error"
    )
    assert list(body["errors"]) == ["1"] and "id" in body["errors"]["1"]
    encoded = rid.replace(".", "%2E")  # as a client that keeps the segment would send it
    path = f"/v1/resources/dots/{encoded}"
    for response in (
        api.put(path, json={}),
        api.patch(path, json={}),
        api.delete(path),
        api.get(path),
    ):
        assert "id" in assert_problem(response, 422, "validation_error")["errors"]
    assert api.get("/v1/resources/dots").get_json()["items"] == []
    assert api.put("/v1/resources/dots/...", json={}).status_code == 201  # not a dot segment
