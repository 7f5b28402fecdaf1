"""The exported ICS and the subscribable feed parse with icalendar; the feed needs its own read-only
token (the URL `callassist calendar feed-url` prints), never the admin token, which it can't stand in
for."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import icalendar

from callassist.calendar.base import NewEvent
from callassist.dashboard.auth import feed_token
from tests.support.process import ChildProcess, callassist_command
from tests.support.server import NO_OPENAI, running_server

NY = ZoneInfo("America/New_York")


def soon(hours: int) -> datetime:
    base = datetime.now(NY).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    return base.replace(hour=hours)


async def test_export_is_valid_rfc5545(tmp_path: Path) -> None:
    env = {"CALLASSIST_DATA_DIR": str(tmp_path / "data"), "CALLASSIST_TIMEZONE": "America/New_York"}
    start = soon(10).strftime("%Y-%m-%dT%H:%M")
    add = await ChildProcess(
        callassist_command(
            "calendar", "add", "--title", "Dentist; bring X-rays", "--start", start, "--minutes", "45"
        ),
        env=env,
        cwd=tmp_path,
    ).start()
    assert await add.wait(timeout=30) == 0, add.output
    export = await asyncio.create_subprocess_exec(
        *callassist_command("calendar", "export"),
        env={**os.environ, **env},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
    )
    body, _ = await export.communicate()
    assert export.returncode == 0
    parsed = icalendar.Calendar.from_ical(body)
    assert str(parsed["VERSION"]) == "2.0" and parsed["PRODID"]
    [event] = parsed.walk("VEVENT")
    assert str(event["SUMMARY"]) == "Dentist; bring X-rays"
    assert event.decoded("DTSTART") == soon(10)
    assert event.decoded("DTEND") - event.decoded("DTSTART") == timedelta(minutes=45)


ADMIN_TOKEN = "owner-secret-token-0123456789"  # 24 characters at least


async def feed_url_from_the_cli(server_url: str, data_dir: Path, admin_token: str) -> str:
    """What `callassist calendar feed-url` prints for this server and admin token."""
    env = {
        "CALLASSIST_DATA_DIR": str(data_dir),
        "PUBLIC_BASE_URL": server_url,
        "CALLASSIST_ADMIN_TOKEN": admin_token,
    }
    command = await asyncio.create_subprocess_exec(
        *callassist_command("calendar", "feed-url"),
        env={**os.environ, **env},
        cwd=data_dir.parent,
        stdout=asyncio.subprocess.PIPE,
    )
    printed, _ = await command.communicate()
    assert command.returncode == 0
    return printed.decode().strip()


async def test_the_feed_needs_its_own_token_and_parses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_server(NO_OPENAI, data, admin_token=ADMIN_TOKEN) as server:
        calendar = server.services.calendar
        assert calendar is not None
        await calendar.create(NewEvent("Booked by Alex", soon(14), soon(15), caller_number="+15551230000"))
        url = await feed_url_from_the_cli(server.base_url, data, ADMIN_TOKEN)
        token = feed_token(server.settings)
        assert token is not None and ADMIN_TOKEN not in url
        assert url == f"{server.base_url}/calendar.ics?token={token}"
        async with aiohttp.ClientSession() as http:
            for wrong in (None, "wrong", ADMIN_TOKEN):
                params = {"token": wrong} if wrong else {}
                async with http.get(server.base_url + "/calendar.ics", params=params) as response:
                    assert response.status == 401, wrong
            async with http.get(url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/calendar")
                body = await response.read()
    [event] = icalendar.Calendar.from_ical(body).walk("VEVENT")
    assert str(event["SUMMARY"]) == "Booked by Alex"
    assert event.decoded("DTSTART") == soon(14)


async def test_the_feed_token_opens_the_feed_only_and_the_admin_token_no_url(tmp_path: Path) -> None:
    async with running_server(NO_OPENAI, tmp_path / "data", admin_token=ADMIN_TOKEN) as server:
        token = feed_token(server.settings)
        assert token is not None
        clients = (f"198.51.100.{number}" for number in range(1, 255))

        async def status(path: str, bearer: str | None = None, **params: str) -> int:
            # Each attempt from its own client (as the tunnel reports it): 401s, never the limiter's 429.
            headers = {"X-Forwarded-For": next(clients)}
            if bearer:
                headers["Authorization"] = f"Bearer {bearer}"
            async with http.get(server.base_url + path, headers=headers, params=params) as response:
                return response.status

        async with aiohttp.ClientSession() as http:
            for path in ("/api/calls", "/api/messages", "/api/notices"):
                # The feed's token, as a bearer or in the URL, reads nothing of the API.
                assert await status(path, token) == 401, path
                assert await status(path, token=token) == 401, path
                # Nor does the admin token in a query string: it travels in a header only.
                assert await status(path, token=ADMIN_TOKEN) == 401, path
                assert await status(path, ADMIN_TOKEN) == 200, path
            # The admin token doesn't open the feed in any form: the feed is the feed token's alone.
            assert await status("/calendar.ics", token=ADMIN_TOKEN) == 401
            assert await status("/calendar.ics", ADMIN_TOKEN) == 401
            assert await status("/calendar.ics", ADMIN_TOKEN, token=ADMIN_TOKEN) == 401
            assert await status("/calendar.ics", token=token) == 200


async def test_rotating_the_admin_token_rotates_the_feed_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_server(NO_OPENAI, data, admin_token=ADMIN_TOKEN) as server:
        old_url = await feed_url_from_the_cli(server.base_url, data, ADMIN_TOKEN)
    rotated = ADMIN_TOKEN + "-rotated"
    async with running_server(NO_OPENAI, data, admin_token=rotated) as server:
        new_url = await feed_url_from_the_cli(server.base_url, data, rotated)
        old_token = old_url.rsplit("token=", 1)[1]
        assert new_url.rsplit("token=", 1)[1] != old_token
        async with aiohttp.ClientSession() as http:
            async with http.get(server.base_url + "/calendar.ics", params={"token": old_token}) as response:
                assert response.status == 401
            async with http.get(new_url) as response:
                assert response.status == 200
