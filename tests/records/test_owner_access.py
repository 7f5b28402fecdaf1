"""What the public learns and how long it may guess, over real HTTP (issue 9, item 12): repeated
bad tokens get 429 with Retry-After, per client as the tunnel reports it (never as the client claims);
the right token is never refused; /healthz tells only this machine how many calls are live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from callassist.dashboard.auth import FAILURE_WINDOW_S, FAILURES_ALLOWED, feed_token
from tests.support.records import ADMIN_TOKEN, mount_api
from tests.support.server import NO_OPENAI, RunningServer, running_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(NO_OPENAI, tmp_path / "data", admin_token=ADMIN_TOKEN) as running:
        mount_api(running)
        yield running


async def status_of(
    http: aiohttp.ClientSession,
    url: str,
    bearer: str | None,
    client: str | None = None,
    extra: dict[str, str] | None = None,
    **params: str,
) -> tuple[int, dict[str, str]]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    if client:
        headers["X-Forwarded-For"] = f"198.51.100.250, {client}"  # the tunnel's entry is the last one
    headers.update(extra or {})
    async with http.get(url, headers=headers, params=params) as response:
        await response.read()
        return response.status, dict(response.headers)


async def test_repeated_bad_tokens_are_answered_429_per_client(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    calls = server.base_url + "/api/calls"
    feed = server.base_url + "/calendar.ics"
    attacker, owner = "203.0.113.66", "192.0.2.10"
    for attempt in range(FAILURES_ALLOWED):
        assert (await status_of(http, calls, f"guess-{attempt}", attacker))[0] == 401
    status, headers = await status_of(http, calls, "guess-again", attacker)
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= FAILURE_WINDOW_S
    # The calendar feed (its token in the URL) shares the count.
    status, headers = await status_of(http, feed, None, attacker, token="guess-feed")
    assert status == 429 and "Retry-After" in headers

    # Another client behind the same tunnel is not held back, and its own failures count apart.
    assert (await status_of(http, calls, ADMIN_TOKEN, owner))[0] == 200
    assert (await status_of(http, calls, "typo", owner))[0] == 401
    assert (await status_of(http, feed, None, owner, token=feed_token(server.settings) or ""))[0] == 200
    for _ in range(FAILURES_ALLOWED - 1):
        assert (await status_of(http, calls, "typo", owner))[0] == 401
    assert (await status_of(http, calls, "typo", owner))[0] == 429


async def test_the_right_token_is_never_refused_by_the_limiter(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    """Wrong tokens from an address (or one that only claims to be it) never lock out the owner who
    shares it: behind `ssh -R` every client is 127.0.0.1, and anyone can name the owner's address."""
    calls = server.base_url + "/api/calls"
    feed = server.base_url + "/calendar.ics"
    owner = "192.0.2.10"
    for attempt in range(FAILURES_ALLOWED + 3):
        await status_of(http, calls, f"guess-{attempt}", owner)
        await status_of(http, calls, f"guess-{attempt}")  # no header at all: 127.0.0.1, as ssh -R
    assert (await status_of(http, calls, "guess", owner))[0] == 429
    assert (await status_of(http, calls, "guess"))[0] == 429
    assert (await status_of(http, calls, ADMIN_TOKEN, owner))[0] == 200
    assert (await status_of(http, calls, ADMIN_TOKEN))[0] == 200
    token = feed_token(server.settings) or ""
    assert (await status_of(http, feed, None, owner, token=token))[0] == 200
    assert (await status_of(http, feed, None, token=token))[0] == 200
    # Still limited afterwards: a success does not reset the count a shared address has built up.
    assert (await status_of(http, calls, "guess", owner))[0] == 429


async def test_headers_the_client_sets_neither_escape_the_limit_nor_lock_out_others(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    """The tunnel passes CF-Connecting-IP, X-Real-IP and Forwarded through as the client sent them
    and appends the client's real address to X-Forwarded-For: only that last entry counts."""
    calls = server.base_url + "/api/calls"
    attacker, owner = "203.0.113.66", "192.0.2.10"
    statuses = []
    for attempt in range(3 * FAILURES_ALLOWED):
        spoofed = {
            "X-Real-IP": f"10.0.0.{attempt}",
            "CF-Connecting-IP": f"10.0.1.{attempt}",
            "Forwarded": f"for=10.0.2.{attempt}",
        }
        statuses.append((await status_of(http, calls, f"guess-{attempt}", attacker, spoofed))[0])
    assert statuses == [401] * FAILURES_ALLOWED + [429] * (2 * FAILURES_ALLOWED)
    # Naming the owner's address in a header the client controls puts nothing on the owner's count.
    assert (await status_of(http, calls, "typo", owner))[0] == 401
    assert (await status_of(http, calls, ADMIN_TOKEN, owner))[0] == 200
    # Nor does putting it first in X-Forwarded-For: the tunnel's entry comes after it.
    for attempt in range(FAILURES_ALLOWED):
        assert (await status_of(http, calls, "guess", f"{owner}, 203.0.113.{attempt}"))[0] == 401
    assert (await status_of(http, calls, "typo", owner))[0] == 401


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
        assert await response.json() == {"status": "ok", "openai": "ok", "live_calls": 0}
    # Through a tunnel or proxy (the socket is loopback, the client is not): status only.
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP", "CF-Connecting-IP"):
        value = "for=203.0.113.9" if header == "Forwarded" else "203.0.113.9"
        async with http.get(url, headers={header: value}) as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}, header
