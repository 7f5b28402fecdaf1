"""Booking rules on a real store: working hours, conflicts, alternatives, ownership, DST weeks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callassist.calendar.base import EventNotFound, NewEvent
from callassist.calendar.booking import BookingRefused, BookingService, NotYours
from callassist.calendar.local import LocalCalendar
from callassist.calendar.timeutil import WorkingHours, localize

NY = ZoneInfo("America/New_York")


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return localize(datetime(year, month, day, hour, minute), NY)


@pytest.fixture
async def calendar(tmp_path: Path) -> AsyncIterator[LocalCalendar]:
    calendar = await LocalCalendar.open(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    yield calendar
    await calendar.close()


def service(calendar: LocalCalendar, now: datetime, hours: str = "Mon-Fri 09:00-17:00") -> BookingService:
    return BookingService(calendar, WorkingHours.parse(hours), NY, clock=lambda: now)


async def test_books_inside_hours_and_refuses_past_outside_and_conflicts(calendar: LocalCalendar) -> None:
    booking = service(calendar, at(2026, 11, 23, 12))  # Monday noon
    event = await booking.book(
        NewEvent("Call", at(2026, 11, 25, 14), at(2026, 11, 25, 15), caller_number="+1")
    )
    assert event.start == at(2026, 11, 25, 14)

    with pytest.raises(BookingRefused) as conflict:
        await booking.book(NewEvent("Other", at(2026, 11, 25, 14, 30), at(2026, 11, 25, 15, 30)))
    assert conflict.value.reason == "conflict"
    # Nearest free times of the same length, same day first, none overlapping the booked hour.
    assert [a.astimezone(NY).strftime("%a %H:%M") for a in conflict.value.alternatives] == [
        "Wed 13:00",
        "Wed 15:00",
        "Wed 15:30",
    ]
    with pytest.raises(BookingRefused) as past:
        await booking.book(NewEvent("Old", at(2026, 11, 20, 10), at(2026, 11, 20, 11)))
    assert past.value.reason == "past" and past.value.alternatives[0] > at(2026, 11, 23, 12)
    with pytest.raises(BookingRefused) as outside:
        await booking.book(NewEvent("Late", at(2026, 11, 25, 16, 30), at(2026, 11, 25, 17, 30)))
    assert outside.value.reason == "outside_hours"
    assert "Monday to Friday, 9 am to 5 pm" in outside.value.message
    with pytest.raises(BookingRefused) as weekend:
        await booking.book(NewEvent("Sat", at(2026, 11, 28, 10), at(2026, 11, 28, 11)))
    assert weekend.value.alternatives[0].astimezone(NY).date().weekday() < 5


async def test_only_the_booking_caller_can_move_or_cancel(calendar: LocalCalendar) -> None:
    booking = service(calendar, at(2026, 11, 23, 12))
    event = await booking.book(
        NewEvent("Call", at(2026, 11, 25, 10), at(2026, 11, 25, 11), caller_number="+1555")
    )
    with pytest.raises(NotYours):
        await booking.cancel(event.id, "+1999")
    with pytest.raises(NotYours):
        await booking.reschedule(event.id, "+1999", at(2026, 11, 26, 10), at(2026, 11, 26, 11))
    before, after = await booking.reschedule(event.id, "+1555", at(2026, 11, 26, 10), at(2026, 11, 26, 11))
    assert before.start == at(2026, 11, 25, 10) and after.start == at(2026, 11, 26, 10)
    # Moving onto itself is no conflict.
    await booking.reschedule(event.id, "+1555", at(2026, 11, 26, 10, 30), at(2026, 11, 26, 11, 30))
    await booking.cancel(event.id, "+1555")
    with pytest.raises(EventNotFound):
        await booking.cancel(event.id, "+1555")
    assert await booking.caller_events("+1555", at(2026, 11, 23, 0).date(), at(2026, 11, 30, 0).date()) == []


@pytest.mark.parametrize(
    ("now", "change_day", "before_offset", "after_offset"),
    [
        (at(2026, 3, 5, 12), datetime(2026, 3, 8).date(), -5, -4),  # spring forward
        (at(2026, 10, 29, 12), datetime(2026, 11, 1).date(), -4, -5),  # fall back
    ],
)
async def test_the_week_the_clocks_change(
    calendar: LocalCalendar, now: datetime, change_day: object, before_offset: int, after_offset: int
) -> None:
    booking = service(calendar, now, hours="Mon-Sun 09:00-17:00")
    first = now.astimezone(NY).date() + timedelta(days=1)
    days = await booking.availability(first, first + timedelta(days=6))
    for day in days:
        # Every day offers 9 am to 5 pm local, whatever the offset that day.
        [(start, end)] = day.free
        assert (start.astimezone(NY).time(), end.astimezone(NY).time()) == (time(9), time(17))
        expected = before_offset if day.day < change_day else after_offset
        assert start.astimezone(NY).utcoffset() == timedelta(hours=expected)
    # A 9 am booking on the day of the change is 9 am local, stored at the right UTC instant.
    event = await booking.book(
        NewEvent("DST day", localize(datetime.combine(change_day, time(9)), NY),
                 localize(datetime.combine(change_day, time(10)), NY))
    )  # fmt: skip
    assert event.start.astimezone(NY).hour == 9
    assert event.start == datetime.combine(change_day, time(9 - after_offset), UTC)
    assert event.end - event.start == timedelta(hours=1)
    # Alternatives on that day are on the local half-hour grid.
    with pytest.raises(BookingRefused) as conflict:
        await booking.book(
            NewEvent("Clash", localize(datetime.combine(change_day, time(9)), NY),
                     localize(datetime.combine(change_day, time(10)), NY))
        )  # fmt: skip
    assert [a.astimezone(NY).strftime("%H:%M") for a in conflict.value.alternatives] == [
        "10:00",
        "10:30",
        "11:00",
    ]
