"""iCalendar <-> CalendarEvent conversion: the pure functions shared by CalDAV, export and the feed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest

from callassist.calendar.base import CalendarEvent
from callassist.calendar.ical import (
    booking_description,
    booking_line,
    calendar_document,
    event_to_vevent,
    new_uid,
    notes_from_description,
    vevent_to_event,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def vevent(*lines: str) -> icalendar.cal.Component:
    text = "\r\n".join(
        ["BEGIN:VCALENDAR", "BEGIN:VEVENT", "UID:u1", *lines, "END:VEVENT", "END:VCALENDAR", ""]
    )
    [component] = icalendar.Calendar.from_ical(text).walk("VEVENT")
    return component


def test_new_uids_are_unique_and_ours() -> None:
    uids = {new_uid() for _ in range(100)}
    assert len(uids) == 100
    assert all(uid.endswith("@callassist") for uid in uids)


def test_booking_line_names_whoever_is_known() -> None:
    assert booking_line("Ann Lee", "+15551234567") == "Booked by phone by Ann Lee +15551234567."
    assert booking_line(None, "+15551234567") == "Booked by phone by +15551234567."
    assert booking_line(None, None) == "Booked by phone."
    description = booking_description("  bring photo ", "Ann", "+1555")
    assert description == "bring photo\n\nBooked by phone by Ann +1555."
    assert notes_from_description(description, "Ann", "+1555") == "bring photo"
    assert notes_from_description(booking_description(None, "Ann", "+1555"), "Ann", "+1555") is None
    # The owner's own words stay, even when they mention a booking.
    assert (
        notes_from_description("Booked by phone by my assistant", None, None)
        == "Booked by phone by my assistant"
    )


def test_timed_event_with_a_tzid_comes_back_in_utc() -> None:
    event = vevent(
        "SUMMARY:Dentist",
        "DTSTART;TZID=Europe/Berlin:20250704T100000",
        "DTEND;TZID=Europe/Berlin:20250704T110000",
        "CREATED:20250101T120000Z",
        "DESCRIPTION:Bring X-rays",
    )
    converted = vevent_to_event(event, NEW_YORK)
    assert converted == CalendarEvent(
        id="u1",
        title="Dentist",
        start=datetime(2025, 7, 4, 8, tzinfo=UTC),
        end=datetime(2025, 7, 4, 9, tzinfo=UTC),
        notes="Bring X-rays",
        created_at=datetime(2025, 1, 1, 12, tzinfo=UTC),
    )


def test_duration_instead_of_dtend() -> None:
    converted = vevent_to_event(vevent("DTSTART:20250704T100000Z", "DURATION:PT90M"), UTC)
    assert converted is not None and converted.end == datetime(2025, 7, 4, 11, 30, tzinfo=UTC)
    # P2D on dates is two calendar days, across the spring DST change too.
    days = vevent_to_event(vevent("DTSTART;VALUE=DATE:20250308", "DURATION:P2D"), NEW_YORK)
    assert days is not None and days.all_day
    assert (days.start, days.end) == (
        datetime(2025, 3, 8, tzinfo=NEW_YORK),
        datetime(2025, 3, 10, tzinfo=NEW_YORK),
    )
    assert days.end - days.start == timedelta(days=2)  # wall-clock difference; one hour less really passes


def test_all_day_without_dtend_lasts_one_local_day() -> None:
    converted = vevent_to_event(vevent("DTSTART;VALUE=DATE:20250110"), BERLIN)
    assert converted is not None and converted.all_day
    assert converted.start == datetime(2025, 1, 10, tzinfo=BERLIN)
    assert converted.end == datetime(2025, 1, 11, tzinfo=BERLIN)


@pytest.mark.parametrize(
    "lines",
    [
        ("DTSTART:20250704T100000Z",),  # an instant: no DTEND, no DURATION
        ("DTSTART:20250704T100000Z", "DTEND:20250704T090000Z"),  # ends before it starts
        ("DTSTART:20250704T100000Z", "DTEND:20250704T110000Z", "STATUS:cancelled"),  # any case
        ("DTSTART:20250704T100000Z", "DTEND:20250704T110000Z", "TRANSP:TRANSPARENT"),
        ("DTEND:20250704T110000Z",),  # no start
    ],
)
def test_events_that_take_no_time_are_none(lines: tuple[str, ...]) -> None:
    assert vevent_to_event(vevent(*lines), UTC) is None


def test_non_events_are_none() -> None:
    todo = icalendar.Todo()
    todo.add("UID", "t1")
    todo.add("DTSTART", datetime(2025, 1, 1, tzinfo=UTC))
    assert vevent_to_event(todo, UTC) is None


def test_floating_time_is_read_in_the_given_zone() -> None:
    converted = vevent_to_event(vevent("DTSTART:20250110T090000", "DTEND:20250110T100000"), NEW_YORK)
    assert converted is not None and converted.start == datetime(2025, 1, 10, 14, tzinfo=UTC)


def test_caller_booking_round_trips() -> None:
    booked = CalendarEvent(
        id="b1@callassist",
        title="Consultation; first, free",
        start=datetime(2025, 3, 3, 10, tzinfo=NEW_YORK),
        end=datetime(2025, 3, 3, 10, 30, tzinfo=NEW_YORK),
        caller_number="+15551234567",
        caller_name="Ann Lee",
        notes="Line one\nline two",
        created_at=datetime(2025, 3, 1, 9, tzinfo=UTC),
    )
    component = event_to_vevent(booked)
    text = component.to_ical().decode()
    assert "DTSTART:20250303T150000Z" in text
    assert "X-CALLASSIST-CALLER-NUMBER:+15551234567" in text
    assert str(component["DESCRIPTION"]).endswith("Booked by phone by Ann Lee +15551234567.")
    assert vevent_to_event(icalendar.Event.from_ical(text), UTC) == booked


def test_owner_event_has_no_booking_line() -> None:
    own = CalendarEvent(
        "o1", "Lunch", datetime(2025, 3, 3, 17, tzinfo=UTC), datetime(2025, 3, 3, 18, tzinfo=UTC)
    )
    component = event_to_vevent(own)
    assert "DESCRIPTION" not in component
    assert "X-CALLASSIST-CALLER-NUMBER" not in component


def test_all_day_event_is_written_as_local_dates() -> None:
    # Midnight to midnight in New York, carried in UTC: the dates come from the zone given.
    day = CalendarEvent(
        "d1",
        "Day off",
        datetime(2025, 1, 10, 5, tzinfo=UTC),
        datetime(2025, 1, 11, 5, tzinfo=UTC),
        all_day=True,
    )
    component = event_to_vevent(day, zone=NEW_YORK)
    assert component.decoded("DTSTART") == date(2025, 1, 10)
    assert component.decoded("DTEND") == date(2025, 1, 11)
    assert vevent_to_event(component, NEW_YORK) == CalendarEvent(
        "d1",
        "Day off",
        datetime(2025, 1, 10, tzinfo=NEW_YORK),
        datetime(2025, 1, 11, tzinfo=NEW_YORK),
        all_day=True,
    )


def test_naive_times_are_refused() -> None:
    naive = CalendarEvent("n1", "x", datetime(2025, 1, 1, 10), datetime(2025, 1, 1, 11))
    with pytest.raises(ValueError, match="timezone-aware"):
        event_to_vevent(naive)


def test_calendar_document_is_valid_and_complete() -> None:
    events = [
        CalendarEvent(f"e{index}", f"Event {index}, with; punctuation", start, start + timedelta(hours=1))
        for index, start in enumerate(datetime(2025, 3, 3, hour, tzinfo=UTC) for hour in (9, 11, 13))
    ]
    document = calendar_document(events, name="Dana")
    assert document.startswith(b"BEGIN:VCALENDAR\r\n") and document.endswith(b"END:VCALENDAR\r\n")
    parsed = icalendar.Calendar.from_ical(document)
    assert str(parsed["VERSION"]) == "2.0"
    assert str(parsed["PRODID"]) == "-//callassist//callassist//EN"
    assert str(parsed["X-WR-CALNAME"]) == "Dana"
    vevents = parsed.walk("VEVENT")
    assert [str(component["SUMMARY"]) for component in vevents] == [event.title for event in events]
    assert all("DTSTAMP" in component for component in vevents)  # required by RFC 5545 3.6.1
    assert [vevent_to_event(component, UTC) for component in vevents] == events
    assert icalendar.Calendar.from_ical(calendar_document([], name="Empty")).walk("VEVENT") == []
