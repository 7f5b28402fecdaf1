"""The one small protocol every calendar backend implements, and the event types it speaks.

Times are always timezone-aware datetimes; backends return them in UTC or with an offset, and the
booking logic converts to the owner's zone. An event booked through the assistant carries the
caller's number and name, which is how a caller finds, moves or cancels only their own bookings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


class CalendarError(Exception):
    """The calendar could not be read or written (server down, refused, conflict on write)."""


class EventNotFound(CalendarError):
    """No event with that id (or it was cancelled)."""


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    id: str  # stable id: the iCalendar UID
    title: str
    start: datetime  # aware
    end: datetime  # aware, > start
    all_day: bool = False
    caller_number: str | None = None  # set when a caller booked it through the assistant
    caller_name: str | None = None
    notes: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewEvent:
    title: str
    start: datetime  # aware
    end: datetime  # aware, > start
    caller_number: str | None = None
    caller_name: str | None = None
    notes: str | None = None


@runtime_checkable
class Calendar(Protocol):
    """A place the owner's events live. Implementations: local (SQL store), CalDAV."""

    name: str

    async def events_between(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        """Every event overlapping [start, end), recurring ones expanded into occurrences,
        sorted by start. Cancelled events are not included."""
        ...

    async def get(self, event_id: str) -> CalendarEvent | None:
        """The event with this id, or None (also when cancelled)."""
        ...

    async def create(self, event: NewEvent) -> CalendarEvent:
        """Store a new event and return it with its id."""
        ...

    async def update(
        self,
        event_id: str,
        *,
        start: datetime,
        end: datetime,
        title: str | None = None,
        notes: str | None = None,
    ) -> CalendarEvent:
        """Move an event (and optionally retitle it / change its notes). Raises EventNotFound."""
        ...

    async def cancel(self, event_id: str) -> None:
        """Cancel an event so it no longer takes time. Raises EventNotFound."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
