"""The owner's record surfaces as the tests drive them: `callassist ...` as a real process against a
data directory, and the JSON API of a running server (mounted, seeded)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI

from callassist.dashboard import api
from tests.records.seed import seed
from tests.support.process import ChildProcess, callassist_command
from tests.support.server import NO_OPENAI, RunningServer, running_server

ADMIN_TOKEN = "owner-secret-token-0123456789"


class Cli:
    """Runs `callassist ...` with CALLASSIST_DATA_DIR at the seeded database."""

    def __init__(self, data_dir: Path, cwd: Path) -> None:
        self.env = {
            "CALLASSIST_DATA_DIR": str(data_dir),
            "CALLASSIST_TIMEZONE": "America/New_York",
            "COLUMNS": "160",  # rich's width off a terminal: wide enough that no line under test wraps
        }
        self.cwd = cwd

    async def run(self, *args: str) -> tuple[int, str]:
        child = await ChildProcess(callassist_command(*args), env=self.env, cwd=self.cwd).start()
        try:
            code = await child.wait(timeout=30)
        finally:
            await child.stop()
        return code, child.output

    async def json(self, *args: str) -> Any:
        code, output = await self.run(*args, "--json")
        assert code == 0, output
        return json.loads(output)


def mount_api(running: RunningServer) -> None:
    # Until app.py includes the router itself; then this does nothing.
    app = running.server.config.app
    assert isinstance(app, FastAPI)
    if not any(getattr(route, "path", None) == "/api/calls" for route in app.routes):
        app.include_router(api.router)


@contextlib.asynccontextmanager
async def seeded_api_server(data_dir: Path, **settings: Any) -> AsyncIterator[RunningServer]:
    """callassist (no OpenAI behind it) serving the JSON API over the seeded records."""
    async with running_server(NO_OPENAI, data_dir, **settings) as running:
        mount_api(running)
        await seed(running.services.database)
        yield running


async def get_json(
    http: aiohttp.ClientSession, url: str, token: str | None = ADMIN_TOKEN, **params: str
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers, params=params) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()
