"""One typed settings model, read from the environment (prefix ``FX_``) when an entry point starts.

| setting            | env var               | default                                        |
|--------------------|-----------------------|------------------------------------------------|
| database_url       | ``FX_DATABASE_URL``   | unset: the embedded store under ``home``       |
| home               | ``FX_HOME``           | the per-user data directory (``platformdirs``) |
| master_key_file    | ``FX_MASTER_KEY_FILE``| unset: ``home/master.key``, local use only     |
| pool_max_size      | ``FX_POOL_MAX_SIZE``  | 10 connections to PostgreSQL                   |
| actor              | ``FX_ACTOR``          | the OS user name, written to audit records     |
"""

from __future__ import annotations

import getpass
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("fx", appauthor=False))


def _default_actor() -> str:
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


class Settings(BaseSettings):
    """Where the store and the master key are; loaded once at start-up, never at import."""

    model_config = SettingsConfigDict(env_prefix="FX_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL (postgresql://...); unset selects the embedded store.")
    home: Path = Field(
        default_factory=_default_home,
        description="Folder of the embedded store, its local master key and run results.")
    master_key_file: Path | None = Field(
        default=None, description="File with the base64 256-bit master key (a mounted Secret).")
    pool_max_size: int = Field(default=10, ge=1, description="Most PostgreSQL connections held.")
    actor: str = Field(default_factory=_default_actor,
                       description="Who the audit records name for writes from this process.")

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def embedded_path(self) -> Path:
        return self.home / "store.sqlite3"

    @property
    def local_master_key_path(self) -> Path:
        return self.home / "master.key"
