"""Shared fixtures: a clean environment, the real callassist server, a migrated SQLite database."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callassist.simulator.outbound import Timing
from callassist.simulator.owner import Owner
from callassist.simulator.rest import TwilioRest
from callassist.store.db import Database
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, NO_OPENAI, RunningServer, running_server

# Settings come from the environment and .env; a developer's own values must not leak into tests.
_SETTINGS_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "PUBLIC_BASE_URL",
    "OWNER_NAME",
    "OWNER_PHONE",
    "DATABASE_URL",
    "TWILIO_PHONE_NUMBER",
    "TWILIO_API_BASE_URL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name in _SETTINGS_ENV or name.startswith("CALLASSIST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CALLASSIST_DATA_DIR", str(tmp_path / "data"))
    # A developer's own .env (project root, data dir) must not leak into tests or their subprocesses.
    monkeypatch.setenv("CALLASSIST_ENV_FILE", "none")
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """callassist with no OpenAI behind it (for webhook-only tests)."""
    async with running_server(NO_OPENAI, tmp_path / "data") as running:
        yield running


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database; records/, notify/ and store/ override it with their own."""
    opened = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")
    await opened.upgrade()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def rest() -> AsyncIterator[TwilioRest]:
    """The simulated Twilio REST API for calls (owner legs, redirects, conferences): the owner
    presses 1 by default and talks 0.3 s; no request it got may break Twilio's rules."""
    async with TwilioRest(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, owner=Owner.press_1, timing=Timing(talk_s=0.3)
    ) as stand_in:
        yield stand_in
        assert stand_in.problems == []
