"""One typed settings model, read from the environment (prefix ``FX_``) when an entry point starts.

| setting            | env var               | default                                        |
|--------------------|-----------------------|------------------------------------------------|
| database_url       | ``FX_DATABASE_URL``   | unset: the embedded store under ``home``       |
| home               | ``FX_HOME``           | the per-user data directory (``platformdirs``) |
| master_key_file    | ``FX_MASTER_KEY_FILE``| unset: ``home/master.key``, local use only     |
| pool_max_size      | ``FX_POOL_MAX_SIZE``  | 10 connections to PostgreSQL                   |
| actor              | ``FX_ACTOR``          | the OS user name, written to audit records     |
| durable_read_audit | ``FX_DURABLE_READ_AUDIT`` | true: see below                            |

``durable_read_audit``: a resolution's audit record is always written in the same transaction as
the read, and by default that commit waits for the disk. ``false`` (PostgreSQL) commits reads
asynchronously: the record is in the WAL at once and on disk within ~0.6 s, so only a crash of the
database server in that window can lose it (much as a file audit log not fsynced per line), for
~0.2 ms less per resolution on the machines we measure. Writes always wait for the disk.

The operator's own settings (ignored by local runs), each ``FX_`` + the name in capitals:

* ``platform_namespace`` (``fx-system``): the only namespace whose ScopedSecrets may be platform
  scope;
* ``platform_writers`` (none): JSON list of ``namespace/package`` whose runs may write platform
  scope;
* ``allow_all_secrets`` (true): whether a Package may opt into every name of its chain
  (``spec.secrets.all``); false fails its Executions at admission;
* ``platform_secrets_declared_only`` (false): a platform-scope value is delivered only for names
  the Package declares in ``spec.secrets``, not for names merely found in its scripts;
* ``runtime_image``: the run pods' image, unless a Package names one;
* ``broker_url`` (``https://fx-broker.fx-system.svc:8443``): the broker as run pods reach it;
  ``broker_host``, ``broker_port`` (``0.0.0.0``, 8443): where it listens;
  ``broker_audience`` (``fx-broker``): the run pods' token audience;
  ``broker_ca_configmap`` (``fx-broker-ca``): the CA's ConfigMap in each namespace;
  ``broker_dns_names``: JSON list of names in its certificate (default: broker_url's host);
* ``job_ttl_seconds`` (3600), ``metrics_port`` (9090);
* ``api_timeout_seconds`` (60): how long one call waits for the API server's answer.
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
    durable_read_audit: bool = Field(
        default=True, description="Wait for the disk when committing a resolution's audit "
        "record (PostgreSQL); false commits it asynchronously, in the same transaction.")

    platform_namespace: str = Field(default="fx-system",
                                    description="Namespace whose ScopedSecrets may be platform "
                                    "scope.")
    platform_writers: list[str] = Field(
        default_factory=list,
        description="namespace/package pairs whose runs may write platform-scope secrets.")
    allow_all_secrets: bool = Field(
        default=True, description="Whether a Package may opt into every secret name of its "
        "chain (spec.secrets.all).")
    platform_secrets_declared_only: bool = Field(
        default=False, description="Deliver platform-scope values only for names a Package "
        "declares (not for names merely found in its scripts).")
    runtime_image: str = Field(default="ghcr.io/fx-dev/fx-runtime:0.1.0",
                               description="Image of run pods unless a Package names one.")
    broker_url: str = Field(default="https://fx-broker.fx-system.svc:8443",
                            description="The broker's URL as run pods reach it.")
    broker_host: str = Field(default="0.0.0.0", description="Where the broker listens.")  # noqa: S104
    broker_port: int = Field(default=8443, ge=0, le=65535)
    broker_audience: str = Field(default="fx-broker",
                                 description="Audience of the run pods' projected tokens.")
    broker_ca_configmap: str = Field(default="fx-broker-ca",
                                     description="ConfigMap with the broker's CA, per namespace.")
    broker_dns_names: list[str] = Field(default_factory=list,
                                        description="Names in the broker's certificate.")
    job_ttl_seconds: int = Field(default=3600, ge=0)
    schedule_recheck_seconds: float = Field(
        default=30, gt=0, description="Longest a Schedule waits before looking again at its "
        "Executions and spec (its next time wakes it sooner).")
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    api_timeout_seconds: float = Field(
        default=60.0, gt=0, description="How long one call waits for the API server's answer "
        "before it fails and is retried (the API server's own request timeout is 60 s).")

    def may_write_platform(self, namespace: str, package: str) -> bool:
        return f"{namespace}/{package}" in self.platform_writers

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def embedded_path(self) -> Path:
        return self.home / "store.sqlite3"

    @property
    def local_master_key_path(self) -> Path:
        return self.home / "master.key"
