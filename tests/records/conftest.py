"""Record fixtures: a migrated, seeded database on SQLite and on real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from callassist.store.db import Database
from tests.records.seed import seed
from tests.support.postgres import postgres_database_or_skip
from tests.support.records import ADMIN_TOKEN, Cli, seeded_api_server
from tests.support.server import RunningServer


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


# The CLI and the API over the seeded records (test_cli, test_api, test_notices) -------------------


@pytest.fixture
async def cli_database(tmp_path: Path) -> AsyncIterator[Database]:
    """The file the CLI opens (CALLASSIST_DATA_DIR/callassist.db), migrated and seeded."""
    opened = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'callassist.db'}")
    try:
        await opened.upgrade()
        await seed(opened)
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def cli(cli_database: Database, tmp_path: Path) -> Cli:
    return Cli(tmp_path / "data", tmp_path)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The API over the seeded records, behind the admin token (a module may define its own)."""
    async with seeded_api_server(tmp_path / "data", admin_token=ADMIN_TOKEN) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
