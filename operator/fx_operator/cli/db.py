"""``fxctl db``: schema migrations of the configured store."""

from __future__ import annotations

import click

from fx_operator.config import Settings
from fx_operator.services.configured_store import open_store


@click.group()
def db() -> None:
    """The store's schema."""


@db.command()
def upgrade() -> None:
    """Apply every pending migration (they also run by themselves on first use)."""
    settings = Settings()
    open_store(settings).close()
    where = "PostgreSQL" if settings.database_url else str(settings.embedded_path)
    click.echo(f"store schema is up to date ({where})")
