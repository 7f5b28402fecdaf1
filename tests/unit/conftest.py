"""Unit fixtures: a migrated SQLite database for the tests that record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callassist.store.db import Database


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    opened = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")
    await opened.upgrade()
    try:
        yield opened
    finally:
        await opened.close()
