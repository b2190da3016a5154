"""The asyncio client against real servers, on both modes: the same calls as the
blocking client, awaited."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bulkapi.client import AsyncClient, AsyncJob, JobFinished, NotFound, VersionMismatch
from tests.client.conftest import Served
from tests.support import WAIT_SECONDS


async def _tour(served: Served) -> dict[str, Any]:
    seen: list[str] = []
    async with AsyncClient(served.base_url, served.new_key()) as client:
        job = await client.submit(
            {"op": "upsert", "type": "doc", "id": f"a-{n}", "data": {"n": n}} for n in range(1_000)
        )
        await job.wait(
            timeout=WAIT_SECONDS, on_progress=lambda current: seen.append(current.status)
        )
        failing = await client.submit([{"op": "patch", "type": "doc", "id": "absent", "data": {}}])
        await failing.wait(timeout=WAIT_SECONDS)
        failed = [result async for result in failing.results(status="failed")]
        listed = [found async for found in client.jobs(page_size=1)]
        with pytest.raises(JobFinished):
            await job.cancel()
        written = await client.put("doc", "a-1", {"n": -1}, if_version=1, wait=5)
        with pytest.raises(VersionMismatch):
            await client.patch("doc", "a-1", {"m": 1}, if_version=1)
        deleted = await client.delete("doc", "a-1")
        with pytest.raises(NotFound):
            await client.get("doc", "a-1")
        return {
            "job": job,
            "seen": seen,
            "results": [r async for r in job.results()],
            "failed": failed,
            "listed": [found.id for found in listed],
            "ids": [failing.id, job.id],
            "versions": (written.version, deleted.version),
        }


def test_the_async_client_submits_follows_reads_and_writes(served: Served) -> None:
    tour = asyncio.run(_tour(served))
    job = tour["job"]
    assert isinstance(job, AsyncJob) and job.status == "succeeded"
    assert tour["seen"][-1] == "succeeded"
    assert [r["index"] for r in tour["results"]] == list(range(1_000))
    assert [(r["index"], r["error"]["code"]) for r in tour["failed"]] == [(0, "not_found")]
    assert tour["listed"] == tour["ids"]
    assert tour["versions"] == (2, 3)
