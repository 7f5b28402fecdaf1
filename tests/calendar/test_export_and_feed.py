"""The exported ICS and the subscribable feed parse with icalendar; the feed needs the owner's token."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import icalendar

from callassist.calendar.base import NewEvent
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


async def test_feed_needs_the_admin_token_and_parses(tmp_path: Path) -> None:
    async with running_server(NO_OPENAI, tmp_path / "data", admin_token=ADMIN_TOKEN) as server:
        calendar = server.services.calendar
        assert calendar is not None
        await calendar.create(NewEvent("Booked by Alex", soon(14), soon(15), caller_number="+15551230000"))
        async with aiohttp.ClientSession() as http:
            for token in (None, "wrong"):
                params = {"token": token} if token else {}
                async with http.get(server.base_url + "/calendar.ics", params=params) as response:
                    assert response.status == 403
            async with http.get(server.base_url + "/calendar.ics", params={"token": ADMIN_TOKEN}) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/calendar")
                body = await response.read()
    [event] = icalendar.Calendar.from_ical(body).walk("VEVENT")
    assert str(event["SUMMARY"]) == "Booked by Alex"
    assert event.decoded("DTSTART") == soon(14)
