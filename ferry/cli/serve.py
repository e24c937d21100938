"""``ferry serve`` (web pages, JSON API, events, metrics) and ``ferry token`` (its bearer
tokens)."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import click

from ferry.cli.common import State, emit_json, guarded

SERVE_EXTRA_HINT = "ferry serve needs the 'serve' extra: pip install 'ferry[serve]'"


def _serve_package() -> Any:
    try:
        import ferry.serve as serve_package
    except ImportError as exc:  # prometheus-client or jsonschema missing
        from ferry import errors

        raise errors.ConfigError(f"{SERVE_EXTRA_HINT} ({exc.name} is missing)") from None
    return serve_package


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on (port 0: any free).",
)
@click.option("--tls-cert", metavar="FILE", help="PEM certificate (with --tls-key): HTTPS.")
@click.option("--tls-key", metavar="FILE", help="PEM private key of --tls-cert.")
@click.option(
    "--insecure",
    is_flag=True,
    help="Listen beyond loopback without TLS or without any token anyway.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Migrations run at once in this process (default: [limits] total, else 4).",
)
@click.option(
    "--refresh",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between web page updates.",
)
@click.pass_obj
@guarded
def serve(
    state: State,
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    insecure: bool,
    workers: int | None,
    refresh: float,
) -> None:
    """Serve the web pages, the JSON API (/api/v1, bearer tokens), live events and /metrics;
    unfinished migrations are resumed at start."""
    package = _serve_package()
    server = package.ServiceServer(
        state.orchestrator(local=True),
        listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure=insecure,
        workers=workers,
        refresh_seconds=refresh,
    )
    click.echo(f"ferry serve: {server.url} (Ctrl-C or SIGTERM stops it)", err=True)
    if server.recovered:
        click.echo(f"ferry serve: resuming {len(server.recovered)} migration(s)", err=True)

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    click.echo(
        "ferry serve: stopping; runs in progress suspend and resume at the next start", err=True
    )
    server.shutdown()


@click.group()
def token() -> None:
    """Bearer tokens of `ferry serve`: create (printed once), list, revoke."""


def _tokens(state: State) -> Any:
    return _serve_package().TokenStore(state.store(local=True).migrations.db)


@token.command("create")
@click.option("--name", required=True, help="A unique name (who or what uses it).")
@click.option(
    "--role",
    type=click.Choice(["reader", "operator"]),
    required=True,
    help="reader: GETs only; operator: writes too.",
)
@click.pass_obj
@guarded
def token_create(state: State, name: str, role: str) -> None:
    """Create a token and print it once (only a salted hash is kept)."""
    info, secret = _tokens(state).create(name, role)
    click.echo(
        f"created token {info.name!r} ({info.role.value}, id {info.id}); it is shown only now:",
        err=True,
    )
    click.echo(secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@guarded
def token_list(state: State, as_json: bool) -> None:
    """Tokens: id, name, role, created, revoked (never the tokens themselves)."""
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "role": t.role.value,
            "created_at": t.created_at,
            "revoked_at": t.revoked_at,
        }
        for t in _tokens(state).list()
    ]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        status = "revoked" if r["revoked_at"] is not None else "active"
        click.echo(f"{r['id']}  {r['name']:<20} {r['role']:<9} {status}")


@token.command("revoke")
@click.argument("name")
@click.pass_obj
@guarded
def token_revoke(state: State, name: str) -> None:
    """Revoke the token NAME (or id): requests with it get 401 from now on."""
    info = _tokens(state).revoke(name)
    click.echo(f"revoked token {info.name!r} ({info.id})", err=True)
