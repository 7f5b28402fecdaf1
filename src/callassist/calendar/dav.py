"""Talking to a CalDAV server, for `caldav.CalDAVCalendar`: requests with one hard deadline each, the
calendar-query REPORT and GET that bring calendar object resources back parsed, the checks on what the
server answered, and any failure explained in a few words that name the server, never its credentials.

The `caldav` library's async client does transport, authentication and calendar discovery; the
queries are plain requests built here (RFC 4791).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

import icalendar
from caldav.async_davclient import AsyncDAVClient, DAVResponse
from caldav.lib import error as caldav_error

log = logging.getLogger(__name__)

ICS_HEADERS = {"Content-Type": "text/calendar; charset=utf-8"}
# RFC 4791 9.9 lets a server pick the zone for floating times and dates in a time-range filter, so
# the server is asked for a day more on each side and the exact [start, end) cut is made by the caller.
QUERY_MARGIN = timedelta(days=1)
_NAMESPACES = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'


class DeadlineDAVClient(AsyncDAVClient):
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


class UnexpectedReply(Exception):
    """The server answered, but not with what the request needed."""

    def __init__(self, status: int, reason: str | None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason or ""


@dataclass(frozen=True, slots=True)
class Resource:
    """One calendar object resource on the server: its URL, version and parsed content."""

    url: str
    etag: str | None
    calendar: icalendar.Calendar


# -- requests --------------------------------------------------------------------------------------


async def query(client: DeadlineDAVClient, calendar_url: str, vevent_filter: str) -> list[Resource]:
    """A calendar-query REPORT for VEVENTs matching `vevent_filter`: each resource, parsed."""
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><C:calendar-query {_NAMESPACES}>'
        "<D:prop><D:getetag/><C:calendar-data/></D:prop>"
        '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f"{vevent_filter}</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
    )
    response = await client.report(calendar_url, body, depth=1)
    if response.status not in (200, 207):
        raise UnexpectedReply(response.status, response.reason)
    resources: list[Resource] = []
    for result in response.parse_calendar_query():
        url = urljoin(calendar_url, result.href)
        if result.status >= 300 or url.rstrip("/") == calendar_url.rstrip("/"):
            continue
        if not result.calendar_data:
            # Some servers list hrefs without the data asked for; fetch those one by one.
            resource = await get_resource(client, url, skip_unreadable=True)
            if resource is not None:
                resources.append(resource)
            continue
        parsed = parse_calendar(result.calendar_data, url)
        if parsed is not None:
            resources.append(Resource(url, result.etag, parsed))
    return resources


async def get_resource(
    client: DeadlineDAVClient, url: str, *, skip_unreadable: bool = False
) -> Resource | None:
    """The resource at `url`, or None if there is none (or it is unreadable and may be skipped)."""
    response = await client.request(url, "GET")
    if response.status in (404, 410):
        return None
    expect_success(response)
    parsed = parse_calendar(response.raw, url)
    if parsed is None:
        if skip_unreadable:
            return None
        raise UnexpectedReply(response.status, "not an iCalendar object")
    return Resource(url, response.headers.get("ETag"), parsed)


def time_range_filter(start: datetime, end: datetime) -> str:
    return (
        f'<C:time-range start="{_utc_stamp(start - QUERY_MARGIN)}" end="{_utc_stamp(end + QUERY_MARGIN)}"/>'
    )


def uid_filter(uid: str) -> str:
    """A filter on the UID property (a substring match on most servers: check the results)."""
    return (
        '<C:prop-filter name="UID">'
        f'<C:text-match collation="i;octet">{escape(uid)}</C:text-match></C:prop-filter>'
    )


def _utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def expect_success(response: DAVResponse) -> None:
    if not 200 <= response.status < 300:
        raise UnexpectedReply(response.status, response.reason)


def if_match(resource: Resource) -> dict[str, str]:
    # A weak ETag can never satisfy If-Match (RFC 9110 13.1.1); without one the write is unconditional.
    if resource.etag and not resource.etag.startswith("W/"):
        return {"If-Match": resource.etag}
    return {}


def parse_calendar(data: str | bytes, url: str) -> icalendar.Calendar | None:
    try:
        calendar = icalendar.Calendar.from_ical(data)
    except Exception:
        # One broken object from some other app must not take the owner's whole calendar down.
        log.warning("skipping %s: not valid iCalendar", url, exc_info=True)
        return None
    return calendar if isinstance(calendar, icalendar.Calendar) else None


# -- failures --------------------------------------------------------------------------------------


def server_label(url: str) -> str:
    """host[:port] of the URL, never its userinfo: the only part of the URL error messages show."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def explain(exc: Exception, server: str, timeout: float) -> str:
    """Why a request to `server` (its label) failed, in a few words for the owner or a caller."""
    if _is_timeout(exc):
        return f"the calendar server at {server} did not answer within {timeout:g} s"
    if isinstance(exc, caldav_error.AuthorizationError):
        if exc.status == 403:
            return f"the calendar server at {server} refused access (HTTP 403)"
        return f"the calendar server at {server} rejected the username or password (HTTP 401)"
    if isinstance(exc, caldav_error.RateLimitError):
        return f"the calendar server at {server} is rate limiting requests; try again later"
    if isinstance(exc, UnexpectedReply):
        if exc.status == 412:
            return "the event changed on the server meanwhile (HTTP 412); try again"
        reason = f" {exc.reason}" if exc.reason and not exc.reason.isdigit() else ""
        return f"the calendar server at {server} answered HTTP {exc.status}{reason}"
    if isinstance(exc, caldav_error.DAVError):
        status = f" (HTTP {exc.status})" if exc.status else ""
        return f"the calendar server at {server} refused the request{status}"
    if isinstance(exc, OSError):  # niquests' and requests' errors are OSErrors too
        return f"could not reach the calendar server at {server}{_network_reason(exc)}"
    return f"unexpected reply from the calendar server at {server} ({type(exc).__name__})"


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
