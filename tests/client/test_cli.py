"""``bulkapi submit`` and ``bulkapi jobs`` as a user runs them: the installed command in
a subprocess, against a real server on both modes."""

from __future__ import annotations

import json
from pathlib import Path

from bulkapi.client import Client
from tests.client.conftest import Served
from tests.integration.conftest import clean_env, run_cli
from tests.support import free_port


def _env(served: Served, key: str) -> dict[str, str]:
    return clean_env(BULKAPI_API_URL=served.base_url, BULKAPI_API_KEY=key)


def _lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _upsert(rid: str) -> str:
    return json.dumps({"op": "upsert", "type": "doc", "id": rid, "data": {"id": rid}})


def _patch(rid: str) -> str:
    return json.dumps({"op": "patch", "type": "doc", "id": rid, "data": {"patched": True}})


def _jobs(served: Served, key: str) -> list[str]:
    with Client(served.base_url, key) as client:
        return [job.id for job in client.jobs()]


def test_an_invalid_operation_is_reported_at_its_line(served: Served, tmp_path: Path) -> None:
    key = served.new_key()
    ops = _lines(tmp_path / "ops.ndjson", _upsert("a"), "", '{"op": "frob", "type": "doc"}')
    out = run_cli(["submit", str(ops)], _env(served, key), tmp_path)
    assert out.returncode == 2, out.stderr
    assert "validation_error" in out.stderr
    assert f"{ops}:3: " in out.stderr and "op: Must be one of" in out.stderr
    assert _jobs(served, key) == []


def test_duplicates_name_every_line_involved(served: Served, tmp_path: Path) -> None:
    key = served.new_key()
    ops = _lines(tmp_path / "dup.ndjson", _upsert("a"), _upsert("b"), "", _upsert("a"))
    out = run_cli(["submit", str(ops)], _env(served, key), tmp_path)
    assert out.returncode == 2, out.stderr
    assert "doc/a is on lines 1, 4" in out.stderr
    assert _jobs(served, key) == []


def test_lines_that_are_not_json_are_named(served: Served, tmp_path: Path) -> None:
    key = served.new_key()
    ops = _lines(tmp_path / "broken.ndjson", _upsert("a"), "", "{not json", _upsert("c"), "[")
    out = run_cli(["submit", str(ops)], _env(served, key), tmp_path)
    assert out.returncode == 2
    assert f"{ops}:3: Not a valid JSON line." in out.stderr
    assert f"{ops}:5: Not a valid JSON line." in out.stderr
    assert _jobs(served, key) == []


def test_submit_wait_succeeds_with_exit_code_zero(served: Served, tmp_path: Path) -> None:
    key = served.new_key()
    ops = _lines(tmp_path / "ok.ndjson", *(_upsert(f"ok-{n}") for n in range(2_000)))
    out = run_cli(["submit", str(ops), "--wait"], _env(served, key), tmp_path)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    assert _jobs(served, key) == [job_id]
    assert "accepted" in out.stderr and "100%" in out.stderr
    assert "succeeded: 2000 succeeded, 0 failed, 0 cancelled" in out.stderr


def test_partial_success_names_the_failed_lines_and_writes_them_out(
    served: Served, tmp_path: Path
) -> None:
    key = served.new_key()
    env = _env(served, key)
    ops = _lines(
        tmp_path / "mixed.ndjson",
        _upsert("m1"),
        _patch("absent-1"),
        "",
        _upsert("m2"),
        _patch("absent-2"),
    )
    out = run_cli(["submit", str(ops), "--wait"], env, tmp_path)
    assert out.returncode == 1, out.stderr
    job_id = out.stdout.strip()
    assert "partially_succeeded: 2 succeeded, 2 failed" in out.stderr
    assert f"{ops}:2: patch doc/absent-1: not_found" in out.stderr
    assert f"{ops}:5: patch doc/absent-2: not_found" in out.stderr
    assert f"bulkapi jobs results {job_id} --status failed" in out.stderr

    failed = tmp_path / "failed.ndjson"
    again = run_cli(["submit", str(ops), "--failed-out", str(failed)], env, tmp_path)
    assert again.returncode == 1, again.stderr
    assert failed.read_text() == _patch("absent-1") + "\n" + _patch("absent-2") + "\n"
    assert f"wrote 2 failed operation(s) to {failed}" in again.stderr

    # Fixed (the resources now exist), the failed lines go through.
    _lines(tmp_path / "fix.ndjson", _upsert("absent-1"), _upsert("absent-2"))
    assert run_cli(["submit", str(tmp_path / "fix.ndjson"), "--wait"], env).returncode == 0
    assert run_cli(["submit", str(failed), "--wait"], env, tmp_path).returncode == 0


def test_jobs_list_show_results_and_cancel(served: Served, tmp_path: Path) -> None:
    key = served.new_key()
    env = _env(served, key)
    ops = _lines(tmp_path / "ops.ndjson", _upsert("j1"), _patch("absent"))
    job_id = run_cli(["submit", str(ops)], env, tmp_path).stdout.strip()

    shown = run_cli(["jobs", "show", job_id, "--wait"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "partially_succeeded"

    listed = run_cli(["jobs", "list"], env, tmp_path)
    assert listed.returncode == 0
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [
        [job_id, "partially_succeeded"]
    ]

    results = run_cli(["jobs", "results", job_id, "--status", "failed"], env, tmp_path)
    assert [json.loads(line)["index"] for line in results.stdout.splitlines()] == [1]

    cancelled = run_cli(["jobs", "cancel", job_id], env, tmp_path)
    assert cancelled.returncode == 2 and "job_finished" in cancelled.stderr
    missing = run_cli(["jobs", "show", "job_00000000000000000000000000"], env, tmp_path)
    assert missing.returncode == 2 and "not_found" in missing.stderr


def test_cancel_of_a_queued_job_prints_its_counts(idle: Served, tmp_path: Path) -> None:
    env = _env(idle, idle.new_key())
    ops = _lines(tmp_path / "ops.ndjson", *(_upsert(f"q-{n}") for n in range(5)))
    job_id = run_cli(["submit", str(ops)], env, tmp_path).stdout.strip()
    cancelled = run_cli(["jobs", "cancel", job_id], env, tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == "cancelled: 0 succeeded, 0 failed, 5 cancelled\n"


def test_exit_codes_for_usage_and_an_unreachable_service(tmp_path: Path) -> None:
    ops = _lines(tmp_path / "ops.ndjson", _upsert("a"))
    no_key = run_cli(["submit", str(ops)], clean_env(), tmp_path)
    assert no_key.returncode == 2 and "BULKAPI_API_KEY" in no_key.stderr
    nowhere = clean_env(BULKAPI_API_URL=f"http://127.0.0.1:{free_port()}", BULKAPI_API_KEY="k")
    unreachable = run_cli(["submit", str(ops)], nowhere, tmp_path)
    assert unreachable.returncode == 3, unreachable.stderr
    assert "ConnectError" in unreachable.stderr


def test_help_lists_the_client_commands(tmp_path: Path) -> None:
    submit = run_cli(["submit", "--help"], clean_env(), tmp_path)
    assert "--wait" in submit.stdout and "--failed-out" in submit.stdout
    jobs = run_cli(["jobs", "--help"], clean_env(), tmp_path)
    assert all(command in jobs.stdout for command in ("list", "show", "results", "cancel"))


def test_a_dry_run_says_the_file_is_valid_and_records_nothing(
    served: Served, tmp_path: Path
) -> None:
    key = served.new_key()
    env = _env(served, key)
    good = _lines(tmp_path / "good.ndjson", _upsert("d1"), _upsert("d2"))
    out = run_cli(["submit", str(good), "--dry-run"], env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("valid: 2 operations in ")
    bad = _lines(tmp_path / "bad.ndjson", _upsert("d1"), _upsert("d1"))
    refused = run_cli(["submit", str(bad), "--dry-run"], env, tmp_path)
    assert refused.returncode == 2 and "doc/d1 is on lines 1, 2" in refused.stderr
    assert _jobs(served, key) == []


def test_jobs_retry_submits_the_failed_operations_again(served: Served, tmp_path: Path) -> None:
    key = served.new_key()
    env = _env(served, key)
    ops = _lines(tmp_path / "ops.ndjson", _upsert("t1"), _patch("t2"))
    first = run_cli(["submit", str(ops), "--wait"], env, tmp_path)
    assert first.returncode == 1, first.stderr  # partially succeeded
    job_id = first.stdout.strip()
    with Client(served.base_url, key) as client:
        client.put("doc", "t2", {"id": "t2"})
    retried = run_cli(["jobs", "retry", job_id, "--code", "not_found", "--wait"], env, tmp_path)
    assert retried.returncode == 0, retried.stderr
    with Client(served.base_url, key) as client:
        again = client.job(retried.stdout.strip())
        assert again.retry_of == job_id and again.total == 1
        assert client.get("doc", "t2").data == {"id": "t2", "patched": True}
    unfinished = run_cli(["jobs", "retry", "job_00000000000000000000000000"], env, tmp_path)
    assert unfinished.returncode == 2 and "not_found" in unfinished.stderr
