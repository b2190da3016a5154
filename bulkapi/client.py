"""`bulkapi submit`: send an NDJSON file as one bulk request and follow the job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

#: Seconds each long poll may wait on the server.
LONG_POLL_SECONDS = 10
TERMINAL = frozenset({"succeeded", "partially_succeeded", "failed", "cancelled"})


class SubmitError(Exception):
    """The service refused the request or could not be reached."""


def _check(response: requests.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json() if response.content else {}
    if response.status_code >= 400:
        detail = body.get("detail") or response.reason
        raise SubmitError(f"{response.status_code} {body.get('code', '')}: {detail}")
    return body


def submit_file(api_url: str, api_key: str, path: Path) -> dict[str, Any]:
    """POST the file as NDJSON, streamed from disk; return the accepted job."""
    with path.open("rb") as body:
        response = requests.post(
            f"{api_url.rstrip('/')}/v1/bulk",
            data=body,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/x-ndjson"},
            timeout=600,
        )
    return _check(response)


def follow(api_url: str, api_key: str, job: dict[str, Any], show_progress: bool) -> dict[str, Any]:
    """Long-poll the job until it is terminal, drawing a progress bar of finished ops."""
    url = f"{api_url.rstrip('/')}/v1/jobs/{job['id']}"
    headers = {"Authorization": f"Bearer {api_key}"}
    with tqdm(total=job["total"], unit="op", disable=not show_progress) as bar:
        while True:
            counts = job["counts"]
            bar.update(job["total"] - counts["pending"] - bar.n)
            if job["status"] in TERMINAL:
                return job
            started = time.monotonic()
            job = _check(
                requests.get(
                    url,
                    params={"wait": LONG_POLL_SECONDS},
                    headers=headers,
                    timeout=LONG_POLL_SECONDS + 30,
                )
            )
            if job["status"] not in TERMINAL and time.monotonic() - started < 1:
                time.sleep(1)  # the server answered early without news: do not spin
