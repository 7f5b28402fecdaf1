"""The owner's real calendar over CalDAV: Google, iCloud, Fastmail, Nextcloud, Radicale and friends.

The `caldav` library's async client does transport, authentication and calendar discovery. The
queries, writes and recurrence expansion are done by callassist, in a few plain requests (`dav`),
so that every request has a deadline and every failure reaches the caller as a short
`CalendarError`, never as an event that silently went missing from a free/busy answer. Here: the
`Calendar` protocol on top of them (choosing the calendar, where each event lives, conditional
writes, recurring events expanded).

One reason this module is a little over 400 lines: it is one job, `CalDAVCalendar`, whose parts share
its connection and its memory of where each event lives. The requests and how their failures read are
in `dav`, the iCalendar edits in `ical`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from callassist.calendar.base import CalendarError, CalendarEvent, EventNotFound, NewEvent
from callassist.calendar.dav import (
    ICS_HEADERS,
    QUERY_MARGIN,
    DeadlineDAVClient,
    Resource,
    expect_success,
    explain,
    get_resource,
    if_match,
    query,
    server_label,
    time_range_filter,
    uid_filter,
)
from callassist.calendar.ical import (
    booking_description,
    event_to_vevent,
    master_component,
    new_uid,
    replace_property,
    sequence_number,
    unique_timezones,
    updated_description,
    vcalendar,
    vevent_to_event,
)

log = logging.getLogger(__name__)

_UTC_ZONE = ZoneInfo("UTC")


class CalDAVCalendar:
    """A calendar collection on a CalDAV server, behind the `Calendar` protocol.

    Connects lazily on first use (or explicitly with `connect()`, or `async with`). Dates of
    all-day events and floating times are read in `timezone`, the owner's zone.
    """

    name = "caldav"

    def __init__(
        self,
        url: str,
        username: str | None,
        password: str | None,
        calendar_name: str | None,
        *,
        timezone: ZoneInfo = _UTC_ZONE,
        timeout: float = 10.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._url = url  # may carry credentials (https://user:pw@host/): never logged or shown
        self.username = username
        self.calendar_name = calendar_name
        self.timezone = timezone
        self.timeout = timeout
        self._password = password
        self._server = server_label(url)
        self._client: DeadlineDAVClient | None = None
        self._calendar_url: str | None = None
        self._display_name: str | None = None
        self._connect_lock = asyncio.Lock()
        # Where each UID was last seen: servers may name resources any way they like.
        self._hrefs: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"CalDAVCalendar(server={self._server!r}, calendar={self.calendar_name!r})"

    @property
    def calendar_url(self) -> str | None:
        """URL of the calendar collection, once connected."""
        return self._calendar_url

    @property
    def display_name(self) -> str | None:
        """Display name of the calendar in use, once connected."""
        return self._display_name

    # -- lifecycle ---------------------------------------------------------------------------------

    async def connect(self) -> Self:
        """Find the principal and the calendar. Safe to call again; returns self for chaining."""
        async with self._connect_lock:
            if self._calendar_url is not None:
                return self
            async with self._failures_as_calendar_errors("connecting"):
                if self._client is None:
                    self._client = await self._new_client()
                principal = await self._client.get_principal()
                calendars = await self._client.get_calendars(principal)
                url, display_name = await self._choose_calendar(calendars)
            self._calendar_url = url if url.endswith("/") else url + "/"
            self._display_name = display_name
            log.info("CalDAV calendar %r at %s", display_name, self._server)
        return self

    async def close(self) -> None:
        client, self._client, self._calendar_url = self._client, None, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # closing a broken connection must not fail the shutdown
                log.debug("closing the CalDAV client failed", exc_info=True)

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the Calendar protocol ---------------------------------------------------------------------

    async def events_between(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        _require_aware(start, end)
        if end <= start:
            return []
        client, calendar_url = await self._connected()
        async with self._failures_as_calendar_errors("reading events"):
            resources = await self._query(client, calendar_url, time_range_filter(start, end))
        return self._occurrences(resources, start, end)

    async def events_by_caller(self, number: str, start: datetime, end: datetime) -> list[CalendarEvent]:
        """Events in [start, end) booked by the caller with this phone number."""
        wanted = _digits(number)
        if not wanted:
            return []
        return [
            event
            for event in await self.events_between(start, end)
            if event.caller_number is not None and _digits(event.caller_number) == wanted
        ]

    async def get(self, event_id: str) -> CalendarEvent | None:
        client, calendar_url = await self._connected()
        async with self._failures_as_calendar_errors("reading the event"):
            resource = await self._find(client, calendar_url, event_id)
        if resource is None:
            return None
        master = master_component(resource.calendar, event_id)
        return None if master is None else vevent_to_event(master, self.timezone)

    async def create(self, event: NewEvent) -> CalendarEvent:
        _require_aware(event.start, event.end)
        if event.end <= event.start:
            raise ValueError("an event must end after it starts")
        client, calendar_url = await self._connected()
        now = _now()
        booked = CalendarEvent(
            id=new_uid(),
            title=event.title,
            start=_utc_seconds(event.start),
            end=_utc_seconds(event.end),
            caller_number=event.caller_number,
            caller_name=event.caller_name,
            notes=event.notes,
            created_at=now,
        )
        vevent = event_to_vevent(booked, stamp=now)
        # Every event made here is a phone booking, even when the caller withheld number and name.
        replace_property(
            vevent, "DESCRIPTION", booking_description(event.notes, event.caller_name, event.caller_number)
        )
        replace_property(vevent, "LAST-MODIFIED", now)
        replace_property(vevent, "SEQUENCE", 0)
        url = calendar_url + quote(booked.id, safe="") + ".ics"
        async with self._failures_as_calendar_errors("saving the event"):
            # No If-None-Match: a fresh uuid4 cannot collide, and Google refuses every If* but If-Match.
            body = vcalendar([vevent]).to_ical().decode()
            response = await client.put(url, body, ICS_HEADERS)
            expect_success(response)
        self._hrefs[booked.id] = url
        created = self._as_stored(body, booked.id)
        assert created is not None  # a timed, opaque event with end > start always converts
        return created

    async def update(
        self,
        event_id: str,
        *,
        start: datetime,
        end: datetime,
        title: str | None = None,
        notes: str | None = None,
    ) -> CalendarEvent:
        """Move (and optionally retitle or re-note) an event; a recurring event moves as a series."""
        _require_aware(start, end)
        if end <= start:
            raise ValueError("an event must end after it starts")
        client, calendar_url = await self._connected()
        async with self._failures_as_calendar_errors("changing the event"):
            resource = await self._find(client, calendar_url, event_id)
            master = None if resource is None else master_component(resource.calendar, event_id)
            if resource is None or master is None or vevent_to_event(master, self.timezone) is None:
                raise EventNotFound(f"no event with id {event_id}")
            now = _now()
            for name in ("DTSTART", "DTEND", "DURATION"):
                master.pop(name, None)
            master.add("DTSTART", _utc_seconds(start))
            master.add("DTEND", _utc_seconds(end))
            if title is not None:
                replace_property(master, "SUMMARY", title)
            if notes is not None:
                replace_property(master, "DESCRIPTION", updated_description(master, notes))
            replace_property(master, "SEQUENCE", sequence_number(master) + 1)
            replace_property(master, "LAST-MODIFIED", now)
            replace_property(master, "DTSTAMP", now)
            body = resource.calendar.to_ical().decode()
            response = await client.put(resource.url, body, {**ICS_HEADERS, **if_match(resource)})
            expect_success(response)
        self._hrefs[event_id] = resource.url
        updated = self._as_stored(body, event_id)
        assert updated is not None  # it converted before the move and end > start still holds
        return updated

    async def cancel(self, event_id: str) -> None:
        """Delete the event from the server."""
        client, calendar_url = await self._connected()
        async with self._failures_as_calendar_errors("cancelling the event"):
            resource = await self._find(client, calendar_url, event_id)
            master = None if resource is None else master_component(resource.calendar, event_id)
            if resource is None or master is None or vevent_to_event(master, self.timezone) is None:
                raise EventNotFound(f"no event with id {event_id}")
            response = await client.delete(resource.url, if_match(resource))
            if response.status in (404, 410):
                raise EventNotFound(f"no event with id {event_id}")
            expect_success(response)
        self._hrefs.pop(event_id, None)

    def _as_stored(self, body: str, uid: str) -> CalendarEvent | None:
        """The event as the server will give it back: read from what was sent (escaping is lossy,
        e.g. a CRLF in a name is one line break in TEXT)."""
        master = master_component(icalendar.Calendar.from_ical(body), uid)
        return None if master is None else vevent_to_event(master, self.timezone)

    # -- connecting --------------------------------------------------------------------------------

    async def _new_client(self) -> DeadlineDAVClient:
        # A bare domain or e-mail address makes the constructor do RFC 6764 discovery, which blocks.
        return await asyncio.to_thread(
            partial(
                DeadlineDAVClient,
                deadline=self.timeout,
                url=self._url,
                username=self.username,
                password=self._password,
                timeout=self.timeout,
                # A caller is waiting on the line: a rate-limited server is an error now, not a sleep.
                rate_limit_handle=False,
            )
        )

    async def _connected(self) -> tuple[DeadlineDAVClient, str]:
        if self._calendar_url is None or self._client is None:
            await self.connect()
        assert self._client is not None and self._calendar_url is not None
        return self._client, self._calendar_url

    async def _choose_calendar(self, calendars: Sequence[Any]) -> tuple[str, str]:
        named: list[tuple[Any, str]] = []
        for calendar in calendars:
            display_name = await calendar.get_display_name()  # cached from the listing: no request
            named.append((calendar, str(display_name or _last_segment(str(calendar.url)))))
        existing = ", ".join(repr(name) for _, name in named) or "none"
        if self.calendar_name is None:
            for calendar, display_name in named:
                if "VEVENT" in await calendar.get_supported_components():
                    return str(calendar.url), display_name
            if not named:
                raise CalendarError(f"CalDAV: found no calendars at {self._server}; check the URL")
            raise CalendarError(f"CalDAV: the account has no calendar for events (calendars: {existing})")
        for matches in (
            lambda name: name == self.calendar_name,
            lambda name: name.casefold() == str(self.calendar_name).casefold(),
        ):
            for calendar, display_name in named:
                if matches(display_name):
                    return str(calendar.url), display_name
        raise CalendarError(
            f"CalDAV: no calendar named {self.calendar_name!r} on {self._server}; "
            f"existing calendars: {existing}"
        )

    # -- reading -----------------------------------------------------------------------------------

    async def _query(
        self, client: DeadlineDAVClient, calendar_url: str, vevent_filter: str
    ) -> list[Resource]:
        """`dav.query`, remembering where each UID was seen."""
        resources = await query(client, calendar_url, vevent_filter)
        for resource in resources:
            for component in resource.calendar.walk("VEVENT"):
                if uid := component.get("UID"):
                    self._hrefs[str(uid)] = resource.url
        return resources

    async def _find(self, client: DeadlineDAVClient, calendar_url: str, uid: str) -> Resource | None:
        """The resource holding `uid`: where it was last seen, where we would have put it, else a search."""
        candidates = [self._hrefs.get(uid), calendar_url + quote(uid, safe="") + ".ics"]
        for url in dict.fromkeys(candidate for candidate in candidates if candidate):
            resource = await get_resource(client, url)
            if resource is not None and master_component(resource.calendar, uid) is not None:
                return resource
        # text-match is a substring match on most servers: the exact UID is checked on the results.
        for resource in await self._query(client, calendar_url, uid_filter(uid)):
            if master_component(resource.calendar, uid) is not None:
                return resource
        return None

    def _occurrences(
        self, resources: Iterable[Resource], start: datetime, end: datetime
    ) -> list[CalendarEvent]:
        """Every busy occurrence overlapping [start, end), recurring events expanded, sorted."""
        # Group by UID across resources: a few servers store a recurrence's exceptions separately.
        groups: dict[str, list[icalendar.cal.Component]] = {}
        timezones: dict[str, list[icalendar.cal.Component]] = {}
        for resource in resources:
            zones = list(resource.calendar.walk("VTIMEZONE"))
            for component in resource.calendar.walk("VEVENT"):
                uid = str(component.get("UID", "")) or f"<no uid in {resource.url}>"
                groups.setdefault(uid, []).append(component)
                timezones.setdefault(uid, []).extend(zones)
        window_start = (start - QUERY_MARGIN).astimezone(self.timezone)
        window_end = (end + QUERY_MARGIN).astimezone(self.timezone)
        events: dict[tuple[str, datetime], CalendarEvent] = {}
        for uid, components in groups.items():
            group = icalendar.Calendar()
            for component in [*unique_timezones(timezones[uid]), *components]:
                group.add_component(component)
            try:
                occurrences = list(recurring_ical_events.of(group).between(window_start, window_end))
            except Exception:
                # A rule we cannot expand must still make the owner busy at least where it starts.
                log.warning(
                    "could not expand recurring event %s; using its first occurrence", uid, exc_info=True
                )
                occurrences = components
            for occurrence in occurrences:
                event = vevent_to_event(occurrence, self.timezone)
                if event is not None and event.start < end and event.end > start:
                    events.setdefault((event.id, event.start), event)
        return sorted(events.values(), key=lambda event: (event.start, event.end, event.title, event.id))

    # -- errors ------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _failures_as_calendar_errors(self, action: str) -> AsyncIterator[None]:
        try:
            yield
        except CalendarError:
            raise
        except Exception as exc:
            log.debug("CalDAV %s failed", action, exc_info=True)
            message = f"CalDAV: {action} failed: {explain(exc, self._server, self.timeout)}"
            if self._password:
                message = message.replace(self._password, "***")
            # from None: the library's exception may quote server replies; the message says enough.
            raise CalendarError(message) from None


# -- helpers ---------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _utc_seconds(moment: datetime) -> datetime:
    # iCalendar has no sub-second times: what we return must equal what the server will give back.
    return moment.astimezone(UTC).replace(microsecond=0)


def _require_aware(*moments: datetime) -> None:
    for moment in moments:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"expected a timezone-aware datetime, got {moment.isoformat()}")


def _last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)
