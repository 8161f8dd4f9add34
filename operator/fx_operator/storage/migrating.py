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
HEAD_REVISION = "0008"


def sqlalchemy_url(url: str) -> str:
    """Our URLs are libpq's (postgresql://) or sqlite:///; SQLAlchemy must use psycopg 3.

    SQLAlchemy cannot read every URL libpq can: ``postgresql://u@pg-a:5432,pg-b:5432/fx``, the
    usual way to name the servers of a replicated cluster, fails on its port. So libpq parses
    the URL, and its parameters travel as query parameters, which psycopg hands back to libpq
    as they are (``host=pg-a,pg-b&port=5432,5432``)."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = {key: str(value) for key, value in conninfo_to_dict(url).items()}
    user, password, dbname = (params.pop(key, None) for key in ("user", "password", "dbname"))
    return URL.create("postgresql+psycopg", username=user, password=password, database=dbname,
                      query=params).render_as_string(hide_password=False)


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
