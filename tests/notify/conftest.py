"""Notify fixtures: a migrated database, a clock the test moves, Twilio and SMTP stand-ins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callassist.store.db import Database
from tests.notify.scenario import ManualClock
from tests.support.postgres import postgres_database_or_skip
from tests.support.smtp import SmtpTestServer
from tests.support.twilio_rest import TwilioRestStandIn


@pytest.fixture(autouse=True)
def no_notify_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings these tests build must not pick up a developer's Twilio number or API base URL."""
    for name in ("TWILIO_PHONE_NUMBER", "TWILIO_API_BASE_URL", "TWILIO_EDGE", "TWILIO_REGION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database."""
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    await database.upgrade()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a migrated database, on each backend in turn (open it as many times as needed)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
        database = Database.from_url(url)
        await database.upgrade()
        await database.close()
        yield url
        return
    async with postgres_database_or_skip() as pg_url:
        database = Database.from_url(pg_url)
        await database.upgrade()
        await database.close()
        yield pg_url.render_as_string(hide_password=False)


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioRestStandIn]:
    async with TwilioRestStandIn() as stand_in:
        yield stand_in


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpTestServer]:
    async with SmtpTestServer() as server:
        yield server
