"""Clients generated from /openapi.json, as integrators generate them.

openapi-python-client (with the configuration shipped in docs/) and openapi-typescript
must accept the document without a single warning, the TypeScript they write must
type-check, and the generated Python client must talk to a real service and read its
answers into its models. Node.js and npm come from the system (``.ci/services`` installs
them): without them these tests fail, they do not skip.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Service, embedded_service
from tests.support import ROOT

#: openapi-python-client's configuration for this API (NDJSON bodies sent as bytes).
PYTHON_CLIENT_CONFIG = ROOT / "docs" / "openapi-python-client.yaml"
#: The npm packages the TypeScript check installs, pinned so a run is repeatable.
NPM_PACKAGES = ("openapi-typescript@7.13.0", "typescript@5.9.3")
#: Where those packages are installed once and reused by later runs.
NPM_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bulkapi-tests"
#: Seconds any generator or compiler may take (npm install included).
COMMAND_TIMEOUT = 300
#: The TypeScript that must compile against the generated types: it names the shapes an
#: integrator relies on, so a schema that went missing or lost a field fails here.
USAGE_TS = """\
import type { components, operations, paths } from "./api";

type Job = components["schemas"]["Job"];
type Submitted = paths["/v1/bulk"]["post"]["responses"][202]["content"]["application/json"];
type Problem = components["schemas"]["Problem"];
type Put = operations["putResource"]["requestBody"];

const token: Submitted["status_token"] = "jst_example";
const status: Job["status"] = "partially_succeeded";
const pending: Job["counts"]["pending"] = 0;
const problem: Problem = {
    type: "urn:bulkapi:problem:resource_busy",
    title: "Resource busy",
    status: 409,
    detail: "busy",
    code: "resource_busy",
    job_id: "job_x",
};
const body: NonNullable<Put>["content"]["application/json"] = { name: "Ada" };
const busy: operations["putResource"]["responses"][409]["content"]["application/problem+json"] =
    problem;
export const used = [token, status, pending, body, busy];
"""


def _run(args: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **extra_env}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if "warn" in line.lower()]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from embedded_service(tmp_path_factory.mktemp("generated-clients"))


@pytest.fixture(scope="module")
def document_file(embedded: Service, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/openapi.json as the running service serves it, written to a file."""
    response = embedded.app.test_client().get("/openapi.json")
    assert response.status_code == 200
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_text(json.dumps(response.get_json(), indent=1))
    return path


@pytest.fixture(scope="module")
def python_client(document_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package openapi-python-client generates (it must not warn)."""
    out = tmp_path_factory.mktemp("python-client") / "client"
    bin_dir = Path(sys.executable).parent
    generated = _run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            str(document_file),
            "--output-path",
            str(out),
            "--config",
            str(PYTHON_CLIENT_CONFIG),
            "--fail-on-warning",
        ],
        cwd=out.parent,
        # Its post-generation hook runs ruff, installed beside the interpreter.
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    assert not _warnings(output), output
    return out


def test_openapi_python_client_generates_every_operation(python_client: Path) -> None:
    modules = {path.stem for path in (python_client / "bulkapi_client" / "api").rglob("*.py")}
    assert {
        "submit_bulk",
        "get_job",
        "list_job_results",
        "stream_job_events",
        "cancel_job",
        "put_resource",
        "patch_resource",
        "get_resource",
    } <= modules
    models = {path.stem for path in (python_client / "bulkapi_client" / "models").glob("*.py")}
    # One Document for PUT and PATCH bodies, not a model per operation and media type.
    assert "document" in models
    assert not [name for name in models if name.endswith("_body")], sorted(models)


def _generated(python_client: Path, name: str) -> Any:
    sys.path.insert(0, str(python_client))
    try:
        return importlib.import_module(f"bulkapi_client.{name}")
    finally:
        sys.path.remove(str(python_client))


def test_the_generated_python_client_reads_real_answers(
    python_client: Path, embedded: Service
) -> None:
    """Through the generated functions and models: submit, follow, write, read, fail."""
    client_module = _generated(python_client, "client")
    models = _generated(python_client, "models")
    submit_bulk = _generated(python_client, "api.bulk.submit_bulk")
    get_job = _generated(python_client, "api.jobs.get_job")
    put_resource = _generated(python_client, "api.resources.put_resource")
    get_resource = _generated(python_client, "api.resources.get_resource")
    client = client_module.AuthenticatedClient(
        base_url="http://bulkapi.test",
        token=embedded.new_key(),
        httpx_args={"transport": httpx.WSGITransport(app=embedded.app)},
    )
    operation = models.Operation.from_dict(
        {"op": "upsert", "type": "contact", "id": "c-1", "data": {"name": "Ada"}}
    )
    submitted = submit_bulk.sync(client=client, body=models.BulkRequest(operations=[operation]))
    assert isinstance(submitted, models.SubmittedJob), submitted
    assert submitted.total == 1
    job = get_job.sync(submitted.id, client=client, wait=30)
    assert isinstance(job, models.Job)
    assert job.status == "succeeded", job.to_dict()
    assert job.counts.succeeded == 1

    written = put_resource.sync_detailed(
        "contact", "c-1", client=client, body=models.Document.from_dict({"name": "Grace"})
    )
    assert written.status_code == 200
    assert isinstance(written.parsed, models.Resource)
    assert written.parsed.version == 2
    assert written.headers["ETag"] == '"2"'

    stale = put_resource.sync(
        "contact", "c-1", client=client, body=models.Document.from_dict({}), if_match='"1"'
    )
    assert isinstance(stale, models.Problem)
    assert (stale.status, stale.code) == (412, "version_mismatch")
    missing = get_resource.sync("contact", "nobody", client=client)
    assert isinstance(missing, models.Problem)
    assert missing.code == "not_found"


@pytest.fixture(scope="module")
def npm_tools() -> Path:
    """openapi-typescript and tsc, installed once into a cache directory."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is missing: run .ci/services (it installs Node.js and npm)"
    assert shutil.which("node") is not None, "node is missing: run .ci/services"
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    wanted = NPM_CACHE / "installed.txt"
    # Test runs of several checkouts may share the cache: one installs, the others wait.
    with (NPM_CACHE / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not wanted.exists() or wanted.read_text() != " ".join(NPM_PACKAGES):
            install = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM_CACHE)]
            installed = _run([*install, *NPM_PACKAGES], cwd=NPM_CACHE)
            assert installed.returncode == 0, installed.stdout + installed.stderr
            wanted.write_text(" ".join(NPM_PACKAGES))
    return NPM_CACHE / "node_modules" / ".bin"


def test_openapi_typescript_output_type_checks(
    npm_tools: Path, document_file: Path, tmp_path: Path
) -> None:
    generated = _run(
        [str(npm_tools / "openapi-typescript"), str(document_file), "-o", "api.d.ts"], tmp_path
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    assert not _warnings(output), output
    (tmp_path / "usage.ts").write_text(USAGE_TS)
    (tmp_path / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "target": "es2022",
                    "module": "es2022",
                    "moduleResolution": "bundler",
                },
                "files": ["api.d.ts", "usage.ts"],
            }
        )
    )
    checked = _run([str(npm_tools / "tsc"), "--noEmit", "-p", "tsconfig.json"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
