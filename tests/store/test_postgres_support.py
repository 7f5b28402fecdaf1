"""tests.support.postgres: a missing server skips, or fails when PostgreSQL is required."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.support import postgres

NOBODY_LISTENS = "postgresql://postgres@127.0.0.1:9/postgres"  # the discard port


async def test_unreachable_server_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "_REQUIRED", False)  # this test runs under CI=1 too
    with pytest.raises(pytest.skip.Exception, match="unavailable"):
        async with postgres.postgres_database_or_skip(NOBODY_LISTENS):
            pytest.fail("no database can be made on a closed port")


async def test_unreachable_server_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "_REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="required"):
        async with postgres.postgres_database_or_skip(NOBODY_LISTENS):
            pass


async def test_throwaway_database_is_dropped_afterwards() -> None:
    async with postgres.postgres_database_or_skip() as url:
        name = url.database
        assert name is not None and name.startswith(postgres.DATABASE_PREFIX)
    engine = postgres.admin_engine(postgres.admin_url())
    try:
        async with engine.connect() as connection:
            left = await connection.execute(
                text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": name}
            )
            assert left.scalar_one() == 0
    finally:
        await engine.dispose()
