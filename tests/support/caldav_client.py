"""An independent CalDAV client for tests: plain HTTP, sharing no code with the backend under test."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from urllib.parse import urljoin

import aiohttp
import icalendar

_DAV = "{DAV:}"
_CALDAV = "{urn:ietf:params:xml:ns:caldav}"
_LIST_EVENTS = """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter>
</C:calendar-query>"""


class RawCalDAV:
    """Plain HTTP against the calendar collection, sharing no code with the backend under test."""

    def __init__(self, session: aiohttp.ClientSession, calendar_url: str) -> None:
        self.session = session
        self.calendar_url = calendar_url

    async def put(self, name: str, ics: str) -> None:
        async with self.session.put(
            self.calendar_url + name,
            data=ics.replace("\r\n", "\n").replace("\n", "\r\n").encode(),
            headers={"Content-Type": "text/calendar; charset=utf-8"},
        ) as response:
            assert response.status in (201, 204), await response.text()

    async def objects(self) -> dict[str, str]:
        """Every event resource in the calendar: URL -> its iCalendar text, as the server stores it."""
        async with self.session.request(
            "REPORT",
            self.calendar_url,
            data=_LIST_EVENTS.encode(),
            headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
        ) as response:
            assert response.status == 207, await response.text()
            tree = ElementTree.fromstring(await response.read())
        found: dict[str, str] = {}
        for item in tree.iter(f"{_DAV}response"):
            href = item.findtext(f"{_DAV}href")
            data = item.findtext(f".//{_CALDAV}calendar-data")
            if href and data:
                found[urljoin(self.calendar_url, href)] = data
        return found

    async def event(self, uid: str) -> icalendar.Event | None:
        """The VEVENT with this UID as stored on the server, or None."""
        for text in (await self.objects()).values():
            for component in icalendar.Calendar.from_ical(text).walk("VEVENT"):
                if str(component["UID"]) == uid:
                    return component
        return None

    async def raw_text(self, uid: str) -> str:
        for text in (await self.objects()).values():
            if f"UID:{uid}" in text.replace("\r\n ", ""):
                return text.replace("\r\n", "\n")
        raise AssertionError(f"{uid} is not on the server")
