"""Database: URLs, SQLite pragmas and transactions, migrations from empty on both backends."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from callassist.calendar.local import LocalCalendar
from callassist.store.db import (
    Database,
    DatabaseUnavailable,
    DatabaseUrlError,
    alembic_config,
    async_database_url,
    head_revision,
    mask_password,
)
from callassist.store.models import Base
from tests.support.postgres import postgres_database_or_skip
from tests.support.process import free_port


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///data/callassist.db", "sqlite+aiosqlite:///data/callassist.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("postgres://u:p@db.example/app", "postgresql+asyncpg://u:p@db.example/app"),
        ("postgresql://u@db.example:6543/app", "postgresql+asyncpg://u@db.example:6543/app"),
        ("postgresql+asyncpg://u@h/app", "postgresql+asyncpg://u@h/app"),
    ],
)
def test_urls_are_mapped_to_async_drivers(given: str, expected: str) -> None:
    assert async_database_url(given).render_as_string(hide_password=False) == expected


def test_password_is_masked_for_display() -> None:
    database = Database.from_url("postgres://owner:s3cret%25pw@db.example:5432/callassist")
    assert database.url_for_display == "postgresql+asyncpg://owner:***@db.example:5432/callassist"
    assert "s3cret" not in repr(database)
    assert mask_password("not a url at all") == "<unparseable database URL>"


def test_unusable_url_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(DatabaseUrlError) as raised:
        Database.from_url("nosuchdb://owner:s3cret@host/db")
    assert "s3cret" not in str(raised.value)
    with pytest.raises(DatabaseUrlError) as raised:
        async_database_url("owner:s3cret@host")
    assert "s3cret" not in str(raised.value)
    with pytest.raises(DatabaseUrlError, match="in-memory"):
        Database.from_url("sqlite://")


@pytest.mark.parametrize(
    "url",
    ["mysql://owner:s3cret@host/db", "mysql+aiomysql://owner:s3cret@host/db", "oracle://owner:s3cret@h/db"],
)
def test_databases_other_than_sqlite_and_postgresql_are_refused(url: str) -> None:
    with pytest.raises(DatabaseUrlError, match=r"^unsupported database .*: use sqlite:///") as raised:
        Database.from_url(url)
    assert "s3cret" not in str(raised.value) and "\n" not in str(raised.value)


async def test_a_database_that_cannot_be_created_or_reached_is_one_line(tmp_path: Path) -> None:
    # A data directory that can't be created (a file is in the way; permissions don't stop root).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DatabaseUnavailable, match="cannot open the database sqlite") as raised:
        Database.from_url(f"sqlite:///{blocker / 'data' / 'callassist.db'}")
    assert raised.value.database == f"sqlite+aiosqlite:///{blocker / 'data' / 'callassist.db'}"
    assert raised.value.reason.startswith(f"cannot create its directory {blocker / 'data'}: ")

    # A database file that can't be opened (a directory is in the way).
    (tmp_path / "callassist.db").mkdir()
    unopenable = Database.from_url(f"sqlite:///{tmp_path / 'callassist.db'}")
    # Nothing listens there: refused at once.
    unreachable = Database.from_url(f"postgresql://owner:s3cret@127.0.0.1:{free_port()}/callassist")
    cases = ((unopenable, "unable to open database file"), (unreachable, "Connect call failed"))
    for database, reason in cases:
        try:
            with pytest.raises(DatabaseUnavailable) as raised:
                await database.prepare()
        finally:
            await database.close()
        message = str(raised.value)
        assert message.startswith(f"cannot open the database {database.url_for_display}: ")
        assert reason in message and "\n" not in message and "s3cret" not in message
        assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_server_start_up_refuses_an_unusable_database_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Embedded (not through `callassist serve`, which checks first): uvicorn logs one line, no
    traceback, and does not start."""
    from callassist.server import build_server
    from callassist.settings import load_settings

    (tmp_path / "callassist.db").mkdir()
    settings = load_settings(
        _env_file=None,
        openai_api_key="sk-test",
        openai_base_url="http://127.0.0.1:9/v1",
        database_url=f"sqlite:///{tmp_path / 'callassist.db'}",
        port=free_port(),
    )
    server = build_server(settings)
    caplog.set_level(logging.INFO)
    with pytest.raises(SystemExit) as exited:  # uvicorn's way out of a failed start-up
        async with asyncio.timeout(15):
            await server.serve()
    assert exited.value.code != 0 and not server.started
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failures[0].getMessage() == (
        f"cannot open the database sqlite+aiosqlite:///{tmp_path / 'callassist.db'}: "
        "unable to open database file (is it a file in a directory you can write? see "
        "CALLASSIST_DATA_DIR, DATABASE_URL)"
    )
    assert all(r.exc_info is None and "Traceback" not in r.getMessage() for r in failures)


async def test_sqlite_directory_created_and_pragmas_set(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "callassist.db"
    database = Database.from_url(f"sqlite:///{path}")
    try:
        assert path.parent.is_dir()
        async with database.session() as session:
            pragmas = {
                name: (await session.execute(text(f"PRAGMA {name}"))).scalar_one()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
        # synchronous: 1 is NORMAL.
        assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000, "synchronous": 1}
    finally:
        await database.close()


async def test_session_commits_on_success_and_rolls_back_ddl_on_error(empty_database: Database) -> None:
    # On SQLite this only holds because we emit BEGIN ourselves (sqlite3 would autocommit DDL).
    async with empty_database.session() as session:
        await session.execute(text("CREATE TABLE kept (x INTEGER)"))
    with pytest.raises(RuntimeError):
        async with empty_database.session() as session:
            await session.execute(text("CREATE TABLE dropped (x INTEGER)"))
            raise RuntimeError("boom")
    async with empty_database.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "kept" in tables
    assert "dropped" not in tables


async def test_upgrade_from_empty_then_again_is_a_no_op(empty_database: Database) -> None:
    assert await empty_database.current_revision() is None
    assert await empty_database.upgrade() == head_revision() == "0007"
    assert await empty_database.upgrade() == head_revision()
    assert await empty_database.current_revision() == head_revision()

    def schema(sync: Connection) -> dict[str, object]:
        inspector = inspect(sync)
        return {
            "tables": set(inspector.get_table_names()),
            "indexes": {ix["name"] for ix in inspector.get_indexes("calendar_events")},
            "checks": {ck["name"] for ck in inspector.get_check_constraints("calendar_events")},
            "pk": inspector.get_pk_constraint("calendar_events")["constrained_columns"],
        }

    async with empty_database.engine.connect() as connection:
        found = await connection.run_sync(schema)
    assert found["tables"] == {
        "alembic_version",
        "calendar_events",
        "calls",
        "contacts",
        "messages",
        "outbox",
        "stream_admissions",
        "tool_calls",
        "transcript_entries",
        "usage_records",
        "voicemails",
        "call_segments",
    }
    assert found["indexes"] == {
        "ix_calendar_events_start",
        "ix_calendar_events_end",
        "ix_calendar_events_caller_number",
    }
    assert found["checks"] == {"ck_calendar_events_status", "ck_calendar_events_end_after_start"}
    assert found["pk"] == ["id"]


async def test_migrations_match_the_models(database: Database) -> None:
    """The hand-written migrations produce exactly what the models declare (no autogenerate diff)."""

    def diff(sync: Connection) -> list[object]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with database.engine.connect() as connection:
        assert await connection.run_sync(diff) == []


async def test_downgrade_to_base_and_back(database: Database) -> None:
    def downgrade(sync: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync
        command.downgrade(config, "base")

    async with database.engine.begin() as connection:
        await connection.run_sync(downgrade)
    async with database.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert tables == ["alembic_version"]
    assert await database.upgrade() == head_revision()


async def test_concurrent_upgrades_from_two_processes_both_succeed(
    empty_database: Database,
) -> None:
    # A second Database on the same URL stands in for `callassist db upgrade` racing the server.
    other = Database.from_url(empty_database.engine.url)
    try:
        reached = await asyncio.gather(empty_database.upgrade(), other.upgrade())
    finally:
        await other.close()
    assert reached == [head_revision(), head_revision()]


async def test_no_password_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with postgres_database_or_skip() as url:
        # Trust auth (the default test server) ignores a password, which still travels in the URL.
        secret = url.password or "s3cret-pw"
        database = Database.from_url(url.set(password=secret))
        try:
            await database.upgrade()
        finally:
            await database.close()
    assert str(secret) not in caplog.text
    assert "***" in caplog.text


async def test_writers_queue_for_sqlites_lock_instead_of_failing_when_a_write_spans_loop_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callassist.store import db as db_module

    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 50)  # what a starved loop makes of 5 s
    database = Database.from_url(f"sqlite:///{tmp_path / 'queue.db'}")
    insert = (
        'INSERT INTO calendar_events (id, title, start, "end", created_at, updated_at) '
        "VALUES (:id, 'w', '2026-01-01 09:00:00', '2026-01-01 10:00:00', "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow_writer() -> None:
        async with database.session() as session:
            await session.execute(text(insert), {"id": "slow@test"})
            holding.set()
            await release.wait()  # the transaction stays open across loop turns

    async def second_writer() -> None:
        async with database.session() as session:
            await session.execute(text(insert), {"id": "second@test"})

    try:
        await database.upgrade()
        slow = asyncio.create_task(slow_writer())
        await holding.wait()
        second = asyncio.create_task(second_writer())
        await asyncio.wait({second}, timeout=0.3)  # six busy timeouts: SQLite alone would fail it
        assert not second.done()  # queued, not failed
        release.set()
        async with asyncio.timeout(5):
            await asyncio.gather(slow, second)
        async with database.session(read_only=True) as reader:
            assert await reader.scalar(text("SELECT count(*) FROM calendar_events")) == 2
    finally:
        await database.close()


async def test_readers_are_not_blocked_by_an_open_write_transaction(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        await database.upgrade()
        async with database.session() as writer:
            await writer.execute(
                text(
                    'INSERT INTO calendar_events (id, title, start, "end", created_at, updated_at) '
                    "VALUES ('w@test', 'w', '2026-01-01 09:00:00', '2026-01-01 10:00:00', "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            # The writer holds SQLite's write lock; a read-only session still reads the last commit.
            async with asyncio.timeout(1), database.session(read_only=True) as reader:
                count = await reader.scalar(text("SELECT count(*) FROM calendar_events"))
            assert count == 0
        async with database.session(read_only=True) as reader:
            assert await reader.scalar(text("SELECT count(*) FROM calendar_events")) == 1
    finally:
        await database.close()


_KILLED_WRITER = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from callassist.calendar.base import NewEvent
from callassist.calendar.local import LocalCalendar

async def main() -> None:
    calendar = await LocalCalendar.open(sys.argv[1])
    start = datetime(2026, 5, 4, 9, tzinfo=UTC)
    made = await calendar.create(NewEvent("survives", start, start.replace(hour=10)))
    print(made.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint: as if the server died

asyncio.run(main())
"""


async def test_a_killed_process_loses_nothing_it_committed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_WRITER, url, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(child.communicate(), timeout=30)
    assert child.returncode == -signal.SIGKILL
    event_id = stdout.decode().strip()
    assert (tmp_path / "killed.db-wal").exists()  # the commit lives in the WAL, not yet checkpointed

    calendar = await LocalCalendar.open(url)
    try:
        found = await calendar.get(event_id)
    finally:
        await calendar.close()
    assert found is not None and found.title == "survives"


async def test_models_and_migrations_agree(database: Database) -> None:
    """Autogenerate finds nothing to do at head: the migrations create exactly what models.py says."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from callassist.store.models import Base

    async with database.engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == []
