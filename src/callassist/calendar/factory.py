"""Build the calendar backend CALLASSIST_CALENDAR names: `local` (the store) or `caldav`."""

from __future__ import annotations

import logging

from callassist.calendar.base import Calendar, CalendarError
from callassist.calendar.local import LocalCalendar
from callassist.settings import Settings
from callassist.store.db import Database

log = logging.getLogger(__name__)


async def open_calendar(settings: Settings, database: Database, *, require: bool = False) -> Calendar:
    """The configured backend. A CalDAV server that is down at start-up is only a warning (the backend
    connects on first use, and the tools tell callers the calendar is unavailable meanwhile) unless
    `require` is set, as for CLI commands that can't do anything without it."""
    if settings.calendar != "caldav":
        return LocalCalendar(database)
    from callassist.calendar.caldav import CalDAVCalendar

    password = settings.caldav_password.get_secret_value() if settings.caldav_password else None
    calendar = CalDAVCalendar(
        settings.caldav_url or "",
        settings.caldav_username,
        password,
        settings.caldav_calendar,
        timezone=settings.zone,
    )
    try:
        await calendar.connect()
    except CalendarError as exc:
        if require:
            await calendar.close()
            raise
        log.warning("CalDAV calendar not reachable yet (will retry on use): %s", exc)
    else:
        log.info("CalDAV calendar %r at %s", calendar.display_name, calendar.calendar_url)
    return calendar
