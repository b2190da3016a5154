"""The `bulkapi` command."""

from __future__ import annotations

import logging
import sys

import click

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
    upgrade(engine)
    engine.dispose()
    click.echo("schema is up to date", err=True)


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
    engine = make_engine(_settings().database_url)
    with engine.begin() as conn:
        existed = signing_secret(conn, tenant) is not None
        key_id, secret = create_key(conn, tenant)
        webhook_secret = None if existed else signing_secret(conn, tenant)
    engine.dispose()
    if webhook_secret is not None:
        click.echo(f"created tenant {tenant}; webhook signing secret: {webhook_secret}")
    click.echo(f"created key {key_id} for tenant {tenant}; store it now, it is not shown again:")
    click.echo(secret)


@keys.command("list")
def keys_list() -> None:
    """List keys (ids and tenants, never secrets)."""
    engine = make_engine(_settings().database_url)
    with reading(engine) as conn:
        found = list_keys(conn)
    engine.dispose()
    for key in found:
        state = "revoked" if key.revoked_at else "active"
        click.echo(f"{key.id}\t{key.tenant}\t{key.created_at.isoformat()}\t{state}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id; requests with it get 401 from then on."""
    engine = make_engine(_settings().database_url)
    with engine.begin() as conn:
        revoked = revoke_key(conn, key_id)
    engine.dispose()
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
    engine = make_engine(_settings().database_url)
    with engine.begin() as conn:
        found = signing_secret(conn, tenant, rotate=rotate)
    engine.dispose()
    if found is None:
        raise click.ClickException(f"no tenant {tenant}")
    click.echo(found)


if __name__ == "__main__":
    main()
