"""Store fixtures: every test that asks for `database` runs on SQLite and on real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callassist.calendar.local import LocalCalendar
from callassist.store.db import Database
from tests.support.postgres import postgres_database_or_skip


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A Database with nothing in it yet (not migrated), on each backend in turn."""
    if request.param == "sqlite":
        database = Database.from_url(f"sqlite:///{tmp_path / 'store' / 'callassist.db'}")
        try:
            yield database
        finally:
            await database.close()
        return
    async with postgres_database_or_skip() as url:
        database = Database.from_url(url)
        try:
            yield database
        finally:
            await database.close()


@pytest.fixture
async def database(empty_database: Database) -> Database:
    """A Database migrated to head."""
    await empty_database.upgrade()
    return empty_database


@pytest.fixture
def calendar(database: Database) -> LocalCalendar:
    return LocalCalendar(database)
