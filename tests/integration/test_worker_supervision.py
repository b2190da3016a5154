"""`bulkapi worker` restarts Dramatiq's worker group when one of its processes dies, and
leaves nothing of a group behind when its main process dies.

Dramatiq's main process shuts the whole group down when a worker process dies; without a
restart nothing on the host would drain again. Killed itself, it would leave its worker
processes draining on, orphaned. Real processes: `bulkapi worker` (the supervisor) →
Dramatiq's main process → its worker processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import (
    REDIS_URL,
    ROOT,
    WAIT_SECONDS,
    HttpApi,
    ManagedProcess,
    children_of,
    migrated_with_key,
    service_env,
    start_server,
    start_workers,
    wait_until,
)


def _alive(pid: int) -> bool:
    """Whether the process exists at all, as a zombie too (nothing has reaped it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (one init has yet to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextmanager
def _supervised(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> Iterator[tuple[HttpApi, ManagedProcess]]:
    """A server and `bulkapi worker` on a fresh database, stopped when the block ends."""
    env = service_env(postgres_url, REDIS_URL, redis_namespace)
    key = migrated_with_key(postgres_url, "supervised")
    server, base_url = start_server(env, tmp_path)
    supervisor = start_workers(env, tmp_path)
    try:
        yield HttpApi(base_url, key), supervisor
    finally:
        supervisor.stop()
        server.stop()


def test_a_killed_worker_process_gets_its_group_restarted_and_work_goes_on(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    with _supervised(tmp_path, postgres_url, redis_namespace) as (api, supervisor):
        first = wait_until(
            lambda: (found := supervisor.grandchildren()) and len(found) == 2 and found,
            what="the worker group's 2 processes",
        )
        os.kill(first[0], signal.SIGKILL)
        wait_until(
            lambda: (
                (found := supervisor.grandchildren())
                and len(found) == 2
                and not set(found) & set(first)
            ),
            timeout=WAIT_SECONDS,
            what="a new worker group",
        )
        assert supervisor.process is not None and supervisor.process.poll() is None
        operations = [
            {"op": "upsert", "type": "item", "id": f"i{n}", "data": {"n": n}} for n in range(200)
        ]
        job = api.request("POST", "/v1/bulk", json={"operations": operations})
        assert job.status_code == 202, job.text
        assert api.wait_job(job.json()["id"])["counts"]["succeeded"] == 200
        assert "restarting it" in supervisor.log()

        # Told to stop, the supervisor stops the group and does not restart it.
        group = [*supervisor.children(), *supervisor.grandchildren()]
        assert supervisor.stop() == 0
        for pid in group:
            assert not _alive(pid), f"process {pid} of the group outlived its supervisor"


def _group_of(supervisor: ManagedProcess, main: int | None = None) -> tuple[int, list[int]]:
    """The running group's main process and its 2 workers, once they are all up (and,
    with ``main``, once a main process other than that one runs)."""

    def found() -> tuple[int, list[int]] | None:
        children = supervisor.children()
        if len(children) != 1 or children[0] == main:
            return None  # also while orphans of a killed group are children here
        workers = children_of(children[0])
        return (children[0], workers) if len(workers) == 2 else None

    group: tuple[int, list[int]] = wait_until(found, what="a worker group of 2 processes")
    return group


def test_a_killed_main_process_leaves_no_worker_draining_and_sigterm_leaves_nothing(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    with _supervised(tmp_path, postgres_url, redis_namespace) as (api, supervisor):
        old_main, old_workers = _group_of(supervisor)
        os.kill(old_main, signal.SIGKILL)
        new_main, new_workers = _group_of(supervisor, main=old_main)
        # The new group started only once nothing of the old one was left.
        assert not any(_alive(pid) for pid in old_workers), old_workers

        assert supervisor.stop() == 0
        for pid in (old_main, *old_workers, new_main, *new_workers):
            assert not _alive(pid), f"process {pid} outlived `bulkapi worker`"

        # Nothing drains any more: a job submitted now stays untouched.
        operations = [{"op": "upsert", "type": "item", "id": f"i{n}", "data": {}} for n in range(9)]
        job = api.request("POST", "/v1/bulk", json={"operations": operations})
        assert job.status_code == 202, job.text
        time.sleep(3)  # several sweep intervals: time for any stray worker to drain it
        seen = api.request("GET", f"/v1/jobs/{job.json()['id']}").json()
        assert seen["status"] == "queued" and seen["counts"]["pending"] == 9, seen


def test_the_group_stops_when_bulkapi_worker_is_killed(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    env = service_env(postgres_url, REDIS_URL, redis_namespace)
    migrated_with_key(postgres_url, "lifeline")
    supervisor = start_workers(env, tmp_path)
    try:
        main, workers = _group_of(supervisor)
        # Booted: each worker process has tied itself to the main process.
        wait_until(
            lambda: supervisor.log().count("Worker process is ready for action.") >= 2,
            what="both worker processes to boot",
        )
        assert supervisor.process is not None
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.process.wait(WAIT_SECONDS)
        # Orphaned, the group's main process is init's to reap, and init may not.
        wait_until(
            lambda: not any(_running(pid) for pid in (main, *workers)),
            what="the group to stop after its supervisor died",
        )
    finally:
        supervisor.stop()


#: A Dramatiq-like start, run as its own program: a main process starts a worker process
#: (fork) and waits for it to say it has booted, as Dramatiq's does, through a
#: multiprocessing Event that the worker sets in a ``finally``; the main process is
#: killed meanwhile, and the worker imports ``bulkapi.worker`` only once it is gone. The
#: program is a subreaper, so the orphaned worker becomes its child: it prints how the
#: worker ended, or "hung".
_ORPHANED_START = """
import multiprocessing, os, signal, sys, time
from bulkapi.lifelines import become_subreaper

def worker(event, main_pid):
    while os.getppid() == main_pid:
        time.sleep(0.01)
    try:
        import bulkapi.worker
    finally:
        event.set()

def main(event, pids):
    process = multiprocessing.Process(target=worker, args=(event, os.getpid()))
    process.start()
    pids.put(process.pid)
    event.wait()

if __name__ == "__main__":
    become_subreaper()
    context = multiprocessing.get_context("fork")
    event, pids = context.Event(), context.Queue()
    main_process = context.Process(target=main, args=(event, pids))
    main_process.start()
    worker_pid = pids.get(timeout=60)
    time.sleep(0.5)  # the main process is waiting on the event by now
    os.kill(main_process.pid, signal.SIGKILL)
    main_process.join()
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        pid, status = os.waitpid(worker_pid, os.WNOHANG)
        if pid:
            print("exited", os.waitstatus_to_exitcode(status))
            sys.exit(0)
        time.sleep(0.05)
    os.kill(worker_pid, signal.SIGKILL)
    os.waitpid(worker_pid, 0)
    print("hung")
"""


def test_a_worker_process_whose_main_process_died_while_it_started_exits(
    tmp_path: Path,
) -> None:
    """It stops at once (status 1) instead of telling the dead main process it booted,
    which waited forever: the process stayed behind, orphaned, after its group was gone."""
    program = tmp_path / "orphaned_start.py"
    program.write_text(_ORPHANED_START)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKAPI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    answer = subprocess.run(
        [sys.executable, str(program), str(WAIT_SECONDS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3 * WAIT_SECONDS,
        check=False,
    )
    assert answer.stdout.split() == ["exited", "1"], answer.stdout + answer.stderr
    assert "main process is gone" in answer.stderr
