"""LocalCalendar on SQLite and PostgreSQL: the Calendar protocol, soft cancel, caller lookups, DST."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callassist.calendar.base import Calendar, EventNotFound, NewEvent
from callassist.calendar.local import LocalCalendar
from callassist.store.db import Database
from callassist.store.events import CalendarEventRepository
from callassist.store.models import CalendarEventRow, EventStatus

NEW_YORK = ZoneInfo("America/New_York")
DAY = datetime(2026, 5, 4, tzinfo=UTC)  # a Monday


def at(hour: float, day: datetime = DAY) -> datetime:
    return day + timedelta(hours=hour)


def booking(start: datetime, end: datetime, title: str = "Consultation", **fields: str) -> NewEvent:
    return NewEvent(title=title, start=start, end=end, **fields)


async def stored_row(database: Database, event_id: str) -> CalendarEventRow:
    async with database.session(read_only=True) as session:
        row = await CalendarEventRepository(session).get_any(event_id)
    assert row is not None, f"row {event_id} is gone"
    return row


def test_is_a_calendar(calendar: LocalCalendar) -> None:
    assert isinstance(calendar, Calendar)
    assert calendar.name == "local"


async def test_create_then_get(calendar: LocalCalendar) -> None:
    made = await calendar.create(
        booking(at(9), at(10), caller_number="+15551230001", caller_name="Ada", notes="first visit")
    )
    assert made.id.endswith("@callassist")
    assert made.start == at(9) and made.start.tzinfo is UTC
    assert made.created_at is not None and made.created_at.tzinfo is UTC
    assert await calendar.get(made.id) == made
    assert await calendar.get("nobody@callassist") is None


async def test_create_refuses_naive_or_empty_spans(calendar: LocalCalendar) -> None:
    with pytest.raises(ValueError, match="aware"):
        await calendar.create(booking(datetime(2026, 5, 4, 9), at(10)))
    with pytest.raises(ValueError, match="end after"):
        await calendar.create(booking(at(10), at(10)))
    with pytest.raises(ValueError, match="aware"):
        await calendar.events_between(at(0), datetime(2026, 5, 5))


async def test_events_between_is_an_overlap_query(calendar: LocalCalendar) -> None:
    window_start, window_end = at(10), at(12)
    made = {
        title: await calendar.create(booking(start, end, title=title))
        for title, start, end in [
            ("ends as window starts", at(9), at(10)),
            ("starts as window ends", at(12), at(13)),
            ("spans the window", at(8), at(14)),
            ("inside", at(10.5), at(11)),
            ("overlaps the start", at(9.5), at(10.25)),
            ("overlaps the end", at(11.75), at(12.5)),
            ("same as window", at(10), at(12)),
            ("the day before", at(10, DAY - timedelta(days=1)), at(12, DAY - timedelta(days=1))),
        ]
    }
    found = await calendar.events_between(window_start, window_end)
    # Sorted by start; touching intervals ([9,10) and [12,13)) don't overlap [10,12).
    assert [event.title for event in found] == [
        "spans the window",
        "overlaps the start",
        "same as window",
        "inside",
        "overlaps the end",
    ]
    assert found[0] == made["spans the window"]
    # The same window asked in New York time gives the same answer.
    in_new_york = await calendar.events_between(
        window_start.astimezone(NEW_YORK), window_end.astimezone(NEW_YORK)
    )
    assert in_new_york == found
    assert await calendar.events_between(at(10), at(10)) == []


async def test_update_moves_and_bumps_sequence(calendar: LocalCalendar, database: Database) -> None:
    made = await calendar.create(booking(at(9), at(10), notes="bring the form"))
    before = await stored_row(database, made.id)

    moved = await calendar.update(made.id, start=at(14), end=at(15))
    assert (moved.id, moved.start, moved.end) == (made.id, at(14), at(15))
    assert (moved.title, moved.notes) == ("Consultation", "bring the form")  # None leaves them
    assert moved.created_at == made.created_at

    renamed = await calendar.update(made.id, start=at(14), end=at(16), title="Long consultation", notes="")
    assert (renamed.title, renamed.notes, renamed.end) == ("Long consultation", "", at(16))

    after = await stored_row(database, made.id)
    assert (before.sequence, after.sequence) == (0, 2)
    assert after.updated_at > before.updated_at
    assert await calendar.events_between(at(9), at(10)) == []
    assert await calendar.events_between(at(15), at(16)) == [renamed]


async def test_update_unknown_or_cancelled_raises(calendar: LocalCalendar) -> None:
    with pytest.raises(EventNotFound):
        await calendar.update("nobody@callassist", start=at(9), end=at(10))
    made = await calendar.create(booking(at(9), at(10)))
    await calendar.cancel(made.id)
    with pytest.raises(EventNotFound):
        await calendar.update(made.id, start=at(11), end=at(12))
    with pytest.raises(ValueError, match="end after"):
        await calendar.update(made.id, start=at(12), end=at(11))


async def test_cancel_hides_the_event_but_keeps_the_row(calendar: LocalCalendar, database: Database) -> None:
    kept = await calendar.create(booking(at(9), at(10), title="kept"))
    cancelled = await calendar.create(booking(at(9), at(10), title="cancelled"))

    await calendar.cancel(cancelled.id)

    assert await calendar.get(cancelled.id) is None
    assert await calendar.events_between(at(0), at(24)) == [kept]
    row = await stored_row(database, cancelled.id)
    assert row.status == EventStatus.cancelled
    assert row.cancelled_at is not None and row.cancelled_at.tzinfo is UTC
    assert row.sequence == 1
    assert (row.title, row.start, row.end) == ("cancelled", at(9), at(10))

    with pytest.raises(EventNotFound):
        await calendar.cancel(cancelled.id)
    with pytest.raises(EventNotFound):
        await calendar.cancel("nobody@callassist")


async def test_events_by_caller(calendar: LocalCalendar) -> None:
    ada, bob = "+15551230001", "+15551230002"
    first = await calendar.create(booking(at(9), at(10), caller_number=ada))
    await calendar.create(booking(at(11), at(12), caller_number=bob))
    gone = await calendar.create(booking(at(13), at(14), caller_number=ada))
    later = await calendar.create(
        booking(at(9, DAY + timedelta(days=7)), at(10, DAY + timedelta(days=7)), caller_number=ada)
    )
    await calendar.create(booking(at(15), at(16)))  # the owner's own event: no caller
    await calendar.cancel(gone.id)

    assert await calendar.events_by_caller(ada, at(0), at(24 * 30)) == [first, later]
    assert await calendar.events_by_caller(ada, at(10), at(24)) == []  # touching at 10:00
    assert await calendar.events_by_caller("+15550000000", at(0), at(24 * 30)) == []


@pytest.mark.parametrize(
    ("day", "local_start", "local_end", "utc_start", "utc_end"),
    [
        # Spring forward, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 01:30 -> 03:30 lasts one hour.
        ("2026-03-08", (1, 30, 0), (3, 30, 0), "2026-03-08T06:30", "2026-03-08T07:30"),
        # Fall back, 2026-11-01: 01:30 happens twice; fold=0 is EDT, fold=1 is EST an hour later.
        ("2026-11-01", (1, 30, 0), (1, 30, 1), "2026-11-01T05:30", "2026-11-01T06:30"),
        # The days around keep their own offsets (EST in March before, EDT in November before).
        ("2026-03-07", (9, 0, 0), (10, 0, 0), "2026-03-07T14:00", "2026-03-07T15:00"),
        ("2026-03-09", (9, 0, 0), (10, 0, 0), "2026-03-09T13:00", "2026-03-09T14:00"),
        ("2026-10-31", (9, 0, 0), (10, 0, 0), "2026-10-31T13:00", "2026-10-31T14:00"),
        ("2026-11-02", (9, 0, 0), (10, 0, 0), "2026-11-02T14:00", "2026-11-02T15:00"),
    ],
)
async def test_dst_wall_times_come_back_at_the_right_instants(
    calendar: LocalCalendar,
    day: str,
    local_start: tuple[int, int, int],
    local_end: tuple[int, int, int],
    utc_start: str,
    utc_end: str,
) -> None:
    def local(hm_fold: tuple[int, int, int]) -> datetime:
        hour, minute, fold = hm_fold
        return datetime.fromisoformat(day).replace(hour=hour, minute=minute, fold=fold, tzinfo=NEW_YORK)

    made = await calendar.create(booking(local(local_start), local(local_end)))
    expected = (
        datetime.fromisoformat(utc_start).replace(tzinfo=UTC),
        datetime.fromisoformat(utc_end).replace(tzinfo=UTC),
    )
    assert (made.start, made.end) == expected
    assert made.end - made.start == timedelta(hours=1)

    # The owner's local day, asked in local wall time, finds it, and finds it at that instant.
    midnight = datetime.fromisoformat(day).replace(tzinfo=NEW_YORK)
    next_midnight = (midnight + timedelta(days=1)).replace(tzinfo=NEW_YORK)
    [found] = await calendar.events_between(midnight, next_midnight)
    assert (found.start, found.end) == expected
    assert found.start.astimezone(NEW_YORK).replace(tzinfo=None) == local(local_start).replace(
        tzinfo=None, fold=0
    )


async def test_a_whole_dst_week_of_daily_nine_oclock_bookings(calendar: LocalCalendar) -> None:
    week = [datetime(2026, 3, 5, 9, tzinfo=NEW_YORK) + timedelta(days=n) for n in range(7)]
    for start in week:
        await calendar.create(booking(start, start + timedelta(minutes=30)))
    found = await calendar.events_between(week[0], week[-1] + timedelta(days=1))
    # Always 09:00 on the wall; 14:00Z before the switch on the 8th, 13:00Z from then on.
    assert [event.start.astimezone(NEW_YORK).hour for event in found] == [9] * 7
    assert [event.start.hour for event in found] == [14, 14, 14, 13, 13, 13, 13]


async def test_concurrent_writers_never_see_database_locked(database: Database) -> None:
    # Three Database objects on one file behave like three processes (server, CLI, dashboard).
    others = [Database.from_url(database.engine.url) for _ in range(2)]
    calendars = [LocalCalendar(db) for db in [database, *others]]

    async def book_move_cancel(n: int) -> None:
        calendar = calendars[n % len(calendars)]
        made = await calendar.create(booking(at(n), at(n + 1), caller_number=f"+1555000{n:04d}"))
        await calendar.update(made.id, start=at(n + 0.5), end=at(n + 1.5))
        if n % 2:
            await calendar.cancel(made.id)

    try:
        await asyncio.gather(*(book_move_cancel(n) for n in range(40)))
        found = await calendars[0].events_between(at(0), at(48))
    finally:
        for other in others:
            await other.close()
    assert [event.start for event in found] == [at(n + 0.5) for n in range(0, 40, 2)]


async def test_close_leaves_a_shared_database_open(calendar: LocalCalendar, database: Database) -> None:
    await calendar.close()
    assert await LocalCalendar(database).events_between(at(0), at(1)) == []


async def test_open_owns_its_database(tmp_path: Path) -> None:
    calendar = await LocalCalendar.open(f"sqlite:///{tmp_path / 'own.db'}")
    made = await calendar.create(booking(at(9), at(10)))
    await calendar.close()
    reopened = await LocalCalendar.open(f"sqlite:///{tmp_path / 'own.db'}")
    try:
        assert await reopened.get(made.id) == made
    finally:
        await reopened.close()
