"""Owner-local time: working hours, DST-correct wall clock, free spans, spoken phrases."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from callassist.calendar.timeutil import (
    TimeError,
    WorkingHours,
    free_spans,
    localize,
    parse_local_datetime,
    slots_fitting,
    spoken_clock,
    spoken_datetime,
    spoken_day,
    spoken_duration,
)

NY = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")


def test_working_hours_parse_and_describe() -> None:
    hours = WorkingHours.parse("Mon-Thu 09:00-12:00,13:00-17:00; Fri 09:00-13:00")
    assert hours.by_weekday[0] == ((time(9), time(12)), (time(13), time(17)))
    assert hours.by_weekday[4] == ((time(9), time(13)),)
    assert 5 not in hours.by_weekday
    assert hours.describe() == "Monday to Thursday, 9 am to noon and 1 pm to 5 pm; Friday, 9 am to 1 pm"
    assert WorkingHours.parse("Sat-Mon 10:00-14:00").by_weekday.keys() == {5, 6, 0}


@pytest.mark.parametrize("text", ["", "Mon 9-5", "Funday 09:00-17:00", "Mon 17:00-09:00", "Mon 25:00-26:00"])
def test_working_hours_reject_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        WorkingHours.parse(text)


def test_working_hours_contains_is_wall_clock_on_dst_days() -> None:
    hours = WorkingHours.parse("Mon-Sun 09:00-17:00")
    for day in (date(2026, 3, 8), date(2026, 11, 1)):  # US clocks change on these Sundays
        start = localize(datetime.combine(day, time(9)), NY)
        assert hours.contains(start, start + timedelta(hours=8), NY)
        assert not hours.contains(start - timedelta(minutes=30), start + timedelta(hours=1), NY)
        spans = hours.spans_on(day, NY)
        assert [
            (a.hour, b.hour) for a, b in (s for s in ((x.astimezone(NY), y.astimezone(NY)) for x, y in spans))
        ] == [(9, 17)]


def test_localize_and_parse_across_dst() -> None:
    # Spring forward: 02:30 doesn't exist in New York on 2026-03-08.
    with pytest.raises(TimeError, match="clocks change"):
        parse_local_datetime("2026-03-08T02:30", NY)
    assert localize(datetime(2026, 3, 8, 2, 30), NY).hour == 3
    # Fall back: 01:30 happens twice; the first (daylight time) wins.
    first = parse_local_datetime("2026-11-01T01:30", NY)
    assert first.astimezone(NY).utcoffset() == timedelta(hours=-4)
    # Offsets are honoured; for the model's arguments only the owner's own offset is, and any other
    # (a habitual "Z") means the wall-clock time.
    assert parse_local_datetime("2026-11-25T19:00Z", NY) == datetime(2026, 11, 25, 14, tzinfo=NY)
    lenient = {"offsets_are_local_times": True}
    assert parse_local_datetime("2026-11-25T14:00-05:00", NY, **lenient) == datetime(
        2026, 11, 25, 14, tzinfo=NY
    )
    assert parse_local_datetime("2026-11-25T14:00Z", NY, **lenient) == datetime(2026, 11, 25, 14, tzinfo=NY)
    assert parse_local_datetime("2026-11-25 14:00", NY) == datetime(2026, 11, 25, 19, tzinfo=UTC)
    assert parse_local_datetime("2026-07-01T14:00", NY) == datetime(2026, 7, 1, 18, tzinfo=UTC)
    # Returned instants are UTC, so durations across the change are real durations.
    start = parse_local_datetime("2026-11-01T01:30", NY)
    assert parse_local_datetime("2026-11-01T03:30", NY) - start == timedelta(hours=3)
    with pytest.raises(TimeError):
        parse_local_datetime("tomorrow at 2", NY)


def test_free_spans_subtract_events_and_the_past() -> None:
    hours = WorkingHours.parse("Mon-Fri 09:00-17:00")
    day = date(2026, 11, 25)
    busy = [
        (datetime(2026, 11, 25, 10, tzinfo=NY), datetime(2026, 11, 25, 11, tzinfo=NY)),
        (datetime(2026, 11, 25, 16, 30, tzinfo=NY), datetime(2026, 11, 25, 18, tzinfo=NY)),
    ]
    now = datetime(2026, 11, 20, tzinfo=UTC)
    free = free_spans(day, day, hours, busy, NY, now)
    assert [(a.astimezone(NY).strftime("%H:%M"), b.astimezone(NY).strftime("%H:%M")) for a, b in free] == [
        ("09:00", "10:00"),
        ("11:00", "16:30"),
    ]
    later = free_spans(day, day, hours, busy, NY, datetime(2026, 11, 25, 12, 7, tzinfo=NY))
    assert later[0][0] == datetime(2026, 11, 25, 12, 15, tzinfo=NY)
    slots = slots_fitting(free, timedelta(hours=1), 30, NY)
    assert [s.astimezone(NY).strftime("%H:%M") for s in slots] == [
        "09:00",
        "11:00",
        "11:30",
        "12:00",
        "12:30",
        "13:00",
        "13:30",
        "14:00",
        "14:30",
        "15:00",
        "15:30",
    ]


def test_slots_on_the_day_clocks_change_keep_wall_clock_times() -> None:
    hours = WorkingHours.parse("Sun 09:00-12:00")
    for day in (date(2026, 3, 29), date(2026, 10, 25)):  # Europe changes on these Sundays
        free = free_spans(day, day, hours, [], PARIS, datetime(2026, 1, 1, tzinfo=UTC))
        slots = slots_fitting(free, timedelta(hours=1), 60, PARIS)
        assert [s.astimezone(PARIS).hour for s in slots] == [9, 10, 11]
        assert all(b - a == timedelta(hours=3) for a, b in free)


def test_spoken_phrases() -> None:
    now = datetime(2026, 11, 24, 9, tzinfo=NY)
    assert spoken_datetime(datetime(2026, 11, 25, 14, tzinfo=NY), NY, now) == "Wednesday the 25th at 2 pm"
    assert (
        spoken_datetime(datetime(2026, 12, 2, 9, 30, tzinfo=NY), NY, now)
        == "Wednesday, December 2nd at 9:30 am"
    )
    assert spoken_day(date(2027, 1, 1), date(2026, 11, 24)) == "Friday, January 1st, 2027"
    assert spoken_clock(time(12)) == "noon"
    assert spoken_clock(time(0, 15)) == "12:15 am"
    assert spoken_duration(timedelta(hours=1)) == "one hour"
    assert spoken_duration(timedelta(minutes=30)) == "30 minutes"
    assert spoken_duration(timedelta(minutes=90)) == "an hour and a half"
    assert spoken_duration(timedelta(hours=2)) == "two hours"
    assert spoken_duration(timedelta(minutes=75)) == "one hour 15 minutes"
