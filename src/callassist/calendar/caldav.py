"""The owner's real calendar over CalDAV: Google, iCloud, Fastmail, Nextcloud, Radicale and friends.

The `caldav` library's async client does transport, authentication and calendar discovery. The
queries, writes and recurrence expansion are done here, in a few plain requests, so that every
request has a deadline and every failure reaches the caller as a short `CalendarError`, never as
an event that silently went missing from a free/busy answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urljoin, urlsplit
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events
from caldav.async_davclient import AsyncDAVClient, DAVResponse
from caldav.lib import error as caldav_error

from callassist.calendar.base import CalendarError, CalendarEvent, EventNotFound, NewEvent
from callassist.calendar.ical import (
    CALLER_NAME_PROPERTY,
    CALLER_NUMBER_PROPERTY,
    booking_description,
    booking_line,
    event_to_vevent,
    new_uid,
    vcalendar,
    vevent_to_event,
    x_text,
)

log = logging.getLogger(__name__)

_ICS_HEADERS = {"Content-Type": "text/calendar; charset=utf-8"}
# RFC 4791 9.9 lets a server pick the zone for floating times and dates in a time-range filter, so
# the server is asked for a day more on each side and the exact [start, end) cut is made here.
_QUERY_MARGIN = timedelta(days=1)
_NAMESPACES = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'
_UTC_ZONE = ZoneInfo("UTC")


class _DeadlineDAVClient(AsyncDAVClient):
    """The library's async client with one hard deadline per request, auth negotiation included.

    niquests' own timeout bounds the connect and each read, not a server that trickles bytes or a
    request the library retries after probing for the auth scheme.
    """

    def __init__(self, *, deadline: float, **kwargs: Any) -> None:
        self.deadline = deadline
        super().__init__(**kwargs)

    async def request(
        self,
        url: str,
        method: str = "GET",
        body: str = "",
        headers: Mapping[str, str] | None = None,
        rate_limit_time_slept: float = 0,
    ) -> DAVResponse:
        async with asyncio.timeout(self.deadline):
            return await super().request(url, method, body, headers, rate_limit_time_slept)


class _UnexpectedReply(Exception):
    """The server answered, but not with what the request needed."""

    def __init__(self, status: int, reason: str | None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason or ""


@dataclass(frozen=True, slots=True)
class _Resource:
    """One calendar object resource on the server: its URL, version and parsed content."""

    url: str
    etag: str | None
    calendar: icalendar.Calendar


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
        self._server = _server_label(url)
        self._client: _DeadlineDAVClient | None = None
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
            resources = await self._query(client, calendar_url, _time_range_filter(start, end))
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
        master = _master_component(resource.calendar, event_id)
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
        _replace(
            vevent, "DESCRIPTION", booking_description(event.notes, event.caller_name, event.caller_number)
        )
        _replace(vevent, "LAST-MODIFIED", now)
        _replace(vevent, "SEQUENCE", 0)
        url = calendar_url + quote(booked.id, safe="") + ".ics"
        async with self._failures_as_calendar_errors("saving the event"):
            # No If-None-Match: a fresh uuid4 cannot collide, and Google refuses every If* but If-Match.
            body = vcalendar([vevent]).to_ical().decode()
            response = await client.put(url, body, _ICS_HEADERS)
            _expect_success(response)
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
            master = None if resource is None else _master_component(resource.calendar, event_id)
            if resource is None or master is None or vevent_to_event(master, self.timezone) is None:
                raise EventNotFound(f"no event with id {event_id}")
            now = _now()
            for name in ("DTSTART", "DTEND", "DURATION"):
                master.pop(name, None)
            master.add("DTSTART", _utc_seconds(start))
            master.add("DTEND", _utc_seconds(end))
            if title is not None:
                _replace(master, "SUMMARY", title)
            if notes is not None:
                _replace(master, "DESCRIPTION", _updated_description(master, notes))
            _replace(master, "SEQUENCE", _sequence(master) + 1)
            _replace(master, "LAST-MODIFIED", now)
            _replace(master, "DTSTAMP", now)
            body = resource.calendar.to_ical().decode()
            response = await client.put(resource.url, body, {**_ICS_HEADERS, **_if_match(resource)})
            _expect_success(response)
        self._hrefs[event_id] = resource.url
        updated = self._as_stored(body, event_id)
        assert updated is not None  # it converted before the move and end > start still holds
        return updated

    async def cancel(self, event_id: str) -> None:
        """Delete the event from the server."""
        client, calendar_url = await self._connected()
        async with self._failures_as_calendar_errors("cancelling the event"):
            resource = await self._find(client, calendar_url, event_id)
            master = None if resource is None else _master_component(resource.calendar, event_id)
            if resource is None or master is None or vevent_to_event(master, self.timezone) is None:
                raise EventNotFound(f"no event with id {event_id}")
            response = await client.delete(resource.url, _if_match(resource))
            if response.status in (404, 410):
                raise EventNotFound(f"no event with id {event_id}")
            _expect_success(response)
        self._hrefs.pop(event_id, None)

    def _as_stored(self, body: str, uid: str) -> CalendarEvent | None:
        """The event as the server will give it back: read from what was sent (escaping is lossy,
        e.g. a CRLF in a name is one line break in TEXT)."""
        master = _master_component(icalendar.Calendar.from_ical(body), uid)
        return None if master is None else vevent_to_event(master, self.timezone)

    # -- connecting --------------------------------------------------------------------------------

    async def _new_client(self) -> _DeadlineDAVClient:
        # A bare domain or e-mail address makes the constructor do RFC 6764 discovery, which blocks.
        return await asyncio.to_thread(
            partial(
                _DeadlineDAVClient,
                deadline=self.timeout,
                url=self._url,
                username=self.username,
                password=self._password,
                timeout=self.timeout,
                # A caller is waiting on the line: a rate-limited server is an error now, not a sleep.
                rate_limit_handle=False,
            )
        )

    async def _connected(self) -> tuple[_DeadlineDAVClient, str]:
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
        self, client: _DeadlineDAVClient, calendar_url: str, vevent_filter: str
    ) -> list[_Resource]:
        """A calendar-query REPORT for VEVENTs matching `vevent_filter`: each resource, parsed."""
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><C:calendar-query {_NAMESPACES}>'
            "<D:prop><D:getetag/><C:calendar-data/></D:prop>"
            '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
            f"{vevent_filter}</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
        )
        response = await client.report(calendar_url, body, depth=1)
        if response.status not in (200, 207):
            raise _UnexpectedReply(response.status, response.reason)
        resources: list[_Resource] = []
        for result in response.parse_calendar_query():
            url = urljoin(calendar_url, result.href)
            if result.status >= 300 or url.rstrip("/") == calendar_url.rstrip("/"):
                continue
            if not result.calendar_data:
                # Some servers list hrefs without the data asked for; fetch those one by one.
                resource = await self._get_resource(client, url, skip_unreadable=True)
                if resource is not None:
                    resources.append(resource)
                continue
            parsed = _parse_calendar(result.calendar_data, url)
            if parsed is not None:
                resources.append(_Resource(url, result.etag, parsed))
        for resource in resources:
            for component in resource.calendar.walk("VEVENT"):
                if uid := component.get("UID"):
                    self._hrefs[str(uid)] = resource.url
        return resources

    async def _get_resource(
        self, client: _DeadlineDAVClient, url: str, *, skip_unreadable: bool = False
    ) -> _Resource | None:
        """The resource at `url`, or None if there is none (or it is unreadable and may be skipped)."""
        response = await client.request(url, "GET")
        if response.status in (404, 410):
            return None
        _expect_success(response)
        parsed = _parse_calendar(response.raw, url)
        if parsed is None:
            if skip_unreadable:
                return None
            raise _UnexpectedReply(response.status, "not an iCalendar object")
        return _Resource(url, response.headers.get("ETag"), parsed)

    async def _find(self, client: _DeadlineDAVClient, calendar_url: str, uid: str) -> _Resource | None:
        """The resource holding `uid`: where it was last seen, where we would have put it, else a search."""
        candidates = [self._hrefs.get(uid), calendar_url + quote(uid, safe="") + ".ics"]
        for url in dict.fromkeys(candidate for candidate in candidates if candidate):
            resource = await self._get_resource(client, url)
            if resource is not None and _master_component(resource.calendar, uid) is not None:
                return resource
        # text-match is a substring match on most servers: the exact UID is checked on the results.
        uid_filter = (
            '<C:prop-filter name="UID">'
            f'<C:text-match collation="i;octet">{escape(uid)}</C:text-match></C:prop-filter>'
        )
        for resource in await self._query(client, calendar_url, uid_filter):
            if _master_component(resource.calendar, uid) is not None:
                return resource
        return None

    def _occurrences(
        self, resources: Iterable[_Resource], start: datetime, end: datetime
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
        window_start = (start - _QUERY_MARGIN).astimezone(self.timezone)
        window_end = (end + _QUERY_MARGIN).astimezone(self.timezone)
        events: dict[tuple[str, datetime], CalendarEvent] = {}
        for uid, components in groups.items():
            group = icalendar.Calendar()
            for component in [*_unique_timezones(timezones[uid]), *components]:
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
            message = f"CalDAV: {action} failed: {self._explain(exc)}"
            if self._password:
                message = message.replace(self._password, "***")
            # from None: the library's exception may quote server replies; the message says enough.
            raise CalendarError(message) from None

    def _explain(self, exc: Exception) -> str:
        if _is_timeout(exc):
            return f"the calendar server at {self._server} did not answer within {self.timeout:g} s"
        if isinstance(exc, caldav_error.AuthorizationError):
            if exc.status == 403:
                return f"the calendar server at {self._server} refused access (HTTP 403)"
            return f"the calendar server at {self._server} rejected the username or password (HTTP 401)"
        if isinstance(exc, caldav_error.RateLimitError):
            return f"the calendar server at {self._server} is rate limiting requests; try again later"
        if isinstance(exc, _UnexpectedReply):
            if exc.status == 412:
                return "the event changed on the server meanwhile (HTTP 412); try again"
            reason = f" {exc.reason}" if exc.reason and not exc.reason.isdigit() else ""
            return f"the calendar server at {self._server} answered HTTP {exc.status}{reason}"
        if isinstance(exc, caldav_error.DAVError):
            status = f" (HTTP {exc.status})" if exc.status else ""
            return f"the calendar server at {self._server} refused the request{status}"
        if isinstance(exc, OSError):  # niquests' and requests' errors are OSErrors too
            return f"could not reach the calendar server at {self._server}{_network_reason(exc)}"
        return f"unexpected reply from the calendar server at {self._server} ({type(exc).__name__})"


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


def _utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _time_range_filter(start: datetime, end: datetime) -> str:
    return (
        f'<C:time-range start="{_utc_stamp(start - _QUERY_MARGIN)}" end="{_utc_stamp(end + _QUERY_MARGIN)}"/>'
    )


def _server_label(url: str) -> str:
    """host[:port] of the URL, never its userinfo: the only part of the URL error messages show."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or any("Timeout" in cls.__name__ for cls in type(exc).__mro__)


def _network_reason(exc: BaseException) -> str:
    """A few words on why a connection failed, from the first cause that says so."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return " (connection refused)"
        text = str(current)
        if "Connection refused" in text:
            return " (connection refused)"
        if "Name or service not known" in text or "nodename nor servname" in text:
            return " (unknown host name)"
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return " (TLS certificate not trusted)"
        current = current.__cause__ or current.__context__
    return ""


def _expect_success(response: DAVResponse) -> None:
    if not 200 <= response.status < 300:
        raise _UnexpectedReply(response.status, response.reason)


def _if_match(resource: _Resource) -> dict[str, str]:
    # A weak ETag can never satisfy If-Match (RFC 9110 13.1.1); without one the write is unconditional.
    if resource.etag and not resource.etag.startswith("W/"):
        return {"If-Match": resource.etag}
    return {}


def _parse_calendar(data: str | bytes, url: str) -> icalendar.Calendar | None:
    try:
        calendar = icalendar.Calendar.from_ical(data)
    except Exception:
        # One broken object from some other app must not take the owner's whole calendar down.
        log.warning("skipping %s: not valid iCalendar", url, exc_info=True)
        return None
    return calendar if isinstance(calendar, icalendar.Calendar) else None


def _master_component(calendar: icalendar.Calendar, uid: str) -> icalendar.cal.Component | None:
    """The VEVENT with this UID that is not an override of one occurrence."""
    candidates = [component for component in calendar.walk("VEVENT") if str(component.get("UID", "")) == uid]
    for component in candidates:
        if "RECURRENCE-ID" not in component:
            return component
    return candidates[0] if candidates else None


def _unique_timezones(timezones: Iterable[icalendar.cal.Component]) -> list[icalendar.cal.Component]:
    unique: dict[str, icalendar.cal.Component] = {}
    for timezone in timezones:
        unique.setdefault(str(timezone.get("TZID", "")), timezone)
    return list(unique.values())


def _replace(component: icalendar.cal.Component, name: str, value: object) -> None:
    component.pop(name, None)
    component.add(name, value)


def _sequence(component: icalendar.cal.Component) -> int:
    try:
        return int(component.get("SEQUENCE", 0))
    except (TypeError, ValueError):
        return 0


def _updated_description(component: icalendar.cal.Component, notes: str) -> str:
    """New DESCRIPTION for `notes`: a phone booking keeps its line naming the caller."""
    caller_number = x_text(component, CALLER_NUMBER_PROPERTY)
    caller_name = x_text(component, CALLER_NAME_PROPERTY)
    old = str(component.get("DESCRIPTION", "")).rstrip()
    if caller_number or caller_name or old.endswith(booking_line(caller_name, caller_number)):
        return booking_description(notes, caller_name, caller_number)
    return notes
