"""``convoy server`` (the HTTP front door, ``coordinator/server/``) and ``convoy clients`` (its credentials).

``convoy clients`` is a lab-side admin command: it writes the client records straight to Redis (it needs
the lab's Redis URL, like ``convoy device``), and prints a new client's secret once.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from convoy.coordinator.cli.main import cli
from convoy.errors import ConvoyError


@cli.command("server")
@click.option("--bind", default="127.0.0.1", show_default=True, envvar="CONVOY_SERVER_BIND",
              help="The address to listen on (0.0.0.0: every interface; env CONVOY_SERVER_BIND).")
@click.option("--port", default=8000, show_default=True, type=int, envvar="CONVOY_SERVER_PORT",
              help="The TCP port (env CONVOY_SERVER_PORT).")
@click.option("--token-ttl", default=1800, show_default=True, type=click.IntRange(min=10),
              envvar="CONVOY_SERVER_TOKEN_TTL", help="How long an access token lives, seconds "
                                                     "(env CONVOY_SERVER_TOKEN_TTL).")
@click.option("--anonymous-submit/--no-anonymous-submit", default=True, show_default=True,
              envvar="CONVOY_SERVER_ANONYMOUS_SUBMIT",
              help="Whether a caller without a token may submit jobs (with the anonymous defaults).")
def server(bind: str, port: int, token_ttl: int, anonymous_submit: bool) -> None:
    """Serve convoy's JSON API over HTTP at the root of BIND:PORT (OpenAPI at /openapi.json)."""
    import dataclasses

    import uvicorn

    from convoy.config.settings import load_settings
    from convoy.coordinator.server.app import ServerConfig, create_app
    from convoy.coordinator.state.connection import check_redis

    settings = dataclasses.replace(load_settings(), server_url=None)  # the server itself talks to Redis
    check_redis(settings)
    app = create_app(ServerConfig(settings, access_ttl=token_ttl, anonymous_submit=anonymous_submit))
    click.echo(f"convoy server: listening on http://{bind}:{port}/ (OpenAPI at /openapi.json)", err=True)
    # long polls (a wait lasts up to a minute) must not hold a stop: they end after 5 s, clients ask again
    uvicorn.run(app, host=bind, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)


def _limits(pairs: tuple[str, ...], option: str, kind: Callable[[str], Any]) -> dict[str, Any]:
    """``("q=3", "*=1")`` -> ``{"q": 3, "*": 1}`` (a clear error for a malformed pair)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        queue, sep, value = pair.partition("=")
        try:
            if not sep or not queue:
                raise ValueError
            out[queue] = kind(value)
            if out[queue] < 0:
                raise ValueError
        except ValueError:
            raise ConvoyError(f"{option} {pair!r}: want QUEUE=N with N >= 0 (QUEUE may be *)") from None
    return out


def _reservation(value: str) -> float:
    from convoy.config.durations import DurationError, parse_duration

    try:
        return float(parse_duration(value, field="max-reservation-time"))
    except DurationError as exc:
        raise ValueError(str(exc)) from None


_PRIORITY = click.option("--max-priority", "max_priority", multiple=True, metavar="QUEUE=N",
                         help="Highest job_priority on QUEUE (* for every other queue); repeatable.")
_RESERVATION = click.option("--max-reservation-time", "max_reservation", multiple=True, metavar="QUEUE=DURATION",
                            help="Longest reservation on QUEUE (3600, 2h; * for every other queue); repeatable.")
_QUEUES = click.option("--allow-queue", "allowed", multiple=True, metavar="QUEUE",
                       help="A restricted queue the client may use; repeatable.")


@cli.group("clients")
def clients_group() -> None:
    """Manage the clients of convoy server (lab side: needs the lab's Redis URL)."""


@clients_group.command("add")
@click.argument("client_id")
@click.option("--admin", is_flag=True, help="May see and cancel every job, no limits.")
@_PRIORITY
@_RESERVATION
@_QUEUES
def clients_add(client_id: str, admin: bool, max_priority: tuple[str, ...], max_reservation: tuple[str, ...],
                allowed: tuple[str, ...]) -> None:
    """Create client CLIENT_ID and print its secret (shown this once; only its hash is kept)."""
    from convoy.coordinator.cli.main import _client
    from convoy.coordinator.state.clients import Client, add_client

    record = Client(client_id, admin=admin, max_priority=_limits(max_priority, "--max-priority", int),
                    max_reservation_time=_limits(max_reservation, "--max-reservation-time", _reservation),
                    allowed_queues=list(allowed))
    secret = add_client(_client(), record)
    click.echo(f"client_id: {client_id}")
    click.echo(f"secret: {secret}")
    click.echo("convoy clients: keep the secret now; it is stored hashed and cannot be shown again", err=True)


@clients_group.command("list")
def clients_list() -> None:
    """List the clients and their permissions as JSON (never their secrets)."""
    from convoy.coordinator.cli.main import _client
    from convoy.coordinator.state.clients import list_clients

    click.echo(json.dumps([c.public() for c in list_clients(_client())], indent=2))


@clients_group.command("remove")
@click.argument("client_id")
def clients_remove(client_id: str) -> None:
    """Delete client CLIENT_ID; its tokens stop working at once."""
    from convoy.coordinator.cli.main import _client
    from convoy.coordinator.state.clients import remove_client

    remove_client(_client(), client_id)
    click.echo(f"removed client {client_id}")


@clients_group.command("set")
@click.argument("client_id")
@click.option("--admin/--no-admin", default=None, help="Grant or take away admin rights.")
@_PRIORITY
@_RESERVATION
@_QUEUES
@click.option("--replace", is_flag=True, help="Replace the permission tables instead of merging into them.")
def clients_set(client_id: str, admin: bool | None, max_priority: tuple[str, ...], max_reservation: tuple[str, ...],
                allowed: tuple[str, ...], replace: bool) -> None:
    """Change CLIENT_ID's admin flag or permissions (merged into the present ones unless --replace)."""
    from convoy.coordinator.cli.main import _client
    from convoy.coordinator.state.clients import get_client_record, save_client

    r = _client()
    record = get_client_record(r, client_id)
    if record is None:
        raise ConvoyError(f"no such client: {client_id}")
    if replace:
        record.max_priority, record.max_reservation_time, record.allowed_queues = {}, {}, []
    if admin is not None:
        record.admin = admin
    record.max_priority.update(_limits(max_priority, "--max-priority", int))
    record.max_reservation_time.update(_limits(max_reservation, "--max-reservation-time", _reservation))
    record.allowed_queues = sorted(set(record.allowed_queues) | set(allowed))
    save_client(r, record)
    click.echo(json.dumps(record.public(), indent=2))


@cli.group("restricted-queues")
def restricted_group() -> None:
    """Queues only some clients of convoy server may use (lab side: needs the lab's Redis URL)."""


@restricted_group.command("add")
@click.argument("queues", nargs=-1, required=True)
def restricted_add(queues: tuple[str, ...]) -> None:
    """Restrict QUEUES: only clients allowed them (convoy clients set ID --allow-queue Q) may use them."""
    from convoy.coordinator.cli.main import _client
    from convoy.coordinator.state.clients import restrict_queues

    restrict_queues(_client(), list(queues))
    click.echo(f"restricted: {' '.join(queues)}")


@restricted_group.command("remove")
@click.argument("queues", nargs=-1, required=True)
def restricted_remove(queues: tuple[str, ...]) -> None:
    """Open QUEUES to every client again."""
    from convoy.coordinator.cli.main import _client
    from convoy.coordinator.state.clients import restrict_queues

    restrict_queues(_client(), list(queues), restricted=False)
    click.echo(f"no longer restricted: {' '.join(queues)}")


@restricted_group.command("list")
def restricted_list() -> None:
    """The restricted queues, one per line."""
    from convoy.coordinator.cli.main import _client
    from convoy.coordinator.state.clients import restricted_queues

    for queue in sorted(restricted_queues(_client())):
        click.echo(queue)
