"""iCalendar (RFC 5545) to and from `CalendarEvent`: pure functions, no I/O.

Shared by the CalDAV backend, `callassist calendar export` and the subscribable ICS feed. Reading is
lenient because the data comes from other people's calendar apps; writing is strict and always UTC.

Every value is written through icalendar's own types, which escape it: text (a caller's name, a
title, notes) can never end its content line or start another property or component. Our own
X- properties are written and read as TEXT, their default value type (RFC 5545 3.8.8.2).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo

import icalendar

from callassist.calendar.base import CalendarEvent


def _already_unescaped(val: str) -> str:
    return val


# icalendar's unescape_backslash has no return annotation, so both variants go through one typed name.
_unescape_text: Callable[[str], str]
try:  # icalendar >= 7.2 keeps unknown properties verbatim, escaped as they came
    from icalendar.parser import unescape_backslash

    _unescape_text = unescape_backslash
except ImportError:  # older icalendar unescaped them already
    _unescape_text = _already_unescaped

PRODID = "-//callassist//callassist//EN"
UID_DOMAIN = "callassist"
CALLER_NUMBER_PROPERTY = "X-CALLASSIST-CALLER-NUMBER"
CALLER_NAME_PROPERTY = "X-CALLASSIST-CALLER-NAME"
_BOOKED_BY_PHONE = "Booked by phone"


def new_uid() -> str:
    """A globally unique iCalendar UID for an event callassist creates."""
    return f"{uuid.uuid4()}@{UID_DOMAIN}"


def booking_line(caller_name: str | None, caller_number: str | None) -> str:
    """The line added to a booked event's description, so the owner sees who booked it."""
    who = " ".join(part for part in (caller_name, caller_number) if part)
    return f"{_BOOKED_BY_PHONE} by {who}." if who else f"{_BOOKED_BY_PHONE}."


def booking_description(notes: str | None, caller_name: str | None, caller_number: str | None) -> str:
    """DESCRIPTION of a phone booking: the caller's notes, then a line naming the caller."""
    line = booking_line(caller_name, caller_number)
    notes = (notes or "").strip()
    return f"{notes}\n\n{line}" if notes else line


def notes_from_description(
    description: str | None, caller_name: str | None, caller_number: str | None
) -> str | None:
    """The notes inside a DESCRIPTION: our own booking line is dropped so notes round-trip."""
    if not description:
        return None
    text = description.strip()
    line = booking_line(caller_name, caller_number)
    if text.endswith(line):
        text = text[: -len(line)].strip()
    return text or None


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {value.isoformat()}")
    return value.astimezone(UTC)


def event_to_vevent(
    event: CalendarEvent, *, zone: tzinfo | None = None, stamp: datetime | None = None
) -> icalendar.Event:
    """A VEVENT for `event`: UTC times (DATE values for all-day events), caller properties.

    All-day events are written as dates in `zone` when given, else in the zone their start carries.
    The booking line goes into DESCRIPTION only for events a caller booked.
    """
    if event.all_day:
        local_start = event.start.astimezone(zone) if zone else event.start
        local_end = event.end.astimezone(zone) if zone else event.end
        start: date | datetime = local_start.date()
        # DTEND is exclusive: an all-day event ending at local midnight ends on that date.
        end: date | datetime = (
            local_end.date() if local_end.time() == time(0) else local_end.date() + timedelta(1)
        )
        if end <= start:
            end = start + timedelta(days=1)
    else:
        start, end = _utc(event.start), _utc(event.end)
    booked = event.caller_number is not None or event.caller_name is not None
    description = (
        booking_description(event.notes, event.caller_name, event.caller_number) if booked else event.notes
    )
    vevent = icalendar.Event.new(
        uid=event.id,
        summary=event.title,
        description=description or None,
        start=start,
        end=end,
        stamp=_utc(stamp) if stamp else datetime.now(UTC).replace(microsecond=0),
        created=_utc(event.created_at).replace(microsecond=0) if event.created_at else None,
    )
    # vText, not the bare string: icalendar would write an unknown property's value verbatim, so a
    # line break in a name would end the line and whatever followed would be parsed as iCalendar.
    if event.caller_number:
        vevent.add(CALLER_NUMBER_PROPERTY, icalendar.vText(event.caller_number))
    if event.caller_name:
        vevent.add(CALLER_NAME_PROPERTY, icalendar.vText(event.caller_name))
    return vevent


def x_text(component: icalendar.cal.Component, name: str) -> str | None:
    """One of our X- properties (TEXT), unescaped, or None when absent or empty."""
    value = component.get(name)
    if isinstance(value, list):  # repeated where it shouldn't be: the first one wins
        value = value[0] if value else None
    if value is None:
        return None
    # A vText was unescaped when parsed (or never escaped: set here); anything else is verbatim.
    text = str(value) if isinstance(value, icalendar.vText) else _unescape_text(str(value))
    return text.strip() or None


def _text(component: icalendar.cal.Component, name: str) -> str | None:
    value = component.get(name)
    if value is None:
        return None
    if isinstance(value, list):  # a property repeated where it shouldn't be: the first one wins
        value = value[0] if value else None
    text = str(value).strip() if value is not None else ""
    return text or None


def _moment(value: date | datetime, zone: tzinfo) -> datetime:
    """A DATE-TIME or DATE as an aware datetime: floating times and dates are taken in `zone`."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=zone) if value.tzinfo is None else value
    # Midnight in the owner's zone, so an all-day event blocks the owner's whole local day.
    return datetime.combine(value, time(0), tzinfo=zone)


def _decoded(component: icalendar.cal.Component, name: str) -> object:
    try:
        return component.decoded(name)
    except (KeyError, ValueError, TypeError):
        return None


def takes_time(component: icalendar.cal.Component) -> bool:
    """Whether a VEVENT makes the owner busy: not cancelled and not marked transparent (free)."""
    status = (_text(component, "STATUS") or "").upper()
    transparency = (_text(component, "TRANSP") or "").upper()
    return status != "CANCELLED" and transparency != "TRANSPARENT"


def vevent_to_event(component: icalendar.cal.Component, zone: tzinfo) -> CalendarEvent | None:
    """The `CalendarEvent` for a VEVENT (or one expanded occurrence of it), or None when it takes no time.

    None for: cancelled or transparent events, a component that is not a VEVENT or has no UID or
    DTSTART, and events with no positive duration. Floating times and all-day dates are read in
    `zone`; all-day events come back as local midnights in `zone`, timed events in UTC.
    """
    if component.name != "VEVENT" or not takes_time(component):
        return None
    uid = _text(component, "UID")
    raw_start = _decoded(component, "DTSTART")
    if uid is None or not isinstance(raw_start, date):
        return None
    all_day = not isinstance(raw_start, datetime)
    raw_end = _decoded(component, "DTEND")
    duration = _decoded(component, "DURATION")
    start = _moment(raw_start, zone)
    if isinstance(raw_end, date):
        end = _moment(raw_end, zone)
    elif isinstance(duration, timedelta):
        # RFC 5545 3.3.6: a day-based DURATION of an all-day event counts calendar days, not hours.
        end = _moment(raw_start + timedelta(days=duration.days), zone) if all_day else start + duration
    else:
        # RFC 5545 3.6.1: with neither DTEND nor DURATION a dated event lasts one day, a timed one no time.
        end = _moment(raw_start + timedelta(days=1), zone) if all_day else start
    if end <= start:
        return None
    caller_number = x_text(component, CALLER_NUMBER_PROPERTY)
    caller_name = x_text(component, CALLER_NAME_PROPERTY)
    created = _decoded(component, "CREATED")
    return CalendarEvent(
        id=uid,
        title=_text(component, "SUMMARY") or "",
        start=start if all_day else start.astimezone(UTC),
        end=end if all_day else end.astimezone(UTC),
        all_day=all_day,
        caller_number=caller_number,
        caller_name=caller_name,
        notes=notes_from_description(_text(component, "DESCRIPTION"), caller_name, caller_number),
        created_at=_moment(created, UTC).astimezone(UTC) if isinstance(created, datetime) else None,
    )


# Editing a stored event -------------------------------------------------------------------------


def master_component(calendar: icalendar.Calendar, uid: str) -> icalendar.cal.Component | None:
    """The VEVENT with this UID that is not an override of one occurrence."""
    candidates = [component for component in calendar.walk("VEVENT") if str(component.get("UID", "")) == uid]
    for component in candidates:
        if "RECURRENCE-ID" not in component:
            return component
    return candidates[0] if candidates else None


def unique_timezones(timezones: Iterable[icalendar.cal.Component]) -> list[icalendar.cal.Component]:
    unique: dict[str, icalendar.cal.Component] = {}
    for timezone in timezones:
        unique.setdefault(str(timezone.get("TZID", "")), timezone)
    return list(unique.values())


def replace_property(component: icalendar.cal.Component, name: str, value: object) -> None:
    component.pop(name, None)
    component.add(name, value)


def sequence_number(component: icalendar.cal.Component) -> int:
    try:
        return int(component.get("SEQUENCE", 0))
    except (TypeError, ValueError):
        return 0


def updated_description(component: icalendar.cal.Component, notes: str) -> str:
    """New DESCRIPTION for `notes`: a phone booking keeps its line naming the caller."""
    caller_number = x_text(component, CALLER_NUMBER_PROPERTY)
    caller_name = x_text(component, CALLER_NAME_PROPERTY)
    old = str(component.get("DESCRIPTION", "")).rstrip()
    if caller_number or caller_name or old.endswith(booking_line(caller_name, caller_number)):
        return booking_description(notes, caller_name, caller_number)
    return notes


def vcalendar(
    components: Iterable[icalendar.cal.Component], *, name: str | None = None
) -> icalendar.Calendar:
    """A VCALENDAR with our PRODID around `components` (and the calendar's name, when given)."""
    document = icalendar.Calendar()
    document.add("PRODID", PRODID)
    document.add("VERSION", "2.0")
    document.add("CALSCALE", "GREGORIAN")
    if name:
        # NAME is RFC 7986; X-WR-CALNAME is what Apple, Google and Outlook show for a subscription.
        document.add("NAME", icalendar.vText(name))
        document.add("X-WR-CALNAME", icalendar.vText(name))
    for component in components:
        document.add_component(component)
    return document


def calendar_document(events: Iterable[CalendarEvent], *, name: str, zone: tzinfo | None = None) -> bytes:
    """A complete VCALENDAR (PRODID, VERSION, one VEVENT per event), e.g. for export or an ICS feed.

    Times are UTC and all-day events are dates, so the document needs no VTIMEZONE.
    """
    stamp = datetime.now(UTC).replace(microsecond=0)
    return vcalendar(
        (event_to_vevent(event, zone=zone, stamp=stamp) for event in events), name=name
    ).to_ical()
