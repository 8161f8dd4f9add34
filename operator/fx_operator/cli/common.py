"""What several command groups share: opening the configured store, reading values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from fx_operator.config import Settings
from fx_operator.services.configured_store import open_secret_service
from fx_operator.services.secret_service import SecretService


@contextmanager
def secret_service() -> Iterator[SecretService]:
    """The store named by the environment (FX_DATABASE_URL, else the embedded one)."""
    service = open_secret_service(Settings())
    try:
        yield service
    finally:
        service.close()


@contextmanager
def existing_secret_service() -> Iterator[SecretService | None]:
    """As ``secret_service``, but None (and one line on stderr) where the embedded store does
    not exist yet: looking must not create a store and a master key."""
    settings = Settings()
    if settings.embedded and not settings.embedded_path.exists():
        click.echo(f"no store yet at {settings.embedded_path} (fxctl run or fxctl secrets set "
                   "makes one)", err=True)
        yield None
        return
    with secret_service() as service:
        yield service


def parse_value(text: str) -> Any:
    """JSON when the text is valid JSON (``{"a": 1}``, ``42``, ``"x"``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text
