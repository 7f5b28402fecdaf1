"""A throwaway PostgreSQL database on the machine's server, created for one test and dropped after.

The server is found at CALLASSIST_TEST_POSTGRES_URL (default: postgres on 127.0.0.1:5432, trust
auth). With no server, PostgreSQL tests are skipped, unless CI is set or
CALLASSIST_REQUIRE_POSTGRES=1: then a missing server is a failure, so CI can't go green by skipping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from callassist.store.db import async_database_url, mask_password

POSTGRES_URL_ENV = "CALLASSIST_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "CALLASSIST_REQUIRE_POSTGRES"
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "callassist_test_"
CONNECT_TIMEOUT_SECONDS = 5.0

# Read once at import: the autouse `clean_environment` fixture strips CALLASSIST_* before each test.
_ADMIN_URL = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_ADMIN_URL
_REQUIRED = bool(os.environ.get("CI")) or os.environ.get(REQUIRE_POSTGRES_ENV) == "1"

# Once a server has been found missing, later tests skip at once instead of timing out again.
_unreachable: dict[str, str] = {}


class PostgresUnavailable(RuntimeError):
    """The test PostgreSQL server could not be reached or refused us."""


def admin_url() -> URL:
    """Where throwaway databases are created from (a database we may CREATE DATABASE in)."""
    return async_database_url(_ADMIN_URL)


def postgres_required() -> bool:
    return _REQUIRED


def admin_engine(url: URL) -> AsyncEngine:
    # CREATE/DROP DATABASE refuse to run inside a transaction block.
    return create_async_engine(
        url,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
    )


@asynccontextmanager
async def throwaway_database(admin: URL | str | None = None) -> AsyncIterator[URL]:
    """Create an empty database `callassist_test_<hex>`, yield its async URL, then drop it.

    Raises PostgresUnavailable when the server can't be reached. The drop uses WITH (FORCE)
    (PostgreSQL 13+), so connections a failed test left open don't keep the database alive.
    """
    server = async_database_url(admin) if admin is not None else admin_url()
    name = DATABASE_PREFIX + secrets.token_hex(6)
    engine = admin_engine(server)
    try:
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except (OSError, TimeoutError, DBAPIError) as exc:
            reason = str(exc.orig) if isinstance(exc, DBAPIError) else f"{type(exc).__name__}: {exc}"
            raise PostgresUnavailable(
                f"PostgreSQL at {mask_password(server)} unavailable ({reason.strip()}); "
                f"set {POSTGRES_URL_ENV} to a server where we may CREATE DATABASE"
            ) from exc
        try:
            yield server.set(database=name)
        finally:
            async with engine.connect() as connection:
                await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await engine.dispose()


@asynccontextmanager
async def postgres_database_or_skip(admin: URL | str | None = None) -> AsyncIterator[URL]:
    """`throwaway_database` for tests: skip when there is no server, fail if one is required."""
    server = async_database_url(admin) if admin is not None else admin_url()
    key = server.render_as_string(hide_password=False)
    if key not in _unreachable:
        stack = AsyncExitStack()
        try:
            url = await stack.enter_async_context(throwaway_database(server))
        except PostgresUnavailable as exc:
            _unreachable[key] = str(exc)
        else:
            async with stack:
                yield url
            return
    if _REQUIRED:
        pytest.fail(f"{_unreachable[key]} (required: CI or {REQUIRE_POSTGRES_ENV}=1 is set)", pytrace=False)
    pytest.skip(_unreachable[key])
