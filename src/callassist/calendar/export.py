"""The owner's calendar as one iCalendar document: what `callassist calendar export` writes and the
subscribable feed (`GET /calendar.ics`) serves.

Kept apart from the feed's web route so that the CLI command loads no server code.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from callassist.calendar.base import Calendar
from callassist.calendar.ical import calendar_document

# The window exported when none is asked for: from PAST before now to FUTURE after it.
PAST = timedelta(days=60)
FUTURE = timedelta(days=400)


async def export_document(
    calendar: Calendar, *, name: str, start: datetime, end: datetime, zone: tzinfo
) -> bytes:
    """The events of [start, end) as an iCalendar document named `name` (times shown in `zone`)."""
    events = await calendar.events_between(start, end)
    return calendar_document(events, name=name, zone=zone)
