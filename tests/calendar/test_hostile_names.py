"""A caller's name with line breaks and iCalendar's special characters can't break or inject into the
owner's calendar: the feed, the export (also under `python -O`) and CalDAV keep one event, the name
escaped on the wire and intact when read back."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import icalendar
import pytest

from callassist.calendar.base import CalendarEvent, NewEvent
from callassist.calendar.caldav import CalDAVCalendar
from callassist.calendar.ical import calendar_document, vevent_to_event
from callassist.calendar.local import LocalCalendar
from callassist.dashboard.auth import feed_token
from callassist.tools import all_tools
from callassist.tools.registry import ToolContext
from tests.support.caldav_client import RawCalDAV
from tests.support.process import callassist_command
from tests.support.server import NO_OPENAI, running_server

NY = ZoneInfo("America/New_York")
CALLER = "+15551230000"
# A name that, written verbatim, ends its content line and adds an event of its own.
INJECTED = "Alex\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:evil@example.com\r\nSUMMARY:Free money"
# As it reads back: TEXT knows one line break, "\n" (RFC 5545 3.3.11), so CRLF comes back as LF.
READ_BACK = INJECTED.replace("\r\n", "\n")
# Everything RFC 5545 makes TEXT escape, plus a line separator and a bidi override.
SPECIAL = 'Kim, Alex; "Dr." \\ O\'Brien\u2028\u202eX'
ADMIN_TOKEN = "owner-secret-" + "x" * 24


def soon(hour: int) -> datetime:
    base = datetime.now(NY).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    return base.replace(hour=hour)


def content_lines(body: bytes) -> list[bytes]:
    """The document's content lines, unfolded (RFC 5545 3.1; Radicale answers with bare LFs)."""
    return body.replace(b"\r\n", b"\n").replace(b"\n ", b"").replace(b"\n\t", b"").split(b"\n")


def assert_not_injected(body: bytes) -> None:
    lines = content_lines(body)
    assert not any(line.startswith((b"UID:evil", b"SUMMARY:Free")) for line in lines)
    assert lines.count(b"BEGIN:VEVENT") == lines.count(b"END:VEVENT") == 1


def events_of(body: bytes) -> list[icalendar.cal.Component]:
    return list(icalendar.Calendar.from_ical(body).walk("VEVENT"))


def test_a_name_with_line_breaks_is_escaped_in_the_document_not_injected() -> None:
    booked = CalendarEvent(
        id="booked@callassist",
        title="Call\nwith Alex",
        start=soon(10),
        end=soon(11),
        caller_number=CALLER,
        caller_name=INJECTED,
        notes="Notes\nEND:VCALENDAR",
    )
    body = calendar_document([booked], name="Dana\nBEGIN:VEVENT")
    assert_not_injected(body)
    [parsed] = events_of(body)
    assert str(parsed["UID"]) == "booked@callassist"
    back = vevent_to_event(parsed, NY)
    assert back is not None
    assert (back.caller_name, back.title, back.notes) == (
        READ_BACK,
        "Call\nwith Alex",
        "Notes\nEND:VCALENDAR",
    )


async def test_the_feed_stays_valid_with_hostile_names_booked_by_tool_and_directly(tmp_path: Path) -> None:
    async with running_server(
        NO_OPENAI, tmp_path / "data", admin_token=ADMIN_TOKEN, working_hours="Mon-Sun 09:00-17:00"
    ) as server:
        services = server.services
        assert services.calendar is not None and services.tool_services is not None
        # Through the tool, as a call books it: the name is normalised to one line, then escaped.
        ctx = ToolContext(
            call_sid=None, caller_number=CALLER, is_owner=False, services=services.tool_services
        )
        arguments = {
            "title": "Meeting with Alex",
            "start": soon(14).strftime("%Y-%m-%dT%H:%M"),
            "caller_name": SPECIAL,
            "notes": "About the contract;\nEND:VEVENT",
        }
        outcome = await all_tools().call("create_event", "call_1", json.dumps(arguments), ctx)
        assert outcome.ok, outcome.output
        # Straight into the calendar, as any other writer might: still escaped, never injected.
        direct = await services.calendar.create(
            NewEvent("Booked by Alex", soon(10), soon(11), CALLER, INJECTED)
        )
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                server.base_url + "/calendar.ics", params={"token": feed_token(server.settings) or ""}
            ) as response,
        ):
            assert response.status == 200, await response.text()
            body = await response.read()
    events = {str(event["UID"]): event for event in events_of(body)}
    assert set(events) == {outcome.output["event"]["id"], direct.id}
    by_tool = vevent_to_event(events[outcome.output["event"]["id"]], NY)
    assert by_tool is not None
    assert by_tool.caller_name == 'Kim, Alex; "Dr." \\ O\'Brien X'  # one line, the rest as said
    assert by_tool.notes == "About the contract; END:VEVENT"
    by_hand = vevent_to_event(events[direct.id], NY)
    assert by_hand is not None and by_hand.caller_name == READ_BACK
    assert str(events[direct.id]["SUMMARY"]) == "Booked by Alex"


@pytest.mark.parametrize("optimised", [False, True], ids=["python", "python -O"])
async def test_the_export_keeps_one_event_also_when_asserts_are_off(tmp_path: Path, optimised: bool) -> None:
    data = tmp_path / "data"
    calendar = await LocalCalendar.open(f"sqlite+aiosqlite:///{data / 'callassist.db'}")
    try:
        created = await calendar.create(NewEvent("Booked by Alex", soon(10), soon(11), CALLER, INJECTED))
    finally:
        await calendar.close()
    command = callassist_command("calendar", "export")
    if optimised:  # icalendar's only guard against a raw line break is an assert
        command = [sys.executable, "-O", "-m", "callassist.cli", "calendar", "export"]
    env = {**os.environ, "CALLASSIST_DATA_DIR": str(data), "CALLASSIST_TIMEZONE": "America/New_York"}
    export = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    body, errors = await asyncio.wait_for(export.communicate(), 60)
    assert export.returncode == 0, errors.decode()
    assert_not_injected(body)
    [event] = events_of(body)
    assert str(event["UID"]) == created.id
    back = vevent_to_event(event, NY)
    assert back is not None and back.caller_name == READ_BACK


async def test_caldav_stores_a_hostile_name_intact_in_one_event(
    calendar: CalDAVCalendar, raw: RawCalDAV
) -> None:
    start = soon(10)
    created = await calendar.create(NewEvent("Haircut", start, start + timedelta(hours=1), CALLER, INJECTED))
    assert created.caller_name == READ_BACK
    text = (await raw.raw_text(created.id)).encode()
    assert_not_injected(text)
    [stored] = events_of(text)
    assert str(stored["UID"]) == created.id
    back = vevent_to_event(stored, NY)
    assert back is not None and back.caller_name == READ_BACK
    assert str(stored["DESCRIPTION"]) == f"Booked by phone by {READ_BACK} {CALLER}."
    # Our own reader agrees, and a move keeps the name and the booking line as they were.
    fetched = await calendar.get(created.id)
    assert fetched is not None and fetched.caller_name == READ_BACK and fetched.notes is None
    moved = await calendar.update(
        created.id, start=start + timedelta(hours=1), end=start + timedelta(hours=2), notes="Bring\nphotos"
    )
    assert moved.caller_name == READ_BACK and moved.notes == "Bring\nphotos"
    after = (await raw.raw_text(created.id)).encode()
    assert_not_injected(after)
    [stored_after] = events_of(after)
    assert str(stored_after["DESCRIPTION"]) == f"Bring\nphotos\n\nBooked by phone by {READ_BACK} {CALLER}."
