"""The `bulkapi` command."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click
from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bulkapi.client.cli import jobs, submit
from bulkapi.config import Settings
from bulkapi.store.database import make_engine, reading
from bulkapi.store.migrate import upgrade
from bulkapi.store.tenants import create_key, list_keys, revoke_key, signing_secret


def _settings(*, load_types: bool = False) -> Settings:
    """The configuration, or a one-line error instead of a traceback; ``load_types``
    also imports BULKAPI_TYPES, so a broken types module stops the command at once."""
    try:
        settings = Settings.from_env()
    except ValueError as error:
        raise click.UsageError(f"configuration: {error}") from None
    if load_types and settings.types_module:
        from bulkapi.registry import load_registry

        try:
            load_registry(settings.types_module, strict=settings.strict_types)
        except Exception as error:
            raise click.UsageError(
                f"BULKAPI_TYPES={settings.types_module} could not be loaded: "
                f"{type(error).__name__}: {error}"
            ) from None
    return settings


def _without_credentials(url: str) -> str:
    """``url`` with any user and password left out, fit for a log line."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _log_to_stderr() -> None:
    """Long-running commands log INFO and up to stderr, one line per record."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.group()
def main() -> None:
    """bulkapi: ordered bulk operations for any API."""


main.add_command(submit)
main.add_command(jobs)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the API (and, with no broker configured, the workers too)."""
    from bulkapi.server import Server

    _log_to_stderr()
    settings = _settings(load_types=True)
    if settings.embedded:
        engine = make_engine(settings.database_url)
        upgrade(engine)  # embedded mode is one command: the schema comes with it
        engine.dispose()
        click.echo(f"embedded mode: {settings.database_url}, workers in-process", err=True)
    else:
        click.echo(
            f"production mode: database {_without_credentials(settings.database_url)}, "
            f"broker {_without_credentials(settings.broker_url or '')} "
            f"(namespace {settings.broker_namespace}); run `bulkapi worker` for the workers",
            err=True,
        )
    Server(settings, host, port).run()


@main.command()
@click.option("--processes", default=2, show_default=True, type=int)
@click.option("--threads", default=4, show_default=True, type=int)
def worker(processes: int, threads: int) -> None:
    """Run Dramatiq worker processes against the configured broker (restarted if they die)."""
    from bulkapi.dispatch.actors import WORKER_QUEUES
    from bulkapi.supervise import Supervisor

    if _settings(load_types=True).broker_url is None:
        raise click.UsageError("Set BULKAPI_BROKER_URL (redis://...) to run separate workers.")
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "bulkapi.worker",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        # Dramatiq's main process watches its workers only once they have all booted, or
        # after this many milliseconds: a worker that died while booting would otherwise
        # go unnoticed (and unreaped) for 30 s. bulkapi registers no fork processes, the
        # only thing this wait is for.
        "--worker-fork-timeout",
        "1000",
        "--queues",
        *WORKER_QUEUES,
    ]
    _log_to_stderr()
    sys.exit(Supervisor(argv).run())


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the latest version."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    before, after = upgrade(engine)
    engine.dispose()
    if before is None:
        click.echo(f"schema created (revision {after})", err=True)
    elif before == after:
        click.echo(f"schema is up to date (revision {after})", err=True)
    else:
        click.echo(f"schema upgraded from revision {before} to {after}", err=True)


@contextmanager
def _database(settings: Settings) -> Iterator[Engine]:
    """The database of a one-shot command (keys, tenants), with its schema in place.

    Embedded mode is meant to need no setup step: its schema is created or migrated
    here, as ``serve`` does. In production mode only ``bulkapi db upgrade`` changes the
    schema (all hosts must agree on it); a database without it, or one that cannot be
    reached, is one line of error, and no SQLite file is created on the way.
    """
    url = make_url(settings.database_url)
    if not settings.embedded and url.get_backend_name() == "sqlite":
        path = url.database
        if path and path != ":memory:" and not Path(path).exists():
            raise click.ClickException(f"no database at {path}: run `bulkapi db upgrade` first")
    engine = make_engine(settings.database_url)
    try:
        if settings.embedded:
            upgrade(engine)
        elif not inspect(engine).has_table("tenants"):
            raise click.ClickException(
                "the database has no bulkapi schema yet: run `bulkapi db upgrade` first"
            )
        yield engine
    except DBAPIError as error:
        reason = str(error.orig or error).strip().splitlines()[0]
        raise click.ClickException(f"database error: {reason}") from None
    finally:
        engine.dispose()


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name; created if new.")
def keys_create(tenant: str) -> None:
    """Create an API key; the key alone is the last line printed (shown only once).

    When the tenant is new, its webhook signing secret is printed on an earlier line
    (`bulkapi tenants secret` shows it again).
    """
    with _database(_settings()) as engine, engine.begin() as conn:
        existed = signing_secret(conn, tenant) is not None
        key_id, secret = create_key(conn, tenant)
        webhook_secret = None if existed else signing_secret(conn, tenant)
    if webhook_secret is not None:
        click.echo(f"created tenant {tenant}; webhook signing secret: {webhook_secret}")
    click.echo(f"created key {key_id} for tenant {tenant}; store it now, it is not shown again:")
    click.echo(secret)


@keys.command("list")
def keys_list() -> None:
    """List keys (ids and tenants, never secrets)."""
    with _database(_settings()) as engine, reading(engine) as conn:
        found = list_keys(conn)
    for key in found:
        state = "revoked" if key.revoked_at else "active"
        click.echo(f"{key.id}\t{key.tenant}\t{key.created_at.isoformat()}\t{state}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id; requests with it get 401 from then on."""
    with _database(_settings()) as engine, engine.begin() as conn:
        revoked = revoke_key(conn, key_id)
    if not revoked:
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked {key_id}")


@main.group()
def tenants() -> None:
    """Tenants."""


@tenants.command("secret")
@click.option("--tenant", required=True, help="Tenant name.")
@click.option("--rotate", is_flag=True, help="Replace the secret with a new one first.")
def tenants_secret(tenant: str, rotate: bool) -> None:
    """Print the tenant's webhook signing secret (alone, on one line)."""
    with _database(_settings()) as engine, engine.begin() as conn:
        found = signing_secret(conn, tenant, rotate=rotate)
    if found is None:
        raise click.ClickException(f"no tenant {tenant}")
    click.echo(found)


if __name__ == "__main__":
    main()
