"""The `local` calendar backend: events in callassist's own database (SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

from callassist.calendar.base import CalendarEvent, EventNotFound, NewEvent
from callassist.store.db import Database
from callassist.store.events import CalendarEventRepository, to_calendar_event


class LocalCalendar:
    """Calendar protocol over the store. Returned times are aware UTC datetimes.

    Pass the app's shared Database (then `close()` leaves it open for its owner), or use
    `LocalCalendar.open(url)` for a calendar that owns and closes its own.
    """

    name = "local"

    def __init__(self, database: Database, *, owns_database: bool = False) -> None:
        self.database = database
        self._owns_database = owns_database

    @classmethod
    async def open(cls, url: str, *, upgrade: bool = True) -> LocalCalendar:
        """A calendar with its own Database at `url`, migrated to head unless upgrade=False."""
        database = Database.from_url(url)
        try:
            if upgrade:
                await database.upgrade()
        except BaseException:
            await database.close()
            raise
        return cls(database, owns_database=True)

    async def events_between(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        _check_range(start, end)
        async with self.database.session(read_only=True) as session:
            rows = await CalendarEventRepository(session).overlapping(start, end)
            return [to_calendar_event(row) for row in rows]

    async def events_by_caller(
        self, caller_number: str, start: datetime, end: datetime
    ) -> list[CalendarEvent]:
        """The confirmed events booked by this caller that overlap [start, end), by start."""
        _check_range(start, end)
        async with self.database.session(read_only=True) as session:
            rows = await CalendarEventRepository(session).overlapping(start, end, caller_number=caller_number)
            return [to_calendar_event(row) for row in rows]

    async def get(self, event_id: str) -> CalendarEvent | None:
        async with self.database.session(read_only=True) as session:
            row = await CalendarEventRepository(session).get(event_id)
            return to_calendar_event(row) if row else None

    async def create(self, event: NewEvent) -> CalendarEvent:
        _check_span(event.start, event.end)
        async with self.database.session() as session:
            row = await CalendarEventRepository(session).add(event)
            return to_calendar_event(row)

    async def update(
        self,
        event_id: str,
        *,
        start: datetime,
        end: datetime,
        title: str | None = None,
        notes: str | None = None,
    ) -> CalendarEvent:
        _check_span(start, end)
        async with self.database.session() as session:
            row = await CalendarEventRepository(session).reschedule(
                event_id, start=start, end=end, title=title, notes=notes
            )
            if row is None:
                raise EventNotFound(f"no event {event_id!r} (or it was cancelled)")
            return to_calendar_event(row)

    async def cancel(self, event_id: str) -> None:
        async with self.database.session() as session:
            if await CalendarEventRepository(session).cancel(event_id) is None:
                raise EventNotFound(f"no event {event_id!r} (or it was cancelled)")

    async def close(self) -> None:
        if self._owns_database:
            await self.database.close()


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value.isoformat()}")


# Comparisons go through UTC: datetimes sharing a tzinfo compare by wall time, ignoring the
# offset, so 01:30 EDT and 01:30 EST (fold=1) on a fall-back night would look equal.


def _check_range(start: datetime, end: datetime) -> None:
    _require_aware(start, "start")
    _require_aware(end, "end")
    if end.astimezone(UTC) < start.astimezone(UTC):
        raise ValueError(f"range ends ({end.isoformat()}) before it starts ({start.isoformat()})")


def _check_span(start: datetime, end: datetime) -> None:
    _require_aware(start, "start")
    _require_aware(end, "end")
    if end.astimezone(UTC) <= start.astimezone(UTC):
        raise ValueError(f"an event must end after it starts ({start.isoformat()} -> {end.isoformat()})")
