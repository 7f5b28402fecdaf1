"""Fixtures for calendar tests: a real Radicale, our backend on it, and an independent raw client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from callassist.calendar.caldav import CalDAVCalendar
from tests.support.caldav_client import RawCalDAV
from tests.support.radicale import RadicaleServer, running_radicale

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
async def radicale(tmp_path: Path) -> AsyncIterator[RadicaleServer]:
    async with running_radicale(tmp_path / "radicale", more_calendars=["Personal"]) as server:
        yield server


@pytest.fixture
async def calendar(radicale: RadicaleServer) -> AsyncIterator[CalDAVCalendar]:
    backend = CalDAVCalendar(
        radicale.url, radicale.username, radicale.password, "Work", timezone=NEW_YORK, timeout=5.0
    )
    async with backend:
        yield backend


@pytest.fixture
async def raw(radicale: RadicaleServer) -> AsyncIterator[RawCalDAV]:
    headers = {"Authorization": aiohttp.encode_basic_auth(radicale.username, radicale.password)}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield RawCalDAV(session, radicale.calendar_url)
