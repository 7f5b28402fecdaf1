"""CalDAVCalendar against a real Radicale, checked through an independent raw-HTTP CalDAV client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import icalendar
import pytest

from callassist.calendar.base import Calendar, CalendarError, EventNotFound, NewEvent
from callassist.calendar.caldav import CalDAVCalendar
from callassist.calendar.ical import calendar_document
from tests.calendar.conftest import NEW_YORK, RawCalDAV
from tests.support.process import free_port
from tests.support.radicale import RadicaleServer, running_radicale

MARCH_3 = datetime(2025, 3, 3, tzinfo=UTC)


def booking(
    hour: int, *, number: str = "+15551234567", name: str = "Ann Lee", notes: str | None = None
) -> NewEvent:
    start = MARCH_3 + timedelta(hours=hour)
    return NewEvent(
        title="Haircut",
        start=start,
        end=start + timedelta(minutes=45),
        caller_number=number,
        caller_name=name,
        notes=notes,
    )


def vcalendar(*vevents: str) -> str:
    body = "".join(
        f"BEGIN:VEVENT\nDTSTAMP:20250101T000000Z\n{vevent.strip()}\nEND:VEVENT\n" for vevent in vevents
    )
    return f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//someone else//raw test client//EN\n{body}END:VCALENDAR\n"


async def test_backend_satisfies_the_calendar_protocol(calendar: CalDAVCalendar) -> None:
    assert isinstance(calendar, Calendar)
    assert calendar.name == "caldav"
    assert calendar.display_name == "Work"


async def test_created_event_is_on_the_server_in_utc_with_caller_properties(
    calendar: CalDAVCalendar, raw: RawCalDAV
) -> None:
    # 10:00 in New York, given in the owner's zone: the server must get 15:00 UTC.
    start = datetime(2025, 3, 3, 10, tzinfo=NEW_YORK)
    created = await calendar.create(
        NewEvent(
            "Haircut", start, start + timedelta(hours=1), "+15551234567", "Ann Lee", "Short on the sides"
        )
    )

    assert created.id.endswith("@callassist")
    assert (created.start, created.end) == (start, start + timedelta(hours=1))
    assert created.notes == "Short on the sides"
    assert created.created_at is not None

    text = await raw.raw_text(created.id)
    assert "DTSTART:20250303T150000Z" in text
    assert "DTEND:20250303T160000Z" in text
    stored = await raw.event(created.id)
    assert stored is not None
    assert str(stored["SUMMARY"]) == "Haircut"
    assert str(stored["X-CALLASSIST-CALLER-NUMBER"]) == "+15551234567"
    assert str(stored["X-CALLASSIST-CALLER-NAME"]) == "Ann Lee"
    assert str(stored["DESCRIPTION"]) == "Short on the sides\n\nBooked by phone by Ann Lee +15551234567."
    assert int(stored["SEQUENCE"]) == 0
    for stamp in ("CREATED", "DTSTAMP", "LAST-MODIFIED"):
        assert stored.decoded(stamp).tzinfo is not None, stamp

    seen = await calendar.events_between(start - timedelta(hours=2), start + timedelta(hours=2))
    assert seen == [created]


async def test_get_update_and_cancel(calendar: CalDAVCalendar, raw: RawCalDAV) -> None:
    created = await calendar.create(booking(15, notes="first visit"))
    assert await calendar.get(created.id) == created
    assert await calendar.get("nobody@nowhere") is None

    # The owner adds a location in their own calendar app: a move must keep it.
    url, text = next(iter((await raw.objects()).items()))
    await raw.put(url.rsplit("/", 1)[-1], text.replace("SEQUENCE:0", "SEQUENCE:0\nLOCATION:Salon"))

    new_start = MARCH_3 + timedelta(hours=18)
    moved = await calendar.update(
        created.id, start=new_start, end=new_start + timedelta(hours=1), title="Cut & dye"
    )
    assert (moved.start, moved.end, moved.title) == (new_start, new_start + timedelta(hours=1), "Cut & dye")
    assert moved.notes == "first visit"
    assert (moved.caller_number, moved.caller_name) == (created.caller_number, created.caller_name)

    stored = await raw.event(created.id)
    assert stored is not None
    assert int(stored["SEQUENCE"]) == 1
    assert str(stored["LOCATION"]) == "Salon"
    assert stored.decoded("DTSTART") == new_start
    assert stored.decoded("LAST-MODIFIED") >= stored.decoded("CREATED")
    assert await calendar.get(created.id) == moved

    renoted = await calendar.update(
        created.id, start=new_start, end=new_start + timedelta(hours=1), notes="allergic"
    )
    assert renoted.notes == "allergic"
    stored = await raw.event(created.id)
    assert stored is not None and int(stored["SEQUENCE"]) == 2
    assert str(stored["DESCRIPTION"]) == "allergic\n\nBooked by phone by Ann Lee +15551234567."

    await calendar.cancel(created.id)
    assert await raw.event(created.id) is None
    assert await calendar.get(created.id) is None
    assert await calendar.events_between(MARCH_3, MARCH_3 + timedelta(days=1)) == []
    with pytest.raises(EventNotFound):
        await calendar.cancel(created.id)
    with pytest.raises(EventNotFound):
        await calendar.update(created.id, start=new_start, end=new_start + timedelta(hours=1))


async def test_a_fresh_backend_finds_events_it_did_not_create(
    radicale: RadicaleServer, raw: RawCalDAV
) -> None:
    # Another app names its resources as it likes; the UID is all a caller's booking id says.
    await raw.put(
        "some-app-name.ics", vcalendar("UID:dentist-1\nDTSTART:20250303T140000Z\nDTEND:20250303T150000Z")
    )
    async with CalDAVCalendar(radicale.url, radicale.username, radicale.password, "Work") as fresh:
        found = await fresh.get("dentist-1")
        assert found is not None and found.start == datetime(2025, 3, 3, 14, tzinfo=UTC)
        moved = await fresh.update("dentist-1", start=MARCH_3, end=MARCH_3 + timedelta(hours=1))
        assert moved.start == MARCH_3
        await fresh.cancel("dentist-1")
    assert await raw.objects() == {}


async def test_events_by_caller(calendar: CalDAVCalendar) -> None:
    mine = await calendar.create(booking(14))
    await calendar.create(booking(16, number="+15559990000", name="Bob"))
    also_mine = await calendar.create(booking(18))

    found = await calendar.events_by_caller("+15551234567", MARCH_3, MARCH_3 + timedelta(days=1))
    assert [event.id for event in found] == [mine.id, also_mine.id]
    # A number written with spaces is the same number.
    assert len(await calendar.events_by_caller("+1 555 123 4567", MARCH_3, MARCH_3 + timedelta(days=1))) == 2
    assert (
        await calendar.events_by_caller(
            "+15551234567", MARCH_3 + timedelta(days=1), MARCH_3 + timedelta(days=2)
        )
        == []
    )


async def test_weekly_meeting_is_busy_on_every_occurrence(calendar: CalDAVCalendar, raw: RawCalDAV) -> None:
    await raw.put(
        "standup.ics",
        vcalendar(
            """
UID:standup-1
SUMMARY:Team meeting
DTSTART;TZID=America/New_York:20250106T100000
DTEND;TZID=America/New_York:20250106T110000
RRULE:FREQ=WEEKLY;BYDAY=MO
EXDATE;TZID=America/New_York:20250120T100000
""",
            # One occurrence moved to the afternoon, one cancelled on its own.
            """
UID:standup-1
RECURRENCE-ID;TZID=America/New_York:20250127T100000
SUMMARY:Team meeting (moved)
DTSTART;TZID=America/New_York:20250127T150000
DTEND;TZID=America/New_York:20250127T160000
""",
            """
UID:standup-1
RECURRENCE-ID;TZID=America/New_York:20250203T100000
STATUS:CANCELLED
DTSTART;TZID=America/New_York:20250203T100000
DTEND;TZID=America/New_York:20250203T110000
""",
        ),
    )
    events = await calendar.events_between(
        datetime(2025, 1, 8, tzinfo=NEW_YORK), datetime(2025, 3, 11, 10, 30, tzinfo=NEW_YORK)
    )
    starts = [event.start.astimezone(NEW_YORK).replace(tzinfo=None) for event in events]
    assert starts == [
        datetime(2025, 1, 13, 10),
        datetime(2025, 1, 27, 15),
        datetime(2025, 2, 10, 10),
        datetime(2025, 2, 17, 10),
        datetime(2025, 2, 24, 10),
        datetime(2025, 3, 3, 10),
        datetime(2025, 3, 10, 10),  # after the DST change: still 10:00 local, now 14:00 UTC
    ]
    assert events[-1].start == datetime(2025, 3, 10, 14, tzinfo=UTC)
    assert {event.id for event in events} == {"standup-1"}
    assert events[1].title == "Team meeting (moved)"


async def test_all_day_event_blocks_the_whole_local_day(calendar: CalDAVCalendar, raw: RawCalDAV) -> None:
    await raw.put(
        "holiday.ics",
        vcalendar("UID:day-off\nSUMMARY:Day off\nDTSTART;VALUE=DATE:20250110\nDTEND;VALUE=DATE:20250111"),
    )
    # 23:00-23:30 in New York is already January 11 in UTC: the day off must still be there.
    late = await calendar.events_between(
        datetime(2025, 1, 10, 23, tzinfo=NEW_YORK), datetime(2025, 1, 10, 23, 30, tzinfo=NEW_YORK)
    )
    assert len(late) == 1
    assert late[0].all_day
    assert (late[0].start, late[0].end) == (
        datetime(2025, 1, 10, tzinfo=NEW_YORK),
        datetime(2025, 1, 11, tzinfo=NEW_YORK),
    )
    # 00:30 on January 10 in UTC is still January 9 in New York: free.
    assert (
        await calendar.events_between(
            datetime(2025, 1, 10, 0, tzinfo=UTC), datetime(2025, 1, 10, 1, tzinfo=UTC)
        )
        == []
    )
    assert (
        await calendar.events_between(
            datetime(2025, 1, 11, tzinfo=NEW_YORK), datetime(2025, 1, 12, tzinfo=NEW_YORK)
        )
        == []
    )


async def test_floating_times_are_the_owners_local_times(calendar: CalDAVCalendar, raw: RawCalDAV) -> None:
    await raw.put("floating.ics", vcalendar("UID:floating-1\nDTSTART:20250110T090000\nDTEND:20250110T093000"))
    [event] = await calendar.events_between(
        datetime(2025, 1, 10, tzinfo=NEW_YORK), datetime(2025, 1, 11, tzinfo=NEW_YORK)
    )
    assert event.start == datetime(2025, 1, 10, 14, tzinfo=UTC)


async def test_free_and_cancelled_events_do_not_take_time(calendar: CalDAVCalendar, raw: RawCalDAV) -> None:
    await raw.put(
        "free.ics",
        vcalendar("UID:free-1\nTRANSP:TRANSPARENT\nDTSTART:20250303T140000Z\nDTEND:20250303T150000Z"),
    )
    await raw.put(
        "gone.ics",
        vcalendar("UID:gone-1\nSTATUS:CANCELLED\nDTSTART:20250303T140000Z\nDTEND:20250303T150000Z"),
    )
    await raw.put(
        "busy.ics", vcalendar("UID:busy-1\nTRANSP:OPAQUE\nDTSTART:20250303T160000Z\nDTEND:20250303T170000Z")
    )
    events = await calendar.events_between(MARCH_3, MARCH_3 + timedelta(days=1))
    assert [event.id for event in events] == ["busy-1"]
    assert await calendar.get("gone-1") is None
    with pytest.raises(EventNotFound):
        await calendar.cancel("gone-1")


async def test_overlap_is_half_open(calendar: CalDAVCalendar) -> None:
    created = await calendar.create(booking(15))  # 15:00-15:45 UTC
    assert await calendar.events_between(MARCH_3, created.start) == []
    assert await calendar.events_between(created.end, created.end + timedelta(hours=1)) == []
    assert await calendar.events_between(created.end - timedelta(minutes=1), created.end) == [created]


async def test_wrong_password_is_a_calendar_error_without_the_password(radicale: RadicaleServer) -> None:
    wrong = "Tr0ub4dor&3-not-it"
    backend = CalDAVCalendar(radicale.url, radicale.username, wrong, "Work", timeout=5.0)
    with pytest.raises(CalendarError) as caught:
        await backend.connect()
    message = str(caught.value)
    assert "401" in message and "username or password" in message
    assert wrong not in message and radicale.password not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    await backend.close()


async def test_server_going_down_is_a_calendar_error(
    calendar: CalDAVCalendar, radicale: RadicaleServer
) -> None:
    await radicale.process.stop()
    started = time.monotonic()
    with pytest.raises(CalendarError, match="could not reach the calendar server"):
        await calendar.events_between(MARCH_3, MARCH_3 + timedelta(days=1))
    assert time.monotonic() - started < calendar.timeout


async def test_nothing_listening_is_a_calendar_error() -> None:
    backend = CalDAVCalendar(
        f"http://127.0.0.1:{free_port()}/", "owner", "secret-password", None, timeout=2.0
    )
    with pytest.raises(CalendarError, match="connection refused") as caught:
        await backend.create(booking(15))
    assert "secret-password" not in str(caught.value)
    await backend.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections and never answers: the server that hangs."""
    connections: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/"
        for writer in connections:
            writer.close()


async def test_a_hanging_server_times_out_as_a_calendar_error(silent_server: str) -> None:
    backend = CalDAVCalendar(silent_server, "owner", "secret-password", "Work", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(CalendarError, match=r"did not answer within 0.5 s"):
        await backend.connect()
    # One deadline per request; the library may retry once to probe the auth scheme.
    assert time.monotonic() - started < 2.0
    await backend.close()


async def test_unknown_calendar_name_lists_the_calendars_that_exist(radicale: RadicaleServer) -> None:
    backend = CalDAVCalendar(radicale.url, radicale.username, radicale.password, "Holidays")
    with pytest.raises(CalendarError) as caught:
        await backend.events_between(MARCH_3, MARCH_3 + timedelta(days=1))
    message = str(caught.value)
    assert "'Holidays'" in message and "'Work'" in message and "'Personal'" in message
    await backend.close()


async def test_without_a_name_the_first_calendar_for_events_is_used(tmp_path: Path) -> None:
    async with running_radicale(
        tmp_path / "radicale", calendar_name="Work", task_lists=["Chores", "Groceries"]
    ) as server:
        async with CalDAVCalendar(server.url, server.username, server.password, None) as backend:
            assert backend.display_name == "Work"
            assert backend.calendar_url == server.calendar_url
        # Display names match regardless of case when there is no exact match.
        async with CalDAVCalendar(server.url, server.username, server.password, "work") as backend:
            assert backend.display_name == "Work"


async def test_calendar_document_of_server_events_parses_back(
    calendar: CalDAVCalendar, raw: RawCalDAV
) -> None:
    await raw.put("holiday.ics", vcalendar("UID:day-off\nSUMMARY:Day off\nDTSTART;VALUE=DATE:20250303"))
    booked = await calendar.create(booking(15, notes="first visit"))
    events = await calendar.events_between(MARCH_3 - timedelta(days=1), MARCH_3 + timedelta(days=1))

    document = icalendar.Calendar.from_ical(calendar_document(events, name="Dana's calendar", zone=NEW_YORK))
    assert str(document["VERSION"]) == "2.0"
    assert "callassist" in str(document["PRODID"])
    assert str(document["X-WR-CALNAME"]) == "Dana's calendar"
    vevents = {str(vevent["UID"]): vevent for vevent in document.walk("VEVENT")}
    assert set(vevents) == {"day-off", booked.id}
    assert vevents["day-off"].decoded("DTSTART") == date(2025, 3, 3)
    assert vevents["day-off"].decoded("DTEND") == date(2025, 3, 4)
    assert vevents[booked.id].decoded("DTSTART") == booked.start
    assert str(vevents[booked.id]["X-CALLASSIST-CALLER-NUMBER"]) == "+15551234567"


async def test_a_server_that_lists_hrefs_without_data_still_shows_every_event(
    calendar: CalDAVCalendar, raw: RawCalDAV, radicale: RadicaleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await raw.put("a.ics", vcalendar("UID:a-1\nDTSTART:20250303T140000Z\nDTEND:20250303T150000Z"))
    await raw.put("b.ics", vcalendar("UID:b-1\nDTSTART:20250303T160000Z\nDTEND:20250303T170000Z"))
    client = calendar._client
    assert client is not None
    report = client.report

    async def report_without_data(url: str, body: str = "", depth: int | None = 0) -> object:
        # Such servers answer with hrefs and etags only, as if calendar-data had not been asked for.
        return await report(url, body.replace("<C:calendar-data/>", ""), depth=depth)

    monkeypatch.setattr(client, "report", report_without_data)
    events = await calendar.events_between(MARCH_3, MARCH_3 + timedelta(days=1))
    assert [event.id for event in events] == ["a-1", "b-1"]
    fetched = [line for line in radicale.process.lines if "GET request for '/owner/work/" in line]
    assert len(fetched) == 2, "each listed href is fetched on its own"


async def test_a_change_made_meanwhile_elsewhere_is_not_overwritten(
    calendar: CalDAVCalendar, raw: RawCalDAV, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await calendar.create(booking(15))
    client = calendar._client
    assert client is not None
    put = client.put

    async def put_after_the_owner_edits(url: str, body: str, headers: dict[str, str] | None = None) -> object:
        # The owner renames the event in their own app between our read and our write.
        [(stored_url, text)] = (await raw.objects()).items()
        await raw.put(
            stored_url.rsplit("/", 1)[-1], text.replace("SUMMARY:Haircut", "SUMMARY:Renamed by owner")
        )
        return await put(url, body, headers)

    monkeypatch.setattr(client, "put", put_after_the_owner_edits)
    with pytest.raises(CalendarError, match="changed on the server meanwhile"):
        await calendar.update(created.id, start=MARCH_3, end=MARCH_3 + timedelta(hours=1))
    stored = await raw.event(created.id)
    assert stored is not None and str(stored["SUMMARY"]) == "Renamed by owner"
