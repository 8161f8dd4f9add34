"""The schema check that skips Alembic on a current store must know Alembic's newest revision."""

from alembic.config import Config
from alembic.script import ScriptDirectory
from fx_operator.storage.migrating import HEAD_REVISION, MIGRATIONS


def test_head_revision_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
