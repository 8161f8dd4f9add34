"""Failover to a standby: the primary crashes, the standby is promoted, no acknowledged write lost.

A team that outgrew the sidecar runs PostgreSQL replicated (CloudNativePG, a managed database)
and gives the operator and ``fxctl`` a multi-host URL with ``target_session_attrs=read-write``.
Here a real primary and a real streaming standby run on loopback (``support.pg_replication``);
the primary is SIGKILLed during a burst of secret writes, state writes and runs, and the standby
promoted. With synchronous replication every write the store acknowledged is on the new
primary and the writers carry on there without a restart. With asynchronous replication the
writes acknowledged but never streamed are lost: measured and recorded, not asserted on
(``bench/bench_failover.py`` prints the figure; docs/operations.md states the guarantee).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
import pytest
from fx_operator.config import Settings
from fx_operator.domain.channel_requests import parse_state_write
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import CommitUnknownError, ConflictError, ConnectionLostError
from fx_operator.services.configured_store import open_secret_service
from fx_operator.services.run_keys import RunKeyService
from fx_operator.services.runs import RunGrant, RunService
from fx_operator.services.secret_service import SecretService
from fx_operator.storage import run_keys
from fx_operator.storage.master_keys import FileMasterKeyProvider
from fx_operator.storage.run_records import RunRecord
from support.cluster import cluster
from support.pg_replication import ReplicatedPostgres
from support.postgres import PostgresNotFoundError
from support.processes import fxctl

pytestmark = pytest.mark.postgres

T = TypeVar("T")
PROJECT = "team-a"
PACKAGE = "etl"
WRITERS = 4
STATE_KEYS_PER_WRITER = 100  # reused: a package holds at most 1,000 state keys
ACKS_BEFORE_CRASH = 15  # per writer and kind of write, before the primary is killed
ACKS_AFTER_FAILOVER = 15  # per writer and kind, on the new primary, before the burst ends
EXECUTIONS = 10  # through the operator, half of them created after the failover
BURST_DEADLINE_S = 120.0  # a safety net for a hung test, not a measured time


def _pair(synchronous: bool) -> Iterator[ReplicatedPostgres]:
    try:
        pair = ReplicatedPostgres(synchronous=synchronous)
    except PostgresNotFoundError as exc:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}", pytrace=False)
        pytest.skip(str(exc))
    with pair:
        yield pair


@pytest.fixture
def sync_pair() -> Iterator[ReplicatedPostgres]:
    yield from _pair(synchronous=True)


@pytest.fixture
def async_pair() -> Iterator[ReplicatedPostgres]:
    yield from _pair(synchronous=False)


def _settings(pair: ReplicatedPostgres, home: Path) -> Settings:
    key_file = home / "master.key"
    if not key_file.exists():
        home.mkdir(parents=True, exist_ok=True)
        FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
    return Settings(home=home, database_url=pair.dsn, master_key_file=key_file,
                    actor="user:failover-test")


# --- the pool and the errors ---------------------------------------------------------------


def test_the_store_reconnects_to_the_promoted_standby(sync_pair: ReplicatedPostgres,
                                                      tmp_path: Path) -> None:
    """Every pooled connection dies with the primary; the next operations go to the new one."""
    service = open_secret_service(_settings(sync_pair, tmp_path))
    try:
        owner = Owner.of(Scope.PROJECT, PROJECT)
        with ThreadsHolding(service, 5):  # several connections in the pool, all to the primary
            pass
        service.set(owner, "BEFORE", "one")
        sync_pair.fail_over()
        service.set(owner, "AFTER", "two")  # no error: the dead connections were replaced
        assert service.get(owner, "BEFORE") == "one"
        assert service.get(owner, "AFTER") == "two"
        resolved = service.resolve(PROJECT, PACKAGE)
        assert resolved.values == {"BEFORE": "one", "AFTER": "two"}
        assert _server_of(service) == str(sync_pair.standby.host)
    finally:
        service.close()


def test_a_transaction_cut_before_its_commit_says_nothing_was_written(
        sync_pair: ReplicatedPostgres, tmp_path: Path) -> None:
    service = open_secret_service(_settings(sync_pair, tmp_path))
    try:
        with pytest.raises(ConnectionLostError, match="before the commit"), \
                service.store.transaction() as tx:
            service.store.set_meta(tx, "cut", "value")
            sync_pair.fail_over()
            tx.execute("SELECT 1")
        with service.store.transaction() as tx:
            assert service.store.get_meta(tx, "cut") is None
    finally:
        service.close()


def test_a_commit_cut_midway_is_not_reported_as_done(sync_pair: ReplicatedPostgres,
                                                     tmp_path: Path) -> None:
    """The primary waits for a synchronous standby that never answers, then dies: the writer
    gets CommitUnknownError, never a success, whatever the new primary holds."""
    service = open_secret_service(_settings(sync_pair, tmp_path))
    try:
        with psycopg.connect(sync_pair.primary.dsn_for("postgres"), autocommit=True) as admin:
            admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
            admin.execute("SELECT pg_reload_conf()")
        outcome: list[BaseException | str] = []

        def write() -> None:
            try:
                service.set(Owner.of(Scope.PROJECT, PROJECT), "WAITING", "value")
                outcome.append("acknowledged")
            except BaseException as e:
                outcome.append(e)

        writer = threading.Thread(target=write)
        writer.start()
        _wait_for(lambda: _waiting_for_sync_replication(sync_pair) > 0)
        sync_pair.fail_over()
        writer.join(BURST_DEADLINE_S)
        assert len(outcome) == 1 and isinstance(outcome[0], CommitUnknownError), outcome
    finally:
        service.close()


def test_fxctl_uses_the_multi_host_url(sync_pair: ReplicatedPostgres, tmp_path: Path) -> None:
    settings = _settings(sync_pair, tmp_path)
    env = {"FX_HOME": str(tmp_path), "FX_DATABASE_URL": sync_pair.dsn,
           "FX_MASTER_KEY_FILE": str(settings.master_key_file), "FX_ACTOR": "user:cli"}
    done = fxctl(["secrets", "set", "CLI", "before", "--scope", "platform"], env=env)
    assert done.returncode == 0, done.stderr
    sync_pair.fail_over()
    done = fxctl(["secrets", "set", "CLI", "after", "--scope", "platform"], env=env)
    assert done.returncode == 0, done.stderr
    done = fxctl(["secrets", "history", "CLI", "--scope", "platform", "--json"], env=env)
    assert done.returncode == 0, done.stderr
    assert '"version": 2' in done.stdout


def test_a_url_with_hosts_and_ports_in_its_authority_migrates_and_fails_over(
        sync_pair: ReplicatedPostgres, tmp_path: Path) -> None:
    """``postgresql://u@host1:port1,host2:port2/db``, libpq's usual multi-host form, which the
    schema migration (SQLAlchemy) must read as libpq does."""
    hosts = ",".join(f"{quote(str(server.host), safe='')}:{server.port}"
                     for server in sync_pair.servers)
    url = f"postgresql://postgres@{hosts}/fx?target_session_attrs=read-write"
    settings = _settings(sync_pair, tmp_path).model_copy(update={"database_url": url})
    service = open_secret_service(settings)  # a fresh database: the schema is created
    try:
        service.set(Owner.of(Scope.PLATFORM), "AUTHORITY", "one")
    finally:
        service.close()
    sync_pair.fail_over()
    service = open_secret_service(settings)
    try:
        assert service.get(Owner.of(Scope.PLATFORM), "AUTHORITY") == "one"
        assert _server_of(service) == str(sync_pair.standby.host)
    finally:
        service.close()


def test_executions_admitted_across_a_failover_all_succeed(sync_pair: ReplicatedPostgres,
                                                           tmp_path: Path) -> None:
    """The operator itself (kopf on the emulator, run pods played by local processes) on the
    multi-host URL: Executions created before, during and after the failover all succeed, each
    with one Job, and the operator is not restarted."""
    with cluster(tmp_path, sync_pair.dsn) as k8s:
        k8s.package("team-a", "burst", {"main.py": (
            "from fx_ef import context\n"
            "assert context.secrets.get('TOKEN') == 'burst-value'\n"
            "print('ran on', context.params.get('execution_id'))\n")})
        k8s.sealed_secret("team-a", "burst-secrets", {"TOKEN": "burst-value"}, "package",
                          package="burst")
        k8s.ready("packages", "team-a", "burst")
        k8s.ready("scopedsecrets", "team-a", "burst-secrets")
        names = [f"burst-{i}" for i in range(EXECUTIONS)]
        for name in names[: EXECUTIONS // 2]:
            k8s.execution("team-a", name, "burst")
        k8s.wait_for(lambda: any((k8s.get("executions", "team-a", name).get("status") or {})
                                 .get("runId") for name in names[: EXECUTIONS // 2]),
                   "a first admission")
        sync_pair.fail_over()  # some admitted, some running, some not seen yet
        for name in names[EXECUTIONS // 2:]:
            k8s.execution("team-a", name, "burst")
        for name in names:
            status = k8s.finished("team-a", name)["status"]
            assert status["phase"] == "Succeeded", (name, status)
            jobs = k8s.batch.list_namespaced_job("team-a",
                                                 label_selector=f"fx.dev/execution={name}")
            assert len(jobs.items) == 1, name


# --- a burst across the failover ----------------------------------------------------------


@dataclass
class Ledger:
    """What one writer had acknowledged, and when (before or after the failover)."""

    secrets: dict[str, str] = field(default_factory=dict)  # name -> value
    state: dict[str, str] = field(default_factory=dict)  # key -> value
    runs: list[str] = field(default_factory=list)  # finished runs' ids
    after_failover: int = 0  # acknowledged once the standby was promoted


class Burst:
    """WRITERS threads sharing one service (one pool, as in the operator), each writing secrets,
    state and whole runs until told to stop; a write counts once the store returned."""

    def __init__(self, pair: ReplicatedPostgres, service: SecretService) -> None:
        self.pair = pair
        self.service = service
        self.runs = RunService(service)
        self.keys = RunKeyService(service.store, service.keys)
        self.ledgers = [Ledger() for _ in range(WRITERS)]
        self.errors: list[BaseException] = []
        self.interruptions: Counter[str] = Counter()  # operations the failover cut, by outcome
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(i,), daemon=True)
                        for i in range(WRITERS)]

    def acknowledged(self, ledger: Ledger) -> int:
        return min(len(ledger.secrets), len(ledger.state), len(ledger.runs))

    def run(self) -> None:
        for thread in self.threads:
            thread.start()
        _wait_for(lambda: all(self.acknowledged(ledger) >= ACKS_BEFORE_CRASH
                              for ledger in self.ledgers) or bool(self.errors))
        self.pair.fail_over()  # mid-burst: the writers are not paused
        for ledger in self.ledgers:
            ledger.after_failover = 0
        _wait_for(lambda: all(ledger.after_failover >= 3 * ACKS_AFTER_FAILOVER
                              for ledger in self.ledgers) or bool(self.errors))
        self.stop.set()
        for thread in self.threads:
            thread.join(BURST_DEADLINE_S)
        if self.errors:
            raise self.errors[0]

    def _write(self, writer: int) -> None:
        ledger = self.ledgers[writer]
        owner = Owner.of(Scope.PROJECT, PROJECT)
        grant = RunGrant(f"burst-{writer}", PROJECT, PACKAGE)
        i = 0
        try:
            while not self.stop.is_set():
                i += 1
                value = secrets.token_hex(8)
                # State keys are reused: a package holds at most 1,000 (domain.state_limits),
                # and the last acknowledged value of each must be the one read back.
                name, key, run_id = (f"W{writer}_{i}", f"w{writer}-{i % STATE_KEYS_PER_WRITER}",
                                     f"run-{writer}-{i}")
                if self._once(ledger, partial(self.service.set, owner, name, value)):
                    self._acknowledged(ledger).secrets[name] = value
                write = parse_state_write(json.dumps({"key": key, "value": value}).encode())
                self._idempotent(partial(self.runs.put_state, grant, write))
                self._acknowledged(ledger).state[key] = value
                self._execution(run_id)
                self._acknowledged(ledger).runs.append(run_id)
        except BaseException as e:
            self.errors.append(e)

    def _acknowledged(self, ledger: Ledger) -> Ledger:
        ledger.after_failover += self.pair.failed_over
        return ledger

    def _once(self, ledger: Ledger, write: Callable[[], Any]) -> bool:
        """A write that is not repeated when its commit was cut (a secret's new version)."""
        try:
            self._retrying_lost(write)
        except CommitUnknownError:
            self._note("commit cut, not acknowledged")
            return False
        return True

    def _execution(self, run_id: str) -> None:
        """An Execution through the service layer, each step repeated as kopf repeats a
        handler: its key registered, its secrets resolved (the read audited), its result
        recorded, the run finished."""
        self._idempotent(lambda: self.keys.register(run_id, PROJECT, run_id, f"job-{run_id}",
                                               PACKAGE, secrets.token_bytes(32), False))
        self._idempotent(lambda: self.service.resolve(PROJECT, PACKAGE, run_id=run_id))
        now = datetime.now(UTC)
        record = RunRecord(run_id, PROJECT, PACKAGE, f"run:{run_id}", 0, None, False, now, now,
                           0.0, "done", False)

        def record_once() -> None:
            with contextlib.suppress(ConflictError):  # a repeat of a cut commit that went through
                self.runs.record_result(record)

        self._idempotent(record_once)
        assert self._idempotent(lambda: _finish(self.service, run_id))

    def _idempotent(self, write: Callable[[], T]) -> T:
        """A write that may be repeated until it is confirmed, also after a cut commit."""
        while True:
            try:
                return self._retrying_lost(write)
            except CommitUnknownError:
                self._note("commit cut, repeated")

    def _retrying_lost(self, write: Callable[[], T]) -> T:
        """Nothing was written when the connection broke before the commit: write again (the
        pool waits for a connection to the new primary)."""
        while True:
            try:
                return write()
            except ConnectionLostError:
                self._note("cut before the commit, repeated")

    def _note(self, what: str) -> None:
        with self._lock:
            self.interruptions[what] += 1


def _finish(service: SecretService, run_id: str) -> bool:
    with service.store.transaction() as tx:
        run_keys.mark_finished(tx, run_id)
        record = run_keys.get(tx, run_id)
    return record is not None and record.finished_at is not None


@dataclass
class Lost:
    secrets: list[str]
    state: list[str]
    runs: list[str]

    @property
    def count(self) -> int:
        return len(self.secrets) + len(self.state) + len(self.runs)


def _lost(pair: ReplicatedPostgres, ledgers: list[Ledger]) -> Lost:
    """What was acknowledged but is not on the current primary, read over fresh connections."""
    with psycopg.connect(pair.dsn, autocommit=True) as conn:
        assert conn.info.host == str(pair.current_primary.host)
        stored_secrets = {r[0] for r in conn.execute(
            "SELECT name FROM secret_versions WHERE project = %s AND is_current", (PROJECT,))}
        stored_runs = {r[0] for r in conn.execute(
            "SELECT k.run_id FROM run_keys k JOIN run_results r USING (run_id) "
            "WHERE k.finished_at IS NOT NULL")}
    lost = Lost([], [], [])
    for ledger in ledgers:
        lost.secrets += [name for name in ledger.secrets if name not in stored_secrets]
        lost.runs += [run for run in ledger.runs if run not in stored_runs]
    return lost


def _burst(pair: ReplicatedPostgres, tmp_path: Path) -> tuple[Burst, Lost, SecretService]:
    service = open_secret_service(_settings(pair, tmp_path))
    burst = Burst(pair, service)
    burst.run()
    lost = _lost(pair, burst.ledgers)
    grant = RunGrant("check", PROJECT, PACKAGE)
    state = burst.runs.get_state(grant)
    for ledger in burst.ledgers:
        lost.state += [key for key, value in ledger.state.items() if state.get(key) != value]
    return burst, lost, service


def test_synchronous_replication_loses_no_acknowledged_write(sync_pair: ReplicatedPostgres,
                                                             tmp_path: Path) -> None:
    burst, lost, service = _burst(sync_pair, tmp_path)
    try:
        print(f"synchronous failover: {_acknowledged(burst)} acknowledged writes, none may be "
              f"lost; cut by the failover: {dict(burst.interruptions)}")
        assert lost.count == 0, lost
        owner = Owner.of(Scope.PROJECT, PROJECT)
        for ledger in burst.ledgers:  # every acknowledged value reads back as written
            assert ledger.after_failover >= 3 * ACKS_AFTER_FAILOVER
            for name, value in list(ledger.secrets.items())[:: max(1, len(ledger.secrets) // 10)]:
                assert service.get(owner, name) == value
        assert _server_of(service) == str(sync_pair.standby.host)
    finally:
        service.close()


def test_asynchronous_replication_loss_is_measured(async_pair: ReplicatedPostgres,
                                                    tmp_path: Path,
                                                    record_property: Callable[[str, Any], None],
                                                    ) -> None:
    burst, lost, service = _burst(async_pair, tmp_path)
    try:
        acknowledged = _acknowledged(burst)
        record_property("acknowledged_writes", acknowledged)
        record_property("lost_acknowledged_writes", lost.count)
        print(f"asynchronous failover: {lost.count} of {acknowledged} acknowledged writes lost "
              f"({len(lost.secrets)} secrets, {len(lost.state)} state keys, {len(lost.runs)} "
              f"runs); cut by the failover: {dict(burst.interruptions)}; load average "
              f"{os.getloadavg()[0]:.2f}")
        # What is guaranteed: the writers carried on against the new primary.
        assert all(ledger.after_failover >= 3 * ACKS_AFTER_FAILOVER for ledger in burst.ledgers)
    finally:
        service.close()


def _acknowledged(burst: Burst) -> int:
    return sum(len(ledger.secrets) + len(ledger.state) + len(ledger.runs)
               for ledger in burst.ledgers)


# --- helpers ----------------------------------------------------------------------------------


class ThreadsHolding:
    """``n`` threads each holding a pooled connection at once, so the pool grows to ``n``."""

    def __init__(self, service: SecretService, n: int) -> None:
        self.service = service
        self.n = n

    def __enter__(self) -> ThreadsHolding:
        barrier = threading.Barrier(self.n)

        def hold() -> None:
            with self.service.store.transaction() as tx:
                tx.execute("SELECT 1")
                barrier.wait(30)

        threads = [threading.Thread(target=hold) for _ in range(self.n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _server_of(service: SecretService) -> str:
    with service.store.transaction() as tx:
        return str(tx.execute("SELECT current_setting('unix_socket_directories')")[0][0])


def _waiting_for_sync_replication(pair: ReplicatedPostgres) -> int:
    with psycopg.connect(pair.primary.dsn_for("postgres"), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE wait_event = 'SyncRep'").fetchone()
    return int(row[0]) if row else 0


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BURST_DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting (a safety net, not a timing assertion)")
        time.sleep(0.02)
