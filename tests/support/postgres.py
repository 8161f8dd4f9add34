"""A throwaway PostgreSQL server for tests.

``PostgresServer`` runs ``initdb`` into a fresh directory under ``/tmp``, starts
the server with durability switched off (tests never need crash safety), and
listens on a unix socket inside that directory only. ``stop()`` kills it
(``pg_ctl stop -m immediate``) and removes the directory; an ``atexit`` hook does
the same if the caller forgets.

PostgreSQL refuses to run as root. When the tests run as root (CI, containers)
every server-side program (``initdb``, ``pg_ctl``, ``pg_dump``) is started as
the ``postgres`` system user through ``runuser``; otherwise (a developer laptop)
they run as the current user.

Binaries are looked up in this order: ``$FX_PG_BINDIR``, ``pg_config --bindir``,
``/usr/lib/postgresql/*/bin`` (newest first), then ``PATH``.

Usage::

    with PostgresServer() as pg:
        dsn = pg.create_database("t1")   # postgresql://postgres@/t1?host=...&port=...
        psycopg.connect(dsn)
        pg.dump("t1")                    # plain SQL bytes
        pg.restart("immediate")          # a crash and a recovery, same port

A streaming standby of a running server (``tests/support/pg_replication.py``)::

    standby = PostgresServer(base_backup_of=primary, settings={"cluster_name": "'s1'"})
    standby.start()      # pg_basebackup -R: a copy that follows the primary
    primary.kill()       # SIGKILL of the postmaster and its children: a crash
    standby.promote()    # pg_ctl promote: the standby accepts writes
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = [
    "INSTALL_HINT",
    "PostgresNotFoundError",
    "PostgresServer",
    "find_bindir",
    "sqlalchemy_url",
]

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_dump) were not found. "
    "Install them with `apt-get install postgresql` (Debian/Ubuntu; the binaries land in "
    "/usr/lib/postgresql/<version>/bin) or point FX_PG_BINDIR at the folder holding them."
)

_REQUIRED = ("initdb", "pg_ctl", "postgres", "pg_dump")  # and pg_basebackup for a standby
_SERVER_USER = "postgres"  # the OS user that runs the server when we are root
_SUPERUSER = "postgres"  # the database superuser created by initdb
_DBNAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresNotFoundError(RuntimeError):
    """No usable PostgreSQL server installation was found on this machine."""


def _has_all(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED)


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,)
    version = Path(path).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version))


def find_bindir() -> Path:
    """Return the folder holding initdb, pg_ctl, postgres and pg_dump.

    Raises ``PostgresNotFoundError`` (with an install hint) if there is none.
    """
    explicit = os.environ.get("FX_PG_BINDIR")
    if explicit:
        if _has_all(Path(explicit)):
            return Path(explicit)
        raise PostgresNotFoundError(
            f"FX_PG_BINDIR={explicit} does not contain all of {', '.join(_REQUIRED)}. "
            + INSTALL_HINT
        )

    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates.extend(Path(p) for p in versioned)
    initdb = shutil.which("initdb")
    if initdb:
        # Follow symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb).
        candidates.append(Path(os.path.realpath(initdb)).parent)
        candidates.append(Path(initdb).parent)

    for candidate in candidates:
        if _has_all(candidate):
            return candidate
    raise PostgresNotFoundError(INSTALL_HINT)


def sqlalchemy_url(dsn: str) -> str:
    """Turn a libpq URL from this module into a SQLAlchemy URL for the psycopg driver."""
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One private PostgreSQL cluster in a temp dir; a context manager.

    Attributes, valid after ``start()``:

    * ``dsn`` -- libpq URL of the default database ``dbname`` (``fx``),
      e.g. ``postgresql://postgres@/fx?host=/tmp/fx-pg-abc&port=54321``.
    * ``bindir`` -- the folder of the PostgreSQL binaries in use.
    * ``host`` -- the unix socket directory; ``port`` -- the port number (it names
      the socket file; TCP on 127.0.0.1 is only opened with ``tcp=True``).
    """

    def __init__(
        self,
        *,
        bindir: Path | str | None = None,
        dbname: str = "fx",
        tcp: bool = False,
        start_timeout: int = 60,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
        base_backup_of: PostgresServer | None = None,
    ) -> None:
        _check_dbname(dbname)
        self.bindir: Path = Path(bindir) if bindir is not None else find_bindir()
        if not _has_all(self.bindir):
            raise PostgresNotFoundError(f"{self.bindir} is incomplete. " + INSTALL_HINT)
        self.dbname = dbname
        self.user = _SUPERUSER
        self.tcp = tcp
        self.durable = durable  # keep fsync on: benchmarks measure what a user's server does
        self.start_timeout = start_timeout
        # postgresql.conf lines (values quoted as the file wants them), after our own: they win.
        self.settings = dict(settings or {})
        # A standby: its data directory is a base backup of this running server (pg_basebackup
        # -R), so it starts in recovery and streams the primary's WAL.
        self.base_backup_of = base_backup_of
        self.port: int = _free_port()
        self.tmpdir: Path | None = None
        self.startup_seconds: float | None = None
        self._running = False
        self._as_root = os.geteuid() == 0

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
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
        """Create the cluster, start the server and create the default database."""
        if self._running:
            return
        t0 = time.monotonic()
        # Always /tmp: $TMPDIR may point somewhere the postgres user can't reach,
        # and unix socket paths must stay short.
        self.tmpdir = Path(tempfile.mkdtemp(prefix="fx-pg-", dir="/tmp"))
        atexit.register(self.stop)
        try:
            if self._as_root:
                pw = _server_user()
                os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
            if self.base_backup_of is not None:
                self._copy_base_backup(self.base_backup_of)
            else:
                self._initdb()
            self._write_config()
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "--pgdata",
                    str(self.datadir),
                    "--log",
                    str(self.logfile),
                    "--wait",
                    "--timeout",
                    str(self.start_timeout),
                    "start",
                ],
                what="pg_ctl start",
            )
            self._running = True
            if self.base_backup_of is None:  # a standby has the primary's databases
                self._create(self.dbname)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.datadir),
                "--username",
                self.user,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            what="initdb",
        )

    def _copy_base_backup(self, primary: PostgresServer) -> None:
        """The standby's data directory: the primary's, with its standby.signal and
        primary_conninfo (-R); WAL of the copy streamed alongside (-X stream)."""
        self._run(
            [
                str(self.bindir / "pg_basebackup"),
                "--pgdata",
                str(self.datadir),
                "--host",
                str(primary.host),
                "--port",
                str(primary.port),
                "--username",
                primary.user,
                "--no-password",
                "--write-recovery-conf",
                "--wal-method",
                "stream",
                "--checkpoint",
                "fast",
                "--no-sync",
            ],
            what="pg_basebackup",
        )

    def stop(self) -> None:
        """Kill the server (immediate shutdown) and delete its directory. Idempotent."""
        atexit.unregister(self.stop)
        tmpdir, self.tmpdir = self.tmpdir, None
        self._running = False
        if tmpdir is None:
            return
        datadir = tmpdir / "data"
        if (datadir / "postmaster.pid").exists():
            try:
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "--pgdata",
                        str(datadir),
                        "--mode",
                        "immediate",
                        "--wait",
                        "--timeout",
                        "30",
                        "stop",
                    ],
                    what="pg_ctl stop",
                    cwd=tmpdir,
                )
            except (RuntimeError, OSError, subprocess.SubprocessError):
                _kill_postmaster(datadir)
        shutil.rmtree(tmpdir, ignore_errors=True)

    def kill(self) -> None:
        """Crash the server: SIGKILL to the postmaster and every process it started, at once,
        as when its machine dies (no shutdown checkpoint, no goodbye to clients or standbys).
        ``stop()`` still removes the directory."""
        if self.tmpdir is None:
            raise RuntimeError("PostgresServer is not started")
        postmaster = int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        for pid in (postmaster, *_children(postmaster)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._running = False

    def promote(self) -> None:
        """End a standby's recovery: from now on it takes writes (``pg_ctl promote --wait``)."""
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "--pgdata",
                str(self.datadir),
                "--wait",
                "--timeout",
                str(self.start_timeout),
                "promote",
            ],
            what="pg_ctl promote",
        )

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast``: sessions ended, a checkpoint; ``immediate``:
        a crash, recovered from the WAL at start) and start it again on the same port and socket.
        Only what was committed (and, with ``synchronous_commit`` off, flushed) survives."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"not a pg_ctl shutdown mode: {mode!r}")
        if not self._running:
            raise RuntimeError("PostgresServer is not started")
        pg_ctl = str(self.bindir / "pg_ctl")
        self._run([pg_ctl, "--pgdata", str(self.datadir), "--mode", mode, "--wait",
                   "--timeout", "30", "stop"], what="pg_ctl stop")
        self._run([pg_ctl, "--pgdata", str(self.datadir), "--log", str(self.logfile), "--wait",
                   "--timeout", str(self.start_timeout), "start"], what="pg_ctl start")

    # -- paths and URLs ----------------------------------------------------------

    @property
    def host(self) -> Path:
        """The unix socket directory."""
        if self.tmpdir is None:
            raise RuntimeError("PostgresServer is not started")
        return self.tmpdir

    @property
    def datadir(self) -> Path:
        return self.host / "data"

    @property
    def logfile(self) -> Path:
        return self.host / "postgres.log"

    @property
    def dsn(self) -> str:
        """libpq URL of the default database."""
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str) -> str:
        """libpq URL of database ``dbname`` on this server."""
        host = quote(str(self.host), safe="/")
        return f"postgresql://{self.user}@/{dbname}?host={host}&port={self.port}"

    # -- databases ---------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create a fresh, empty database and return its DSN."""
        self._create(name)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, terminating any sessions still connected to it."""
        _check_dbname(name)
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def dump(self, dbname: str | None = None) -> bytes:
        """Return ``pg_dump``'s plain SQL dump of ``dbname`` (default: ``self.dbname``)."""
        name = dbname or self.dbname
        _check_dbname(name)
        return self._run(
            [
                str(self.bindir / "pg_dump"),
                "--host",
                str(self.host),
                "--port",
                str(self.port),
                "--username",
                self.user,
                "--no-password",
                "--format",
                "plain",
                name,
            ],
            what="pg_dump",
        )

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server log, for error messages."""
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- internals ---------------------------------------------------------------

    def _create(self, name: str) -> None:
        _check_dbname(name)
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    sql.Identifier(name)
                )
            )

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'" if self.tcp else "''",
            "port": str(self.port),
            "unix_socket_directories": _conf_quote(str(self.host)),
            "max_connections": "200",
            "log_min_messages": "warning",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        settings |= self.settings
        conf = self.datadir / "postgresql.conf"
        with conf.open("a") as f:
            f.write("\n# added by tests/support/postgres.py\n")
            for key, value in settings.items():
                f.write(f"{key} = {value}\n")

    def _run(self, argv: list[str], *, what: str, cwd: Path | None = None) -> bytes:
        """Run a PostgreSQL program (as the postgres user when we are root)."""
        if self._as_root:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            argv = [runuser, "-u", _SERVER_USER, "--", *argv]
        proc = subprocess.run(
            argv,
            cwd=cwd or self.tmpdir,  # the postgres user must be able to enter cwd
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self.start_timeout + 30,
            check=False,
        )
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise RuntimeError(
                f"{what} failed (exit {proc.returncode}): {err}\n"
                f"--- server log tail ---\n{self.log_tail()}"
            )
        return proc.stdout


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(_SERVER_USER)
    except KeyError:
        raise PostgresNotFoundError(
            f"running as root, PostgreSQL must run as the '{_SERVER_USER}' user, which does "
            "not exist. `apt-get install postgresql` creates it."
        ) from None


def _check_dbname(name: str) -> None:
    if not _DBNAME_RE.match(name):
        raise ValueError(f"not a plain database name: {name!r}")


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _clean_env() -> dict[str, str]:
    # Drop PG* variables (PGHOST, PGDATA, PGPASSWORD...) that would steer the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux: /proc/<pid>/task/*/children)."""
    children: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError):
            children.extend(int(child) for child in Path(path).read_text().split())
    return children


def _kill_postmaster(datadir: Path) -> None:
    """Last resort when pg_ctl stop failed: SIGKILL the postmaster named in its pid file."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((datadir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
