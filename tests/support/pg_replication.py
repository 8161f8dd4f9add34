"""A PostgreSQL primary and one streaming standby on loopback, and a failover between them.

What a team that outgrew the sidecar runs (CloudNativePG, a managed database), in miniature:
two real servers started by ``PostgresServer``, the standby made from a base backup of the
primary (``pg_basebackup -R``) and streaming its WAL. ``synchronous=True`` names the standby in
the primary's ``synchronous_standby_names``: a commit is acknowledged only once the standby has
flushed its WAL (``synchronous_commit = on``). ``synchronous=False`` replicates asynchronously: a
commit is acknowledged once it is on the primary's own disk, and whatever WAL the standby has
not received when the primary dies is lost with it.

Clients reach "whichever is the primary" through ``dsn``, a libpq multi-host URL with
``target_session_attrs=read-write``: libpq tries each host in turn and keeps the first that
accepts writes. ``fail_over()`` crashes the primary (SIGKILL of the postmaster and all its
processes) and promotes the standby.

Usage::

    with ReplicatedPostgres(synchronous=True) as pair:
        store = SecretStore.open_postgres(pair.dsn)
        ...
        pair.fail_over()  # the old primary is gone for good; the standby takes writes
"""

from __future__ import annotations

import time
from types import TracebackType
from urllib.parse import quote

import psycopg

from support.postgres import PostgresServer

__all__ = ["STANDBY_NAME", "ReplicatedPostgres"]

STANDBY_NAME = "fx_standby"
"""The standby's ``cluster_name``: its walreceiver's application_name, which
``synchronous_standby_names`` matches."""


class ReplicatedPostgres:
    """A primary and a standby streaming from it; a context manager."""

    def __init__(
        self, *, synchronous: bool, durable: bool = False, start_timeout: int = 60
    ) -> None:
        self.synchronous = synchronous
        self.durable = durable
        self.start_timeout = start_timeout
        commit = {
            # The tests' servers commit asynchronously unless durable (postgres.py): a failover
            # test needs the commit to wait for its WAL, here and, synchronous, on the standby.
            "synchronous_commit": "on",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "wal_sender_timeout": "'10s'",
        }
        # Synchronous from the start, the primary's CREATE DATABASE would wait for a standby not
        # made yet: start() names the standby once it streams.
        self.primary = PostgresServer(
            durable=durable,
            start_timeout=start_timeout,
            settings={**commit, "synchronous_standby_names": "''"},
        )
        # The standby's postgresql.conf is a copy of the primary's; once promoted it runs alone,
        # so it must not wait for a standby of its own (a real cluster keeps one more replica).
        self.standby = PostgresServer(
            durable=durable,
            start_timeout=start_timeout,
            base_backup_of=self.primary,
            settings={
                **commit,
                "synchronous_standby_names": "''",
                "cluster_name": f"'{STANDBY_NAME}'",
                "hot_standby": "on",
                "wal_receiver_status_interval": "'1s'",
                # After its primary vanished the startup process waits this long before trying
                # again, and a promotion asked meanwhile can wait as long (5 s by default).
                "wal_retrieve_retry_interval": "'200ms'",
            },
        )
        self.failed_over = False

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> ReplicatedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the primary, then the standby from its base backup; return once it streams."""
        try:
            self.primary.start()
            self.standby.start()
            if self.synchronous:
                with psycopg.connect(self.primary.dsn_for("postgres"), autocommit=True) as conn:
                    conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
                    conn.execute("SELECT pg_reload_conf()")
            self.wait_streaming()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.standby.stop()
        self.primary.stop()

    # -- URLs ----------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """Both servers in one libpq URL: the first that accepts writes is used."""
        return self.dsn_for(self.primary.dbname)

    def dsn_for(self, dbname: str) -> str:
        hosts = ",".join(quote(str(server.host), safe="/") for server in self.servers)
        ports = ",".join(str(server.port) for server in self.servers)
        return (
            f"postgresql://{self.primary.user}@/{dbname}?host={hosts}&port={ports}"
            "&target_session_attrs=read-write"
        )

    @property
    def servers(self) -> tuple[PostgresServer, PostgresServer]:
        return self.primary, self.standby

    @property
    def current_primary(self) -> PostgresServer:
        return self.standby if self.failed_over else self.primary

    # -- replication ---------------------------------------------------------------

    def replication_state(self) -> tuple[str, str] | None:
        """The standby as the primary sees it: (state, sync_state), e.g. ('streaming', 'sync')."""
        with psycopg.connect(self.primary.dsn_for("postgres"), autocommit=True) as conn:
            row = conn.execute(
                "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s",
                (STANDBY_NAME,),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def wait_streaming(self) -> None:
        """Return once the standby streams in the mode asked for (sync or async)."""
        wanted = ("streaming", "sync" if self.synchronous else "async")
        deadline = time.monotonic() + self.start_timeout
        state = None
        while (state := self.replication_state()) != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the standby does not replicate as {wanted} (pg_stat_replication: {state})\n"
                    f"--- standby log tail ---\n{self.standby.log_tail()}"
                )
            time.sleep(0.05)

    def fail_over(self) -> None:
        """Crash the primary and promote the standby (what an HA manager does, minus fencing:
        the old primary never comes back here)."""
        self.primary.kill()
        self.standby.promote()
        self.failed_over = True
