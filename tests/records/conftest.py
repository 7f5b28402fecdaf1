"""Record fixtures: a migrated, seeded database on SQLite and on real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callassist.store.db import Database
from tests.records.seed import seed
from tests.support.postgres import postgres_database_or_skip


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        opened = Database.from_url(f"sqlite:///{tmp_path / 'store' / 'callassist.db'}")
        try:
            await opened.upgrade()
            yield opened
        finally:
            await opened.close()
        return
    async with postgres_database_or_skip() as url:
        opened = Database.from_url(url)
        try:
            await opened.upgrade()
            yield opened
        finally:
            await opened.close()


@pytest.fixture
async def seeded(database: Database) -> Database:
    await seed(database)
    return database
