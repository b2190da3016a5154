"""The client commands of ``bulkapi``: ``submit`` and ``jobs``, built on ``Client``.

They read ``BULKAPI_API_URL`` and ``BULKAPI_API_KEY``. Exit codes (docs/client.md):
0 done (with ``--wait``: every operation succeeded), 1 the job ended otherwise,
2 the request was refused (usage, an unreadable file, a 4xx answer),
3 the service could not be reached or kept failing (connection, 5xx, 429 after retries).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click
from tqdm import tqdm

from bulkapi.client import (
    BulkapiError,
    Client,
    ClientError,
    DuplicateResource,
    Job,
    TooManyRequests,
    ValidationError,
)
from bulkapi.config import Settings

EXIT_OK = 0
#: The job ended with failed or cancelled operations (``--wait``).
EXIT_NOT_SUCCEEDED = 1
#: Refused: usage, a file that is not NDJSON, or a 4xx answer (429 aside).
EXIT_REFUSED = 2
#: Unreachable or failing: no connection, 5xx, or 429 after every retry.
EXIT_UNAVAILABLE = 3
#: Errors printed before "... and N more".
SHOWN_ERRORS = 10


class Refused(click.ClickException):
    """The request cannot succeed as it is: the message says what to change."""

    exit_code = EXIT_REFUSED


class Unavailable(click.ClickException):
    """The service could not be reached, or kept failing."""

    exit_code = EXIT_UNAVAILABLE


def _client() -> Client:
    try:
        settings = Settings.from_env()
    except ValueError as error:
        raise click.UsageError(f"configuration: {error}") from None
    if not settings.api_key:
        raise click.UsageError("Set BULKAPI_API_KEY to the key `bulkapi keys create` printed.")
    return Client(settings.api_url, settings.api_key)


@contextmanager
def _reported() -> Iterator[None]:
    """Turn what the client raises into a message and the exit code it stands for."""
    try:
        yield
    except BulkapiError as error:
        if isinstance(error, ClientError) and not isinstance(error, TooManyRequests):
            raise Refused(str(error)) from error
        raise Unavailable(str(error)) from error


@dataclass
class OperationLines:
    """An NDJSON file of operations: which line of the file each operation is on.

    The API numbers operations from 0 and skips blank lines, as this does; the line
    numbers let every message point at the line to fix. The lines are sent as they are:
    the service alone says which are not valid operations, JSON included.
    """

    path: Path
    #: The 1-based line of each operation, by the operation's index.
    lines: list[int]

    @classmethod
    def read(cls, path: Path) -> OperationLines:
        lines: list[int] = []
        with path.open("rb") as file:
            lines.extend(number for number, line in enumerate(file, 1) if line.strip())
        return cls(path, lines)

    def operations(self) -> Iterator[bytes]:
        """The operations' lines as written, read from the file again as they are sent."""
        return (line for _, line in self.numbered())

    def numbered(self) -> Iterator[tuple[int, bytes]]:
        """Each operation's index and line as written in the file."""
        with self.path.open("rb") as file:
            index = 0
            for line in file:
                if line.strip():
                    yield index, line
                    index += 1

    def where(self, index: int | str) -> str:
        """``FILE:LINE`` of the operation with this index (an API error key)."""
        try:
            return f"{self.path}:{self.lines[int(index)]}"
        except (ValueError, IndexError):
            return f"{self.path} ({index})"


def _listed(messages: list[str], what: str) -> str:
    shown = messages[:SHOWN_ERRORS]
    more = len(messages) - len(shown)
    tail = [f"... and {more} more"] if more else []
    return "\n".join([f"{len(messages)} {what}:", *shown, *tail])


def _field_messages(errors: Any) -> str:
    """marshmallow's nested errors of one operation as ``field: message; ...`` (errors
    of the whole operation, under ``_schema``, without a field)."""
    if not isinstance(errors, dict):
        return "; ".join(str(message) for message in errors)
    return "; ".join(
        _field_messages(messages) if field == "_schema" else f"{field}: {_field_messages(messages)}"
        for field, messages in errors.items()
    )


def _refusal(error: ValidationError, file: OperationLines) -> str:
    """What a 422 says, pointing at the lines it is about."""
    if isinstance(error, DuplicateResource):
        duplicates = [
            f"{item['type']}/{item['id']} is on lines "
            + ", ".join(str(file.lines[index]) for index in item["indexes"])
            for item in error.problem.get("duplicates", [])
        ]
        return f"{file.path}: {error.detail}\n" + _listed(duplicates, "resource(s) repeated")
    errors = error.errors or {}
    by_line = [
        f"{file.where(key)}: {_field_messages(errors[key])}"
        for key in sorted(
            errors, key=lambda key: (not key.isdigit(), int(key) if key.isdigit() else 0)
        )
    ]
    return f"{error.status} {error.code}: {error.detail}\n" + _listed(by_line, "error(s)")


def _follow(job: Job) -> Job:
    """Wait for the job, drawing a progress bar fed by its event stream."""
    with tqdm(total=job.total, unit="op", file=sys.stderr, dynamic_ncols=True) as bar:

        def moved(current: Job) -> None:
            bar.set_postfix_str(current.status, refresh=False)
            bar.update(current.total - current.counts["pending"] - bar.n)

        moved(job)
        return job.wait(on_progress=moved)


def _summary(job: Job) -> str:
    counts = job.counts
    return (
        f"{job.status}: {counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['cancelled']} cancelled"
    )


def _report_failed(job: Job, file: OperationLines, failed_out: Path | None) -> None:
    """Name the first failed operations by line; write them all to ``failed_out``."""
    results = job.results(status="failed")
    shown: list[str] = []
    written = 0
    out: IO[bytes] | None = None if failed_out is None else failed_out.open("wb")
    try:
        upcoming = next(results, None)
        for index, line in file.numbered():
            if upcoming is None:
                break
            if index != upcoming["index"]:
                continue
            error = upcoming.get("error") or {}
            shown.append(
                f"{file.where(index)}: {upcoming['op']} {upcoming['type']}/{upcoming['id']}: "
                f"{error.get('code')}: {error.get('message')}"
            )
            if out is not None:
                out.write(line if line.endswith(b"\n") else line + b"\n")
                written += 1
            upcoming = next(results, None)
    finally:
        if out is not None:
            out.close()
    if shown:
        click.echo(_listed(shown, "operation(s) failed"), err=True)
    if failed_out is not None:
        click.echo(f"wrote {written} failed operation(s) to {failed_out}", err=True)
    elif shown:
        click.echo(
            f"list them with `bulkapi jobs results {job.id} --status failed`, or submit "
            "with --failed-out FILE to get their lines ready to fix and submit again",
            err=True,
        )


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the job to its end with a progress bar.")
@click.option(
    "--failed-out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the lines of the operations that failed here (implies --wait).",
)
@click.option("--dry-run", is_flag=True, help="Run every check of a submit and record nothing.")
def submit(file: Path, wait: bool, failed_out: Path | None, dry_run: bool) -> None:
    """Submit FILE (one operation per line, NDJSON) as one bulk job; print its id.

    Errors point at the file's lines. With --wait (or --failed-out), follows the job
    and exits 0 only if every operation succeeded. With --dry-run, says whether the
    file would be accepted, and nothing is recorded.
    """
    lines = OperationLines.read(file)
    with _client() as client, _reported():
        try:
            if dry_run:
                verdict = client.dry_run_lines(lines.operations())
            else:
                job = client.submit_lines(lines.operations())
        except ValidationError as error:
            raise Refused(_refusal(error, lines)) from error
        if dry_run:
            replay = verdict.get("replay_of")
            click.echo(
                f"valid: {verdict['total']} operations in {verdict['partitions']} partitions"
                + (f" (its Idempotency-Key would replay {replay})" if replay else "")
            )
            return
        click.echo(f"accepted {job.id} ({job.total} operations)", err=True)
        if wait or failed_out is not None:
            job = _follow(job)
            click.echo(_summary(job), err=True)
            if job.counts["failed"] or failed_out is not None:
                _report_failed(job, lines, failed_out)
    click.echo(job.id)
    if (wait or failed_out is not None) and job.status != "succeeded":
        sys.exit(EXIT_NOT_SUCCEEDED)


@click.group()
def jobs() -> None:
    """Bulk jobs: list, show, results, cancel, retry."""


_STATUS = click.Choice(
    ["queued", "processing", "succeeded", "partially_succeeded", "failed", "cancelled"]
)


@jobs.command("list")
@click.option("--status", type=_STATUS, help="Only jobs with this status.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1), help="At most.")
def jobs_list(status: str | None, limit: int) -> None:
    """The newest jobs: id, status, created_at, total, progress (tab-separated)."""
    with _client() as client, _reported():
        for number, job in enumerate(client.jobs(status, page_size=min(limit, 100))):
            if number == limit:
                break
            created = job.data["created_at"]
            click.echo(f"{job.id}\t{job.status}\t{created}\t{job.total}\t{job.progress:.0%}")


@jobs.command("show")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Follow the job to its end first.")
def jobs_show(job_id: str, wait: bool) -> None:
    """The job as JSON."""
    with _client() as client, _reported():
        job = client.job(job_id)
        if wait:
            job = _follow(job)
    click.echo(json.dumps(job.data, indent=2))


@jobs.command("results")
@click.argument("job_id")
@click.option(
    "--status",
    type=click.Choice(["pending", "succeeded", "failed", "cancelled"]),
    help="Only results with this status.",
)
def jobs_results(job_id: str, status: str | None) -> None:
    """The job's per-operation results in request order, as NDJSON."""
    with _client() as client, _reported():
        for result in client.job(job_id).results(status):
            click.echo(json.dumps(result))


@jobs.command("cancel")
@click.argument("job_id")
def jobs_cancel(job_id: str) -> None:
    """Cancel the operations not yet applied; print the job's counts."""
    with _client() as client, _reported():
        job = client.job(job_id).cancel()
    click.echo(_summary(job))


@jobs.command("retry")
@click.argument("job_id")
@click.option(
    "--code",
    "codes",
    multiple=True,
    help="Only operations that failed with this code (repeatable; 'cancelled' for "
    "cancelled ones). Default: every failed and cancelled operation.",
)
@click.option("--wait", is_flag=True, help="Follow the new job to its end.")
def jobs_retry(job_id: str, codes: tuple[str, ...], wait: bool) -> None:
    """Submit a finished job's failed and cancelled operations again as a new job, in
    their order; print the new job's id."""
    with _client() as client, _reported():
        job = client.job(job_id).retry(list(codes) or None)
        click.echo(f"accepted {job.id} ({job.total} operations)", err=True)
        if wait:
            job = _follow(job)
            click.echo(_summary(job), err=True)
    click.echo(job.id)
    if wait and job.status != "succeeded":
        sys.exit(EXIT_NOT_SUCCEEDED)
