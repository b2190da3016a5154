"""The command line as a user runs it: installed scripts, subprocesses, real HTTP."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from sqlalchemy import create_engine, inspect, text

from bulkapi.config import Settings
from bulkapi.store.drain import PARTITION_LOCK_SPACE
from bulkapi.store.tables import metadata
from tests.integration.conftest import (
    GUNICORN,
    CwdProcess,
    clean_env,
    create_key,
    run_cli,
    serve,
)
from tests.support import (
    REDIS_URL,
    ROOT,
    HttpApi,
    database_url,
    free_port,
    service_env,
    start_workers,
    wait_ready,
    wait_until,
)


def _submit(api: HttpApi, operations: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.request("POST", "/v1/bulk", json={"operations": operations})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def _upserts(ids: list[str], **data: Any) -> list[dict[str, Any]]:
    return [{"op": "upsert", "type": "doc", "id": rid, "data": {"id": rid, **data}} for rid in ids]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_db_upgrade_creates_the_schema_and_is_idempotent(kind: str, tmp_path: Path) -> None:
    with database_url(kind, tmp_path) as url:
        env = clean_env(BULKAPI_DATABASE_URL=url)
        first = run_cli(["db", "upgrade"], env, tmp_path)
        assert first.returncode == 0, first.stderr
        assert "schema created" in first.stderr, first.stderr
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
            assert set(metadata.tables) <= tables, tables
            with engine.connect() as conn:
                head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            second = run_cli(["db", "upgrade"], env, tmp_path)
            assert second.returncode == 0, second.stderr
            assert "schema is up to date" in second.stderr, second.stderr
            with engine.connect() as conn:
                again = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            assert again == [(head,)]
        finally:
            engine.dispose()


def test_keys_create_list_and_revoke_control_who_gets_in(tmp_path: Path) -> None:
    env = clean_env(BULKAPI_DATABASE_URL=f"sqlite:///{tmp_path / 'keys.db'}")
    assert run_cli(["db", "upgrade"], env, tmp_path).returncode == 0
    created = run_cli(["keys", "create", "--tenant", "acme"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    acme_key = created.stdout.strip().splitlines()[-1]
    assert acme_key and " " not in acme_key
    other_key = create_key(env, "globex", tmp_path)

    listed = run_cli(["keys", "list"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert acme_key not in listed.stdout and other_key not in listed.stdout
    rows = [line.split("\t") for line in listed.stdout.strip().splitlines()]
    acme_rows = [row for row in rows if row[1] == "acme"]
    assert len(acme_rows) == 1 and acme_rows[0][-1] == "active", listed.stdout
    acme_key_id = acme_rows[0][0]
    assert acme_key_id in created.stdout

    server, base = serve(env, tmp_path / "serve.log", tmp_path)
    with server:
        acme, other = HttpApi(base, acme_key), HttpApi(base, other_key)
        assert acme.request("GET", "/v1/jobs").status_code == 200
        assert acme.request("PUT", "/v1/resources/doc/d1", json={"a": 1}).status_code == 201

        revoked = run_cli(["keys", "revoke", acme_key_id], env, tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        # Each API process may remember a valid key for BULKAPI_CREDENTIAL_CACHE_SECONDS.
        wait_until(
            lambda: acme.request("GET", "/v1/resources/doc/d1").status_code == 401,
            what="the revoked key to be refused",
        )
        refused = acme.request("GET", "/v1/resources/doc/d1")
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert refused.json()["code"] == "unauthorized"
        assert other.request("GET", "/v1/jobs").status_code == 200

    listed = run_cli(["keys", "list"], env, tmp_path)
    assert f"{acme_key_id}\tacme\t" in listed.stdout
    acme_line = next(line for line in listed.stdout.splitlines() if line.startswith(acme_key_id))
    assert acme_line.endswith("\trevoked"), listed.stdout
    again = run_cli(["keys", "revoke", acme_key_id], env, tmp_path)
    assert again.returncode != 0
    assert acme_key_id in again.stderr


def test_serve_with_no_configuration_runs_embedded_mode_in_the_working_directory(
    tmp_path: Path,
) -> None:
    env = clean_env()
    server, base = serve(env, tmp_path / "serve.log", tmp_path)
    with server:
        assert (tmp_path / "bulkapi.db").exists()
        api = HttpApi(base, create_key(env, "solo", tmp_path))
        job = _submit(api, _upserts(["a", "b", "c"], n=1))
        assert api.wait_job(job["id"])["status"] == "succeeded"
        for rid in ("a", "b", "c"):
            resource = api.request("GET", f"/v1/resources/doc/{rid}")
            assert resource.status_code == 200
            assert resource.json()["data"] == {"id": rid, "n": 1}
            assert resource.headers["ETag"] == '"1"'
        assert server.terminate() == 0, server.log()
    assert "embedded mode" in server.log()


def test_production_serve_says_which_database_and_broker_it_uses_without_credentials(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    with_password = postgres_url.replace("://postgres@", "://postgres:hunter2@", 1)
    assert with_password != postgres_url
    env = service_env(with_password, REDIS_URL, redis_namespace)
    assert run_cli(["db", "upgrade"], env).returncode == 0
    server, _ = serve(env, tmp_path / "serve.log")
    with server:
        assert server.terminate() == 0, server.log()
    log = server.log()
    assert "production mode" in log, log
    assert f"database postgresql+psycopg://{postgres_url.rpartition('@')[2]}" in log, log
    assert f"broker {REDIS_URL}" in log, log
    assert "hunter2" not in log


def _pending(url: str, job_id: str) -> int:
    query = text("SELECT count(*) FROM operations WHERE job_id = :j AND status = 'pending'")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(query, {"j": job_id}).scalar_one())
    finally:
        engine.dispose()


@contextmanager
def _drains_held(url: str) -> Iterator[None]:
    """Hold every partition's advisory lock, so drains find them all busy (PostgreSQL)."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for partition in range(Settings().partitions):
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (PARTITION_LOCK_SPACE, partition))
        yield


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sigterm_stops_serve_cleanly_and_a_job_accepted_before_it_applies_once_after_restart(
    kind: str, tmp_path: Path
) -> None:
    """Embedded mode: the database is the queue of record, so a restart finishes the job.

    On PostgreSQL every partition is held while the job is accepted and the server stops,
    so the whole job is still pending at restart. On SQLite one operation per batch makes
    that likely but not certain; exactly-once is asserted either way.
    """
    ids = [f"d{n:03d}" for n in range(300)]
    with database_url(kind, tmp_path) as url:
        env = clean_env(
            BULKAPI_DATABASE_URL=url, BULKAPI_BATCH_SIZE="1", BULKAPI_DRAIN_BUDGET="0.01"
        )
        server, base = serve(env, tmp_path / "first.log", tmp_path)
        with server:
            api = HttpApi(base, create_key(env, "restart", tmp_path))
            first = _submit(api, _upserts(ids, round=1))
            assert api.wait_job(first["id"])["status"] == "succeeded"
            with _drains_held(url) if kind == "postgres" else nullcontext():
                second = _submit(api, _upserts(ids, round=2))
                assert server.terminate() == 0, server.log()
                pending = _pending(url, second["id"])
        print(f"\n{kind}: {pending} of {len(ids)} operations pending at shutdown")
        if kind == "postgres":
            assert pending == len(ids)

        server, base = serve(env, tmp_path / "second.log", tmp_path)
        with server:
            api = HttpApi(base, api.key)
            job = api.wait_job(second["id"])
            assert job["status"] == "succeeded", job
            assert job["counts"] == {
                "pending": 0,
                "succeeded": len(ids),
                "failed": 0,
                "cancelled": 0,
            }
            history = [entry["status"] for entry in job["status_history"]]
            assert history == ["queued", "processing", "succeeded"], history
            results = api.results(second["id"])
            assert [(r["id"], r["status"], r["version"]) for r in results] == [
                (rid, "succeeded", 2) for rid in ids
            ]
            for rid in ids[:: len(ids) // 10]:
                resource = api.request("GET", f"/v1/resources/doc/{rid}")
                assert resource.json()["data"] == {"id": rid, "round": 2}
                assert resource.headers["ETag"] == '"2"'
            assert server.terminate() == 0, server.log()
        if kind == "sqlite":
            with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
                versions = db.execute("SELECT DISTINCT version FROM resources").fetchall()
            assert versions == [(2,)]


def test_worker_without_a_broker_exits_non_zero_and_says_why(tmp_path: Path) -> None:
    env = clean_env(BULKAPI_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}")
    out = run_cli(["worker"], env, tmp_path)
    assert out.returncode != 0
    assert "BULKAPI_BROKER_URL" in out.stderr, out.stderr


def test_gunicorn_serves_wsgi_app_in_production_mode(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    env = service_env(postgres_url, REDIS_URL, redis_namespace)
    assert run_cli(["db", "upgrade"], env).returncode == 0
    key = create_key(env, "fleet")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [GUNICORN, "wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    # As docs/operations.md says to run it: bulkapi's worker class, no control socket.
    argv += ["-k", "bulkapi.server.Worker", "--threads", "4", "--no-control-socket"]
    with (
        start_workers(env, tmp_path),
        CwdProcess(argv, env, tmp_path / "gunicorn.log", ROOT) as web,
    ):
        wait_ready(web, base)
        api = HttpApi(base, key)
        job = _submit(api, _upserts(["x", "y"], n=1))
        assert api.wait_job(job["id"])["status"] == "succeeded"
        waited = api.request(
            "PUT", "/v1/resources/doc/x", json={"n": 2}, headers={"Prefer": "wait=30"}
        )
        assert waited.status_code == 200, waited.text
        assert waited.json()["version"] == 2
        assert requests.get(base + "/openapi.json", timeout=30).status_code == 200
        too_long = requests.get(base + "/" + "a" * 5000, timeout=30)
        assert too_long.status_code == 414
        assert too_long.headers["Content-Type"] == "application/problem+json"
        assert too_long.json()["code"] == "uri_too_long"
        assert web.terminate() == 0, web.log()


def test_serve_with_the_example_types_module_checks_leads_and_runs_org_effects(
    tmp_path: Path,
) -> None:
    """``BULKAPI_TYPES=examples.crm bulkapi serve`` in a checkout, as docs/extending.md
    tells an operator to try it: the module is found in the working directory."""
    env = clean_env(
        BULKAPI_DATABASE_URL=f"sqlite:///{tmp_path / 'crm.db'}", BULKAPI_TYPES="examples.crm"
    )
    env.pop("PYTHONPATH", None)
    server, base = serve(env, tmp_path / "serve.log", ROOT)
    with server:
        api = HttpApi(base, create_key(env, "crm", ROOT))
        bad = api.request("PUT", "/v1/resources/lead/l-1", json={"score": "abc"})
        assert bad.status_code == 422, bad.text
        assert bad.headers["Content-Type"] == "application/problem+json"
        assert set(bad.json()["errors"]) == {"score"}

        leads = [
            {"op": "upsert", "type": "lead", "id": f"l-{i}", "data": {"score": i}}
            for i in range(1000)
        ]
        leads[999]["data"] = {"score": 1, "status": "won"}
        refused = api.request("POST", "/v1/bulk", json={"operations": leads})
        assert refused.status_code == 422, refused.text
        assert set(refused.json()["errors"]) == {"999"}
        assert api.request("GET", "/v1/jobs").json()["items"] == []

        names = {item["name"] for item in api.request("GET", "/v1/types").json()["items"]}
        assert names == {"lead", "org"}

        org = {"name": "Acme", "allow_custom_sso": True}
        assert api.request("PUT", "/v1/resources/org/acme", json=org).status_code == 201
        off = {"op": "patch", "type": "org", "id": "acme", "data": {"allow_custom_sso": False}}
        job = _submit(api, [off])
        assert api.wait_job(job["id"])["status"] == "succeeded"

        def unlinked() -> list[dict[str, Any]]:
            (result,) = api.results(job["id"])
            return [] if result.get("effects_status") != "succeeded" else result["effects"]

        (effect,) = wait_until(unlinked, what="the unlink_sso effect to run")
        assert (effect["name"], effect["version"]) == ("unlink_sso", 2)
        assert effect["operation_id"] == f"{job['id']}.0"
        assert server.terminate() == 0, server.log()
    assert f"would unlink SSO connections of org acme (version 2, key {job['id']}.0)" in (
        server.log()
    )


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [
        (["serve"], {"BULKAPI_TYPES": "no_such_types_module"}, "could not be loaded"),
        (
            ["worker"],
            {"BULKAPI_TYPES": "no_such_types_module", "BULKAPI_BROKER_URL": REDIS_URL},
            "could not be loaded",
        ),
        (["keys", "list"], {"BULKAPI_PARTITIONS": "many"}, "BULKAPI_PARTITIONS must be"),
    ],
)
def test_a_broken_configuration_stops_the_command_with_one_clear_line(
    tmp_path: Path, command: list[str], extra: dict[str, str], message: str
) -> None:
    env = clean_env(BULKAPI_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", **extra)
    result = run_cli(command, env, tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_new_tenant_shows_its_signing_secret_and_tenants_secret_prints_or_rotates_it(
    tmp_path: Path,
) -> None:
    env = clean_env(BULKAPI_DATABASE_URL=f"sqlite:///{tmp_path / 'secrets.db'}")
    assert run_cli(["db", "upgrade"], env, tmp_path).returncode == 0
    created = run_cli(["keys", "create", "--tenant", "acme"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    assert lines[-1].startswith("bk_")  # the key is still the last line
    [shown] = [word for line in lines[:-1] for word in line.split() if word.startswith("whsec_")]
    again = run_cli(["keys", "create", "--tenant", "acme"], env, tmp_path)
    assert "whsec_" not in again.stdout  # only when the tenant is created

    printed = run_cli(["tenants", "secret", "--tenant", "acme"], env, tmp_path)
    assert printed.returncode == 0 and printed.stdout.strip() == shown
    rotated = run_cli(["tenants", "secret", "--tenant", "acme", "--rotate"], env, tmp_path)
    assert rotated.returncode == 0 and rotated.stdout.strip() not in ("", shown)
    assert run_cli(["tenants", "secret", "--tenant", "acme"], env, tmp_path).stdout == (
        rotated.stdout
    )
    missing = run_cli(["tenants", "secret", "--tenant", "nobody"], env, tmp_path)
    assert missing.returncode != 0 and "no tenant nobody" in missing.stderr


def test_keys_create_in_embedded_mode_needs_no_db_upgrade_first(tmp_path: Path) -> None:
    """Embedded mode needs no setup step: the keys command creates the schema, as serve
    does, and the key it prints lets requests in."""
    env = clean_env()  # embedded: bulkapi.db in the working directory
    created = run_cli(["keys", "create", "--tenant", "first"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    assert "Traceback" not in created.stderr
    key = created.stdout.strip().splitlines()[-1]
    listed = run_cli(["keys", "list"], env, tmp_path)
    assert listed.returncode == 0 and "\tfirst\t" in listed.stdout
    server, base = serve(env, tmp_path / "serve.log", tmp_path)
    with server:
        answer = requests.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_keys_commands_in_production_mode_without_a_schema_say_so_in_one_line(
    kind: str, tmp_path: Path
) -> None:
    """Production mode leaves the schema to `db upgrade`: without it a keys command is one
    clear line and a non-zero exit, creates nothing (no stray SQLite file) and no tables."""
    with database_url(kind, tmp_path) as url:
        env = clean_env(BULKAPI_DATABASE_URL=url, BULKAPI_BROKER_URL=REDIS_URL)
        for command in (["keys", "create", "--tenant", "early"], ["keys", "list"]):
            result = run_cli(command, env, tmp_path)
            assert result.returncode == 1, (result.stdout, result.stderr)
            assert "bulkapi db upgrade" in result.stderr
            assert "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        if kind == "sqlite":
            assert list(tmp_path.glob("*.db")) == []
        else:
            engine = create_engine(url)
            try:
                assert inspect(engine).get_table_names() == []
            finally:
                engine.dispose()
        assert run_cli(["db", "upgrade"], env, tmp_path).returncode == 0
        assert create_key(env, "after-upgrade", tmp_path)
