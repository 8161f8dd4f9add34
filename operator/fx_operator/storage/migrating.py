"""Schema migrations with Alembic, run on first use and by ``fxctl db upgrade``.

Alembic and SQLAlchemy are imported only when a migration has to run: every ``fxctl`` command and
every operator start checks the schema first, and on a current schema that check is one query.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fx_operator.exceptions import StoreError

if TYPE_CHECKING:
    from fx_operator.storage.backends import Backend

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision under migrations/versions; a test checks it against Alembic's own head.
HEAD_REVISION = "0005"


def sqlalchemy_url(url: str) -> str:
    """Our URLs are libpq's (postgresql://) or sqlite:///; SQLAlchemy must use psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def schema_revision(backend: Backend) -> str | None:
    """The store's current revision, or None for a store never migrated."""
    try:
        rows = backend.execute_alone("SELECT version_num FROM alembic_version")
    except StoreError:
        return None  # no such table yet
    return str(rows[0][0]) if len(rows) == 1 else None


def ensure_current(backend: Backend) -> None:
    """Migrate the store unless it is already at the newest revision."""
    if schema_revision(backend) != HEAD_REVISION:
        upgrade(backend.url)


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import SQLAlchemyError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    try:
        command.upgrade(config, revision)
    except SQLAlchemyError as e:
        cause = getattr(e, "orig", None) or e
        raise StoreError(f"migrating the store failed: {e.__class__.__name__}: {cause}") from e
