"""What the public learns and how long it may guess, over real HTTP (issue 9, item 12): repeated
bad tokens get 429 with Retry-After, per client; /healthz tells only this machine how many calls
are live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from callassist.dashboard.auth import FAILURE_WINDOW_S, FAILURES_ALLOWED
from tests.records.test_api import ADMIN_TOKEN, mount_api
from tests.support.server import NO_OPENAI, RunningServer, running_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(NO_OPENAI, tmp_path / "data", admin_token=ADMIN_TOKEN) as running:
        mount_api(running)
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def status_of(
    http: aiohttp.ClientSession, url: str, bearer: str | None, client: str | None = None, **params: str
) -> tuple[int, dict[str, str]]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    if client:
        headers["X-Forwarded-For"] = f"198.51.100.250, {client}"  # the tunnel's entry is the last one
    async with http.get(url, headers=headers, params=params) as response:
        await response.read()
        return response.status, dict(response.headers)


async def test_repeated_bad_tokens_are_answered_429_per_client(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    calls = server.base_url + "/api/calls"
    attacker, owner = "203.0.113.66", "192.0.2.10"
    for attempt in range(FAILURES_ALLOWED):
        assert (await status_of(http, calls, f"guess-{attempt}", attacker))[0] == 401
    status, headers = await status_of(http, calls, "guess-again", attacker)
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= FAILURE_WINDOW_S
    # While it waits, even the right token is not looked at: guessing gains nothing.
    assert (await status_of(http, calls, ADMIN_TOKEN, attacker))[0] == 429
    # The calendar feed (token in the URL) shares the count.
    feed = server.base_url + "/calendar.ics"
    status, headers = await status_of(http, feed, None, attacker, token=ADMIN_TOKEN)
    assert status == 429 and "Retry-After" in headers

    # Another client behind the same tunnel is not held back, and its own failures count apart.
    assert (await status_of(http, calls, ADMIN_TOKEN, owner))[0] == 200
    assert (await status_of(http, calls, "typo", owner))[0] == 401
    assert (await status_of(http, feed, None, owner, token=ADMIN_TOKEN))[0] == 200
    # A success clears a client's count: it may mistype again.
    for _ in range(FAILURES_ALLOWED):
        assert (await status_of(http, calls, "typo", owner))[0] == 401
    assert (await status_of(http, calls, "typo", owner))[0] == 429


async def test_the_limiter_forgets_the_oldest_clients_first(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    failures = server.services.owner_failures
    failures.max_clients = 20
    calls = server.base_url + "/api/calls"
    for number in range(60):  # three times as many clients as it keeps
        assert (await status_of(http, calls, "guess", f"203.0.113.{number}"))[0] == 401
    assert len(failures) == 20


async def test_healthz_tells_only_this_machine_how_many_calls_are_live(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    url = server.base_url + "/healthz"
    async with http.get(url) as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok", "live_calls": 0}
    # Through a tunnel or proxy (the socket is loopback, the client is not): status only.
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP", "CF-Connecting-IP"):
        value = "for=203.0.113.9" if header == "Forwarded" else "203.0.113.9"
        async with http.get(url, headers={header: value}) as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}, header
