"""``flask --app service ...`` commands: schema upgrade and API keys.

``anomaly serve --migrate-only`` and ``anomaly serve --create-key`` do the same from the
project's own command line.
"""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from service.auth import create_api_key, list_api_keys, revoke_api_key
from service.db import ROLES, current_version


def register_commands(app: Flask) -> None:
    """Attach the commands to ``app.cli``."""
    app.cli.add_command(db_upgrade)
    app.cli.add_command(keys)


@click.command("db-upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Create or upgrade the inspection tables (the app also does it on start)."""
    db = current_app.extensions["anomaly_db"]
    version = db.migrate()
    click.echo(f"database {db.display_url}: schema version {version} (current: {current_version(db.engine)})")


@click.group("keys", cls=AppGroup)
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="score", show_default=True)
def keys_create(name: str, role: str) -> None:
    """Create a key NAME and print it (it is stored hashed and never shown again)."""
    key = create_api_key(current_app.extensions["anomaly_db"], name, role)
    click.echo(key)


@keys.command("list")
def keys_list() -> None:
    """List keys (names, roles, prefixes; never the keys)."""
    for item in list_api_keys(current_app.extensions["anomaly_db"]):
        state = "revoked" if item["revoked"] else "active"
        click.echo(f"{item['name']}\t{item['role']}\t{item['prefix']}...\t{state}\t{item['created_at']}")


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke the key NAME."""
    if not revoke_api_key(current_app.extensions["anomaly_db"], name):
        raise click.ClickException(f"no active key named {name!r}")
    click.echo(f"revoked {name}")
