"""The database handle: one async engine, its sessions, and Alembic migrations run from code.

SQLite (the default, a file in the data directory) and PostgreSQL are both first-class; a URL
names which, and any other database is refused. Nothing here logs a URL with its password in it:
use `Database.url_for_display`. A database that can't be reached, created or migrated is reported
by `Database.prepare()` as one line (`DatabaseUnavailable`), for `serve` and the CLI to print.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, DBAPIError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Drivers that only speak synchronously are swapped for the async one of the same database, so a
# DATABASE_URL copied from a hosting dashboard (postgres://...) just works.
_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}

SUPPORTED_BACKENDS = frozenset({"sqlite", "postgresql"})

# Arbitrary but fixed: every callassist process migrating the same PostgreSQL database takes this
# advisory lock, so a server starting while `callassist db upgrade` runs waits instead of racing.
_MIGRATION_LOCK_KEY = 0x63616C6C  # "call"

# Execution option carried by read-only sessions; the SQLite BEGIN hook reads it.
_READ_ONLY = "callassist_read_only"
BUSY_TIMEOUT_MS = 5000  # SQLite: how long a connection waits for another's write lock
WRITE_QUEUE_S = 30.0  # the longest a writer waits in this process's queue for SQLite's write lock


class DatabaseUrlError(ValueError):
    """The database URL can't be used (unknown scheme, or a driver without asyncio support)."""


class DatabaseUnavailable(RuntimeError):
    """The database can't be reached, created or migrated. `database` names it (password masked),
    `reason` says why in one line, never with SQL or parameters; the message joins them."""

    def __init__(self, database: str, reason: str) -> None:
        super().__init__(f"cannot open the database {database}: {reason}")
        self.database = database
        self.reason = reason


def describe_failure(exc: BaseException) -> str:
    """The first line of what the driver said (a DBAPIError's own text appends SQL and parameters)."""
    reason = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else str(exc)
    first = next((line.strip() for line in reason.splitlines() if line.strip()), "")
    return first or type(exc).__name__


def async_database_url(url: str | URL) -> URL:
    """`url` with its driver swapped for the async one (postgres:// -> postgresql+asyncpg://)."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        # The message of ArgumentError quotes the URL, password and all.
        raise DatabaseUrlError("DATABASE_URL is not a database URL (e.g. postgresql://host/db)") from exc
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def mask_password(url: str | URL) -> str:
    """The URL as a string, with any password replaced by ***."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic Config built in code (no alembic.ini), pointing at the packaged migrations.

    With a URL, env.py can open its own connection (used when generating a new revision);
    `Database.upgrade` instead hands env.py its live connection through `config.attributes`.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = async_database_url(url).render_as_string(hide_password=False)
        # ConfigParser interpolation would choke on a % in an encoded password.
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of callassist."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


class Database:
    """An async engine plus a session factory. Build one per process and share it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # A second view of the same pool whose connections carry the read-only flag.
        self._read_engine = engine.execution_options(**{_READ_ONLY: True})
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self._read_engine, expire_on_commit=False)
        # SQLite has one write lock per file. Writers of this process queue for it here, in the
        # event loop, rather than in SQLite's busy timeout: on a loaded loop a write transaction
        # spans many loop turns (each statement is awaited), and writers queued inside SQLite
        # would fail with "database is locked" after busy_timeout. Other processes (the CLI) still
        # meet the busy timeout.
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_queue: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)

    @classmethod
    def from_url(cls, url: str | URL, **engine_options: Any) -> Database:
        """Open (lazily: no connection is made yet) the database at `url`.

        Accepts sqlite:///path, sqlite+aiosqlite:///path, postgres://, postgresql:// and
        postgresql+asyncpg:// URLs. For a SQLite file, its directory is created; in-memory SQLite
        is refused. `engine_options` go to `create_async_engine` (e.g. pool_size).
        """
        parsed = async_database_url(url)
        if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
            raise DatabaseUrlError(
                f"unsupported database {mask_password(parsed)}: use sqlite:///path/to/callassist.db "
                "or postgresql://user@host/dbname"
            )
        if parsed.get_backend_name() == "sqlite":
            if _is_sqlite_memory(parsed):
                # SQLAlchemy gives :memory: one shared connection, so two sessions at once would
                # share (and break) one transaction.
                raise DatabaseUrlError("in-memory SQLite is not supported: give a file path")
            _create_sqlite_directory(parsed)
        engine_options.setdefault("pool_pre_ping", parsed.get_backend_name() != "sqlite")
        try:
            # Errors never quote the row's values (a caller's name, a message) into logs or answers.
            engine = create_async_engine(parsed, hide_parameters=True, **engine_options)
        except (InvalidRequestError, ArgumentError) as exc:
            # These messages name the driver, never the URL, so they are safe to pass on.
            raise DatabaseUrlError(
                f"cannot use {mask_password(parsed)}: {exc} "
                "(use sqlite+aiosqlite:// or postgresql+asyncpg://)"
            ) from exc
        except ModuleNotFoundError as exc:
            raise DatabaseUrlError(
                f"cannot use {mask_password(parsed)}: driver module {exc.name!r} is not installed"
            ) from exc
        return cls(engine)

    @property
    def dialect_name(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @property
    def url_for_display(self) -> str:
        return mask_password(self.engine.url)

    def __repr__(self) -> str:
        return f"Database({self.url_for_display})"

    @asynccontextmanager
    async def session(self, *, read_only: bool = False) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed when the block ends, rolled back on error.

        `read_only=True` is a promise not to write: on SQLite it starts a deferred transaction so
        it never waits for writers (WAL readers see the last commit); writing in one may fail with
        "database is locked". Other sessions take SQLite's write lock up front (BEGIN IMMEDIATE).
        """
        if read_only or not self._sqlite:
            factory = self._read_sessions if read_only else self._sessions
            async with factory() as session, session.begin():
                yield session
            return
        lock = self._writers_queue()
        queued = False
        with contextlib.suppress(TimeoutError):
            # Bounded: a write session opened inside another (a bug) meets SQLite's own timeout.
            await asyncio.wait_for(lock.acquire(), WRITE_QUEUE_S)
            queued = True
        try:
            async with self._sessions() as session, session.begin():
                yield session
        finally:
            if queued:
                lock.release()

    def _writers_queue(self) -> asyncio.Lock:
        """This event loop's queue of SQLite writers (a Database may outlive a loop in tests)."""
        loop = asyncio.get_running_loop()
        if self._write_queue is None or self._write_queue[0] is not loop:
            self._write_queue = (loop, asyncio.Lock())
        return self._write_queue[1]

    async def upgrade(self, revision: str = "head") -> str | None:
        """Bring the schema up to `revision` (Alembic) and return the revision it is now at.

        Safe to call on every start-up: at head it does nothing. Each upgrade is one transaction
        on both SQLite and PostgreSQL, so a failed migration leaves the schema as it was.

        Runs on a connection of this engine inside the current event loop: Alembic's synchronous
        API is driven through `run_sync`, env.py finds the connection in `config.attributes`.
        """
        config = alembic_config()
        async with self.engine.begin() as connection:
            reached = await connection.run_sync(_upgrade_on, config, revision)
        log.info("database %s is at revision %s", self.url_for_display, reached)
        return reached

    async def prepare(self) -> str | None:
        """`upgrade()` for a process starting up: any failure to reach, create or migrate the
        database becomes a `DatabaseUnavailable` saying which database and why, in one line."""
        try:
            return await self.upgrade()
        except Exception as exc:  # drivers raise their own classes (asyncpg, OSError, sqlite3...)
            log.debug("database %s unavailable", self.url_for_display, exc_info=True)
            reason = describe_failure(exc)
            if self.dialect_name == "sqlite" and "unable to open" in reason:
                reason += (
                    " (is it a file in a directory you can write? see CALLASSIST_DATA_DIR, DATABASE_URL)"
                )
            raise DatabaseUnavailable(self.url_for_display, reason) from None

    async def current_revision(self) -> str | None:
        """The revision the database is at, or None for a database never migrated."""
        async with self._read_engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )

    async def close(self) -> None:
        """Close every pooled connection (SQLite's WAL is checkpointed when the last one goes)."""
        await self.engine.dispose()


def _upgrade_on(connection: Connection, config: Config, revision: str) -> str | None:
    if connection.dialect.name == "postgresql":
        # Held until this transaction ends; DDL on PostgreSQL is transactional, so a concurrent
        # upgrader waits here and then finds nothing left to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    return MigrationContext.configure(connection).get_current_revision()


def _is_sqlite_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database or url.query.get("mode") == "memory"


def _create_sqlite_directory(url: URL) -> None:
    database = url.database
    if not database or database.startswith("file:"):
        return  # URI filenames are the user's business
    directory = Path(database).parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(
            mask_password(url),
            f"cannot create its directory {directory}: {exc.strerror or exc} "
            "(set CALLASSIST_DATA_DIR or DATABASE_URL to a place you can write)",
        ) from None


def _configure_sqlite(engine: AsyncEngine) -> None:
    """Per-connection pragmas, and transactions that SQLAlchemy (not sqlite3) begins."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # sqlite3's legacy mode only BEGINs before DML, so DDL (migrations) would autocommit
        # statement by statement; turn it off and emit BEGIN ourselves in _on_begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another connection may hold.
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # WAL + synchronous=NORMAL: a commit survives the process being killed (only an OS
            # crash or power loss can roll back the last transactions), and readers never block.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes can get SQLITE_BUSY at the upgrade to
        # a write lock without the busy timeout being honoured; IMMEDIATE takes the lock (waiting
        # up to busy_timeout) at BEGIN, so concurrent writers queue instead of failing.
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
