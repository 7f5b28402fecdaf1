"""Owner-local time: working hours, DST-correct wall-clock times, free slots, and spoken phrases.

Everything the model says or hears about time is in the owner's zone (CALLASSIST_TIMEZONE). Wall
clock times are built from local dates and times and made aware with `zoneinfo`, so a 9 am slot is
9 am on the day the clocks change too. Every instant this module returns is in UTC: Python compares
and subtracts two datetimes that share a ZoneInfo by wall clock, which is wrong across a DST change,
so the owner's zone is used for reading and saying times only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

Interval = tuple[datetime, datetime]

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_WORDS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_CLAUSE = re.compile(
    r"^\s*(?P<days>[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?(?:\s*,\s*[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?)*)"
    r"\s+(?P<spans>\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}(?:\s*,\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2})*)\s*$"
)


class TimeError(ValueError):
    """A time the caller or the model gave that can't be used (with a sentence saying why)."""


# Working hours ------------------------------------------------------------------------------------


def _parse_clock(text: str) -> time:
    hours, minutes = (int(part) for part in text.strip().split(":"))
    if hours == 24 and minutes == 0:
        return time.max
    return time(hours, minutes)


@dataclass(frozen=True)
class WorkingHours:
    """When the owner takes appointments, per weekday (0 = Monday), as local wall-clock spans."""

    by_weekday: dict[int, tuple[tuple[time, time], ...]]

    @classmethod
    def parse(cls, text: str) -> WorkingHours:
        """'Mon-Fri 09:00-17:00', 'Mon-Thu 09:00-12:00,13:00-17:00; Fri 09:00-13:00', 'Sat 10:00-14:00'."""
        by_weekday: dict[int, list[tuple[time, time]]] = {}
        for clause in filter(None, (part.strip() for part in text.split(";"))):
            match = _CLAUSE.match(clause)
            if match is None:
                raise ValueError(f"can't read working hours {clause!r}; write e.g. 'Mon-Fri 09:00-17:00'")
            days: list[int] = []
            for group in match["days"].split(","):
                first, _, last = (part.strip().lower() for part in group.partition("-"))
                if first not in _DAY_NAMES or (last and last not in _DAY_NAMES):
                    raise ValueError(f"unknown weekday in {group.strip()!r}; use Mon, Tue, ... Sun")
                a, b = _DAY_NAMES.index(first), _DAY_NAMES.index(last or first)
                days.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
            for span in match["spans"].split(","):
                start_text, end_text = span.split("-")
                try:
                    start, end = _parse_clock(start_text), _parse_clock(end_text)
                except ValueError:
                    raise ValueError(f"invalid time in {span.strip()!r}") from None
                if end <= start:
                    raise ValueError(f"{span.strip()!r} ends before it starts")
                for day in days:
                    by_weekday.setdefault(day, []).append((start, end))
        if not by_weekday:
            raise ValueError("working hours are empty")
        return cls({day: tuple(sorted(spans)) for day, spans in by_weekday.items()})

    def spans_on(self, day: date, zone: ZoneInfo) -> list[Interval]:
        """That day's working spans (UTC instants)."""
        return [
            (
                localize(datetime.combine(day, start), zone).astimezone(UTC),
                _end_of(day, end, zone).astimezone(UTC),
            )
            for start, end in self.by_weekday.get(day.weekday(), ())
        ]

    def contains(self, start: datetime, end: datetime, zone: ZoneInfo) -> bool:
        """Does [start, end) fit inside one working span?"""
        local_day = start.astimezone(zone).date()
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        return any(a <= start and end <= b for a, b in self.spans_on(local_day, zone))

    def describe(self) -> str:
        """'Monday to Friday, 9 am to 5 pm' (for the model and for error messages)."""
        groups: list[tuple[list[int], tuple[tuple[time, time], ...]]] = []
        for day in range(7):
            spans = self.by_weekday.get(day)
            if not spans:
                continue
            if groups and groups[-1][1] == spans and groups[-1][0][-1] == day - 1:
                groups[-1][0].append(day)
            else:
                groups.append(([day], spans))
        parts = []
        for days, spans in groups:
            names = (
                _DAY_WORDS[days[0]] if len(days) == 1 else f"{_DAY_WORDS[days[0]]} to {_DAY_WORDS[days[-1]]}"
            )
            hours = " and ".join(f"{spoken_clock(a)} to {spoken_clock(b)}" for a, b in spans)
            parts.append(f"{names}, {hours}")
        return "; ".join(parts)


def _end_of(day: date, end: time, zone: ZoneInfo) -> datetime:
    if end == time.max:
        return localize(datetime.combine(day + timedelta(days=1), time(0)), zone)
    return localize(datetime.combine(day, end), zone)


# Wall-clock times -------------------------------------------------------------------------------


def localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Make a local wall-clock time aware. In the repeated hour of a DST change the first one wins;
    a time inside the skipped hour moves forward by the gap (like most calendar apps)."""
    aware = naive.replace(tzinfo=zone, fold=0)
    round_trip = aware.astimezone(UTC).astimezone(zone)
    if round_trip.replace(tzinfo=None) != naive:  # doesn't exist: the clocks jumped over it
        return round_trip
    return aware


def exists(naive: datetime, zone: ZoneInfo) -> bool:
    aware = naive.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive


def parse_local_datetime(text: str, zone: ZoneInfo, *, offsets_are_local_times: bool = False) -> datetime:
    """'2026-11-25T14:00' (owner-local) or with an offset -> UTC instant. TimeError if unusable.

    `offsets_are_local_times`: for the model's tool arguments, which are owner-local by contract; an
    offset other than the owner's there (a habitual "Z") is a mislabel, and the wall time is meant.
    """
    cleaned = text.strip().replace(" ", "T", 1) if "T" not in text else text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise TimeError(
            f"{text!r} is not a date and time; use the form 2026-11-25T14:00 in the owner's time zone"
        ) from None
    if parsed.tzinfo is not None:
        wall = parsed.replace(tzinfo=None)
        if not offsets_are_local_times or (
            exists(wall, zone) and localize(wall, zone).utcoffset() == parsed.utcoffset()
        ):
            return parsed.astimezone(UTC)
        parsed = wall
    if not exists(parsed, zone):
        raise TimeError(
            f"{parsed:%H:%M} doesn't exist on {parsed:%B} {parsed.day}: the clocks change that night"
        )
    return localize(parsed, zone).astimezone(UTC)


def parse_local_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise TimeError(f"{text!r} is not a date; use the form 2026-11-25") from None


# Free time ---------------------------------------------------------------------------------------


def subtract(spans: Iterable[Interval], busy: Sequence[Interval]) -> list[Interval]:
    """Parts of `spans` not covered by any busy interval."""
    free: list[Interval] = []
    ordered = sorted(busy)
    for start, end in spans:
        cursor = start
        for busy_start, busy_end in ordered:
            if busy_end <= cursor or busy_start >= end:
                continue
            if busy_start > cursor:
                free.append((cursor, busy_start))
            cursor = max(cursor, busy_end)
            if cursor >= end:
                break
        if cursor < end:
            free.append((cursor, end))
    return free


def free_spans(
    first: date,
    last: date,
    hours: WorkingHours,
    busy: Sequence[Interval],
    zone: ZoneInfo,
    not_before: datetime,
) -> list[Interval]:
    """Free working time from `first` to `last` (inclusive, local dates), never before `not_before`."""
    not_before = not_before.astimezone(UTC)
    busy = [(a.astimezone(UTC), b.astimezone(UTC)) for a, b in busy]
    spans: list[Interval] = []
    day = first
    while day <= last:
        for start, end in hours.spans_on(day, zone):
            if end > not_before:
                spans.append((max(start, ceil_to(not_before, 15, zone)), end))
        day += timedelta(days=1)
    return [(a, b) for a, b in subtract(spans, busy) if b > a]


def ceil_to(moment: datetime, minutes: int, zone: ZoneInfo) -> datetime:
    """Round up to the next multiple of `minutes` past the local hour (so offers are 'at 2:30')."""
    local = moment.astimezone(zone)
    remainder = (local.minute % minutes) * 60 + local.second + local.microsecond / 1e6
    return moment.astimezone(UTC) + timedelta(seconds=(minutes * 60 - remainder) if remainder else 0)


def slots_fitting(
    free: Sequence[Interval], duration: timedelta, step_minutes: int, zone: ZoneInfo
) -> list[datetime]:
    """Every start time on a `step_minutes` grid where `duration` fits inside a free span."""
    starts: list[datetime] = []
    step = timedelta(minutes=step_minutes)
    for begin, end in free:
        cursor = ceil_to(begin, step_minutes, zone)
        end = end.astimezone(UTC)
        while cursor + duration <= end:
            starts.append(cursor)
            cursor += step
    return starts


# Spoken phrases ------------------------------------------------------------------------------------


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def spoken_clock(moment: time | datetime) -> str:
    """'2 pm', '2:30 pm', 'noon', 'midnight'."""
    if moment == time.max:
        return "midnight"
    hour, minute = moment.hour, moment.minute
    if minute == 0 and hour == 12:
        return "noon"
    if minute == 0 and hour == 0:
        return "midnight"
    suffix = "am" if hour < 12 else "pm"
    shown = hour % 12 or 12
    return f"{shown} {suffix}" if minute == 0 else f"{shown}:{minute:02d} {suffix}"


def spoken_day(day: date, today: date) -> str:
    """'Wednesday the 25th' within the coming weeks of this month, else 'Wednesday, December 9th'."""
    weekday = _DAY_WORDS[day.weekday()]
    if day.year == today.year and day.month == today.month:
        return f"{weekday} the {ordinal(day.day)}"
    year = f", {day.year}" if day.year != today.year else ""
    return f"{weekday}, {day:%B} {ordinal(day.day)}{year}"


def spoken_datetime(moment: datetime, zone: ZoneInfo, now: datetime) -> str:
    local = moment.astimezone(zone)
    return f"{spoken_day(local.date(), now.astimezone(zone).date())} at {spoken_clock(local)}"


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def spoken_duration(duration: timedelta) -> str:
    """'one hour', '30 minutes', 'an hour and a half', 'two hours'."""
    minutes = round(duration.total_seconds() / 60)
    hours, rest = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes} minutes"
    if rest == 30:
        return "an hour and a half" if hours == 1 else f"{_number(hours)} and a half hours"
    head = "one hour" if hours == 1 else f"{_number(hours)} hours"
    return head if rest == 0 else f"{head} {rest} minutes"


def _number(n: int) -> str:
    return _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)


def iso(moment: datetime, zone: ZoneInfo) -> str:
    """ISO 8601 with the owner's offset, to the minute: '2026-11-25T14:00:00-05:00'."""
    return moment.astimezone(zone).replace(microsecond=0).isoformat()
