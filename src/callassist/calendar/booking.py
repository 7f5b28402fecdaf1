"""Booking rules on top of any calendar backend: availability, booking, and a caller's own events.

The rules a receptionist would follow: never in the past, only inside working hours, never over
another event, and when a time doesn't work, offer the nearest ones that do. Writes are serialised
per server so two callers can't take the same slot at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from callassist.calendar.base import Calendar, CalendarEvent, EventNotFound, NewEvent
from callassist.calendar.timeutil import (
    Interval,
    WorkingHours,
    free_spans,
    slots_fitting,
    spoken_datetime,
)

MAX_DURATION = timedelta(hours=8)
HORIZON = timedelta(days=366)
MIN_NOTICE = timedelta(minutes=5)
SLOT_STEP_MINUTES = 30
ALTERNATIVES = 3
SEARCH_DAYS = 14  # how far around a refused time we look for alternatives


@dataclass(frozen=True)
class BookingRefused(Exception):
    """A booking or move that can't be done, with a sentence the assistant can say and better times."""

    reason: str  # "past" | "outside_hours" | "conflict" | "too_long" | "too_far" | "invalid"
    message: str
    alternatives: tuple[datetime, ...] = field(default=())

    def __str__(self) -> str:
        return self.message


class NotYours(Exception):
    """The event exists but this caller didn't book it (they may only learn it's busy time)."""


@dataclass(frozen=True)
class DayAvailability:
    day: date
    free: list[Interval]


class BookingService:
    def __init__(
        self,
        calendar: Calendar,
        hours: WorkingHours,
        zone: ZoneInfo,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.calendar = calendar
        self.hours = hours
        self.zone = zone
        self._clock = clock
        self._write_lock = asyncio.Lock()

    def now(self) -> datetime:
        """Now, as a UTC instant (see timeutil: never compare times in the owner's zone)."""
        return self._clock().astimezone(UTC)

    def today(self) -> date:
        return self.now().astimezone(self.zone).date()

    def spoken(self, moment: datetime) -> str:
        return spoken_datetime(moment, self.zone, self.now())

    # Reading -------------------------------------------------------------------------------------

    async def _busy(self, first: date, last: date, ignore: str | None = None) -> list[Interval]:
        start = datetime.combine(first, datetime.min.time(), self.zone) - timedelta(days=1)
        end = datetime.combine(last, datetime.min.time(), self.zone) + timedelta(days=2)
        events = await self.calendar.events_between(start.astimezone(UTC), end.astimezone(UTC))
        return [(event.start, event.end) for event in events if event.id != ignore]

    async def availability(self, first: date, last: date) -> list[DayAvailability]:
        """Free working time per day, first to last inclusive (owner-local dates)."""
        busy = await self._busy(first, last)
        free = free_spans(first, last, self.hours, busy, self.zone, self.now() + MIN_NOTICE)
        days: list[DayAvailability] = []
        day = first
        while day <= last:
            days.append(
                DayAvailability(day, [(a, b) for a, b in free if a.astimezone(self.zone).date() == day])
            )
            day += timedelta(days=1)
        return days

    async def agenda(self, first: date, last: date) -> list[CalendarEvent]:
        """Everything on the owner's calendar (the owner's own view only)."""
        start = datetime.combine(first, datetime.min.time(), self.zone)
        end = datetime.combine(last + timedelta(days=1), datetime.min.time(), self.zone)
        return await self.calendar.events_between(start.astimezone(UTC), end.astimezone(UTC))

    async def caller_events(self, caller_number: str, first: date, last: date) -> list[CalendarEvent]:
        return [event for event in await self.agenda(first, last) if event.caller_number == caller_number]

    async def own_event(self, event_id: str, caller_number: str) -> CalendarEvent:
        event = await self.calendar.get(event_id)
        if event is None:
            raise EventNotFound(event_id)
        if event.caller_number != caller_number:
            raise NotYours(event_id)
        return event

    # Writing -------------------------------------------------------------------------------------

    async def book(self, new: NewEvent) -> CalendarEvent:
        async with self._write_lock:
            await self._check(new.start, new.end)
            return await self.calendar.create(new)

    async def reschedule(
        self, event_id: str, caller_number: str, start: datetime, end: datetime
    ) -> tuple[CalendarEvent, CalendarEvent]:
        """Move one of the caller's events; returns (before, after)."""
        async with self._write_lock:
            before = await self.own_event(event_id, caller_number)
            await self._check(start, end, ignore=event_id)
            after = await self.calendar.update(event_id, start=start, end=end)
            return before, after

    async def cancel(self, event_id: str, caller_number: str) -> CalendarEvent:
        async with self._write_lock:
            event = await self.own_event(event_id, caller_number)
            await self.calendar.cancel(event_id)
            return event

    async def _check(self, start: datetime, end: datetime, ignore: str | None = None) -> None:
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        duration = end - start
        now = self.now()
        if duration <= timedelta(0):
            raise BookingRefused("invalid", "The end must be after the start.")
        if duration > MAX_DURATION:
            raise BookingRefused("too_long", "That's longer than a booking can be (8 hours at most).")
        if start < now + MIN_NOTICE:
            alternatives = await self.alternatives(now, duration, ignore=ignore)
            raise BookingRefused("past", f"{self.spoken(start)} has already passed.", alternatives)
        if start > now + HORIZON:
            raise BookingRefused("too_far", "That's more than a year ahead; please pick an earlier date.")
        if not self.hours.contains(start, end, self.zone):
            alternatives = await self.alternatives(start, duration, ignore=ignore)
            raise BookingRefused(
                "outside_hours",
                f"{self.spoken(start)} is outside working hours ({self.hours.describe()}).",
                alternatives,
            )
        local_day = start.astimezone(self.zone).date()
        busy = await self._busy(local_day, local_day, ignore=ignore)
        if any(b_start.astimezone(UTC) < end and start < b_end.astimezone(UTC) for b_start, b_end in busy):
            alternatives = await self.alternatives(start, duration, ignore=ignore)
            raise BookingRefused("conflict", f"{self.spoken(start)} is already taken.", alternatives)

    async def alternatives(
        self, wanted: datetime, duration: timedelta, *, ignore: str | None = None, count: int = ALTERNATIVES
    ) -> tuple[datetime, ...]:
        """The free start times nearest to `wanted` where `duration` fits, same day first."""
        now = self.now()
        wanted = wanted.astimezone(UTC)
        wanted_day = wanted.astimezone(self.zone).date()
        first = max(self.today(), wanted_day - timedelta(days=SEARCH_DAYS // 2))
        last = wanted_day + timedelta(days=SEARCH_DAYS)
        busy = await self._busy(first, last, ignore=ignore)
        free = free_spans(first, last, self.hours, busy, self.zone, now + MIN_NOTICE)
        candidates = slots_fitting(free, duration, SLOT_STEP_MINUTES, self.zone)

        def distance(slot: datetime) -> tuple[int, float]:
            # Same local day beats any other day; then closeness in time.
            same_day = slot.astimezone(self.zone).date() == wanted_day
            return (0 if same_day else 1, abs((slot - wanted).total_seconds()))

        chosen = sorted(candidates, key=distance)[:count]
        return tuple(sorted(chosen))


def describe_free(free: Sequence[Interval], zone: ZoneInfo) -> str:
    """'9 am to 12 pm and 3 pm to 5 pm' for one day's free spans."""
    from callassist.calendar.timeutil import spoken_clock

    if not free:
        return "fully booked"
    return " and ".join(
        f"{spoken_clock(a.astimezone(zone))} to {spoken_clock(b.astimezone(zone))}" for a, b in free
    )
