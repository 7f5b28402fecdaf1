"""Calendar tools: check availability, book, and find / move / cancel the caller's own bookings.

Privacy: a caller only ever learns free or busy about the owner's time. Titles, attendees and
notes come back only for events that caller booked (matched by their phone number, which comes
from Twilio, never from the model), and the full agenda only on the owner's own calls.

One reason this module is a little over 400 lines: it is one job, the six calendar tools with their
argument models and prompt lines, which share those privacy rules and the helpers that enforce them.
The booking rules themselves (working hours, clashes, whose event it is) are `calendar.booking`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

from callassist.calendar.base import CalendarError, CalendarEvent, EventNotFound, NewEvent
from callassist.calendar.booking import BookingRefused, BookingService, NotYours, describe_free
from callassist.calendar.timeutil import (
    TimeError,
    iso,
    localize,
    parse_local_date,
    parse_local_datetime,
    spoken_day,
    spoken_duration,
)
from callassist.caller_text import NAME_CHARS, NOTES_CHARS, TITLE_CHARS, OneLine
from callassist.tools.identity import verification_possible
from callassist.tools.registry import (
    PromptContext,
    PromptLines,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    tool,
)

MAX_RANGE_DAYS = 14
DEFAULT_LOOKAHEAD_DAYS = 90


_DATE: JsonDict = {"format": "date"}  # YYYY-MM-DD (RFC 3339 full-date), which is what parse_local_date reads


class CheckAvailabilityArgs(BaseModel):
    date: str = Field(
        description="First day to check, YYYY-MM-DD, in {owner}'s time zone", json_schema_extra=_DATE
    )
    end_date: str | None = Field(
        default=None,
        description="Last day to check, inclusive, YYYY-MM-DD, for a range of days (at most 14); "
        "leave out to check one day",
        json_schema_extra=_DATE,
    )
    duration_minutes: int = Field(
        default=60, ge=5, le=480, description="Length of the meeting wanted, in minutes"
    )


class CreateEventArgs(BaseModel):
    # Title, name and notes come from what the caller said: normalised to one clean line (caller_text).
    title: OneLine = Field(
        min_length=1,
        max_length=TITLE_CHARS,
        description="Short title for the calendar, e.g. 'Call with Alex Kim'",
    )
    start: str = Field(
        description="Start, YYYY-MM-DDTHH:MM in {owner}'s local time, no offset, e.g. 2026-11-25T14:00"
    )
    duration_minutes: int | None = Field(
        default=None, ge=5, le=480, description="Length in minutes; leave out for 60, or give end instead"
    )
    end: str | None = Field(
        default=None, description="End, YYYY-MM-DDTHH:MM in {owner}'s local time, instead of a length"
    )
    caller_name: OneLine = Field(
        min_length=1,
        max_length=NAME_CHARS,
        description="The caller's name as they gave it (spelled as they spelled it)",
    )
    notes: OneLine | None = Field(
        default=None, max_length=NOTES_CHARS, description="What the meeting is about, if the caller said"
    )


class FindMyEventsArgs(BaseModel):
    from_date: str | None = Field(
        default=None, description="First day, YYYY-MM-DD; leave out for today", json_schema_extra=_DATE
    )
    to_date: str | None = Field(
        default=None, description="Last day, YYYY-MM-DD; leave out for 90 days ahead", json_schema_extra=_DATE
    )


class EventIdArgs(BaseModel):
    event_id: str = Field(min_length=1, max_length=200, description="The id from find_my_events")


class RescheduleEventArgs(BaseModel):
    event_id: str = Field(min_length=1, max_length=200, description="The id from find_my_events")
    start: str = Field(
        description="New start, YYYY-MM-DDTHH:MM in {owner}'s local time, no offset, e.g. 2026-11-26T10:00"
    )
    duration_minutes: int | None = Field(
        default=None, ge=5, le=480, description="New length in minutes; leave out to keep the current one"
    )


class AgendaArgs(BaseModel):
    date: str = Field(description="First day, YYYY-MM-DD", json_schema_extra=_DATE)
    end_date: str | None = Field(
        default=None,
        description="Last day, inclusive, YYYY-MM-DD (at most 14 days); leave out for one day",
        json_schema_extra=_DATE,
    )


def _booking(ctx: ToolContext) -> BookingService:
    booking: BookingService = ctx.services.booking
    return booking


def _slot(booking: BookingService, start: datetime) -> dict[str, str]:
    return {"start": iso(start, booking.zone), "spoken": booking.spoken(start)}


def _event(booking: BookingService, event: CalendarEvent, *, details: bool) -> dict[str, Any]:
    """An event as the model sees it: times always, what it is only if the caller may know."""
    shown: dict[str, Any] = {
        "start": iso(event.start, booking.zone),
        "end": iso(event.end, booking.zone),
        "spoken": booking.spoken(event.start),
        "duration": spoken_duration(event.end - event.start),
    }
    if details:
        shown = {"id": event.id, "title": event.title, **shown}
        if event.caller_name or event.caller_number:
            shown["booked_by"] = " ".join(filter(None, (event.caller_name, event.caller_number)))
        if event.notes:
            shown["notes"] = event.notes
    return shown


def _days(
    ctx: ToolContext, first_text: str | None, last_text: str | None, default_days: int
) -> tuple[Any, Any]:
    booking = _booking(ctx)
    try:
        first = parse_local_date(first_text) if first_text else booking.today()
        last = parse_local_date(last_text) if last_text else first + timedelta(days=default_days)
    except TimeError as exc:
        raise ToolError(str(exc)) from None
    if last < first:
        raise ToolError("The end date is before the start date.")
    return first, last


def _refusal(booking: BookingService, refused: BookingRefused) -> ToolError:
    alternatives = [_slot(booking, slot) for slot in refused.alternatives]
    say = refused.message
    if alternatives:
        options = [alternative["spoken"] for alternative in alternatives]
        say += (
            " Free instead: "
            + (", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else options[0])
            + "."
        )
    return ToolError(refused.message, reason=refused.reason, alternatives=alternatives, say=say)


def _require_own_number(ctx: ToolContext) -> str:
    """The caller's number, once it is known to be theirs (caller ID alone can be faked)."""
    if not ctx.caller_number:
        raise ToolError(
            "The caller's number is hidden, so their bookings can't be looked up. Offer to take a "
            "message instead."
        )
    if not (ctx.caller_verified or ctx.is_owner):
        owner = getattr(ctx.services, "owner_name", None) or "the owner"
        how = (
            "Offer to text a code to the phone they are calling from (send_verification_code) to confirm "
            "the number is theirs; if they can't or would rather not, take"
            if verification_possible(ctx)
            else "Take"
        )
        raise ToolError(
            "Bookings made from this number can only be looked up, moved or cancelled once the number is "
            f"confirmed to be the caller's. {how} a message for {owner} with the change they want.",
            needs_verification=True,
        )
    return ctx.caller_number


# Their part of the assistant's instructions: one "Calendar" rule, in the order the tools are declared.
CALENDAR = "Calendar"


def _check_availability_prompt(context: PromptContext) -> PromptLines:
    return PromptLines(
        topic=CALENDAR,
        lines=("Before proposing a time, call check_availability, then offer one or two times, not a list.",),
    )


def _create_event_prompt(context: PromptContext) -> PromptLines:
    name = "" if context.is_owner else " and have their name"
    return PromptLines(
        topic=CALENDAR,
        lines=(
            f"Before create_event, confirm the day, date, time and length with the caller{name}. After "
            "booking, say what was booked (day, date, time, length). If a time can't be booked, offer "
            "the free times the tool's answer gives.",
        ),
        offer="book a time",
        claim="a meeting is booked",
    )


def _find_my_events_prompt(context: PromptContext) -> PromptLines:
    lines = [
        "To move or cancel a booking, find it with find_my_events first and confirm with the caller "
        "before changing it."
    ]
    if not (context.is_owner or context.caller_verified):
        lines.append(
            "Caller ID can be faked: the caller's own bookings (and what their past calls were about) can "
            "be looked up, moved or cancelled only once their number is confirmed. If it can't be "
            f"confirmed, take a message for {context.owner} with the change they want."
        )
    return PromptLines(topic=CALENDAR, lines=tuple(lines))


def _agenda_prompt(context: PromptContext) -> PromptLines:
    if not context.is_owner:
        return PromptLines()  # owner-only: never offered to callers
    return PromptLines(
        topic=CALENDAR,
        lines=(f"When {context.owner} asks what is in their calendar, use get_my_agenda.",),
        discloses="get_my_agenda gives titles, who booked and notes",
    )


@tool(prompt=_check_availability_prompt)
async def check_availability(ctx: ToolContext, args: CheckAvailabilityArgs) -> dict[str, Any]:
    """Find when {owner} is free on a day or a range of days, inside {owner}'s working hours.
    Returns free times only: tell callers no more than free or busy about {owner}'s schedule."""
    booking = _booking(ctx)
    first, last = _days(ctx, args.date, args.end_date, 0)
    if (last - first).days >= MAX_RANGE_DAYS:
        raise ToolError(f"Check at most {MAX_RANGE_DAYS} days at a time.")
    try:
        days = await booking.availability(first, last)
    except CalendarError as exc:
        raise _unavailable(ctx, exc) from None
    duration = timedelta(minutes=args.duration_minutes)
    today = booking.today()
    described = [
        {
            "date": day.day.isoformat(),
            "day": spoken_day(day.day, today),
            "free": describe_free([(a, b) for a, b in day.free if b - a >= duration], booking.zone),
        }
        for day in days
    ]
    wanted = max(booking.now(), localize(datetime.combine(first, datetime.min.time()), booking.zone))
    suggestions = [
        slot
        for slot in await booking.alternatives(wanted, duration)
        if first <= slot.astimezone(booking.zone).date() <= last
    ]
    return {
        "days": described,
        "suggested_times": [_slot(booking, slot) for slot in suggestions],
        "working_hours": booking.hours.describe(),
    }


@tool(effects=True, prompt=_create_event_prompt, notice_label="Booked")
async def create_event(ctx: ToolContext, args: CreateEventArgs) -> dict[str, Any]:
    """Book a meeting with {owner} for this caller. Check availability first, and confirm the day,
    time and length with the caller before booking. If the time can't be booked, the answer says
    why and gives the nearest free times: offer those."""
    booking = _booking(ctx)
    try:
        start = parse_local_datetime(args.start, booking.zone, offsets_are_local_times=True)
        if args.end:
            end = parse_local_datetime(args.end, booking.zone, offsets_are_local_times=True)
        else:
            end = start + timedelta(minutes=args.duration_minutes or 60)
    except TimeError as exc:
        raise ToolError(str(exc)) from None
    new = NewEvent(
        title=args.title.strip(),
        start=start,
        end=end,
        caller_number=ctx.caller_number,
        caller_name=args.caller_name.strip(),
        notes=(args.notes or "").strip() or None,
    )
    try:
        event = await booking.book(new)
    except BookingRefused as refused:
        raise _refusal(booking, refused) from None
    except CalendarError as exc:
        raise _unavailable(ctx, exc) from None
    ctx.caller_name = new.caller_name
    shown = _event(booking, event, details=True)
    return {
        "event": shown,
        "say": f"Done: {shown['spoken']}, {shown['duration']}, with {ctx.services.owner_name}.",
    }


@tool(prompt=_find_my_events_prompt)
async def find_my_events(ctx: ToolContext, args: FindMyEventsArgs) -> dict[str, Any]:
    """List the meetings this caller booked with {owner} (found by the number they call from),
    with the ids needed to move or cancel them."""
    booking = _booking(ctx)
    number = _require_own_number(ctx)
    first, last = _days(ctx, args.from_date, args.to_date, DEFAULT_LOOKAHEAD_DAYS)
    try:
        events = await booking.caller_events(number, first, last)
    except CalendarError as exc:
        raise _unavailable(ctx, exc) from None
    return {"events": [_event(booking, event, details=True) for event in events]}


@tool(effects=True, notice_label="Cancelled")
async def cancel_event(ctx: ToolContext, args: EventIdArgs) -> dict[str, Any]:
    """Cancel one of this caller's own bookings. Confirm with the caller first."""
    booking = _booking(ctx)
    number = _require_own_number(ctx)
    try:
        event = await booking.cancel(args.event_id, number)
    except (EventNotFound, NotYours):
        raise ToolError(_not_found(args.event_id)) from None
    except CalendarError as exc:
        raise _unavailable(ctx, exc) from None
    shown = _event(booking, event, details=True)
    return {"cancelled": shown, "say": f"Cancelled: {shown['spoken']}."}


@tool(effects=True, notice_label="Moved")
async def reschedule_event(ctx: ToolContext, args: RescheduleEventArgs) -> dict[str, Any]:
    """Move one of this caller's own bookings to a new time (keeping its length unless told).
    If the new time can't be booked, the answer offers the nearest free times."""
    booking = _booking(ctx)
    number = _require_own_number(ctx)
    try:
        current = await booking.own_event(args.event_id, number)
        start = parse_local_datetime(args.start, booking.zone, offsets_are_local_times=True)
    except (EventNotFound, NotYours):
        raise ToolError(_not_found(args.event_id)) from None
    except TimeError as exc:
        raise ToolError(str(exc)) from None
    except CalendarError as exc:
        raise _unavailable(ctx, exc) from None
    duration = (
        timedelta(minutes=args.duration_minutes) if args.duration_minutes else current.end - current.start
    )
    try:
        before, after = await booking.reschedule(args.event_id, number, start, start + duration)
    except (EventNotFound, NotYours):
        raise ToolError(_not_found(args.event_id)) from None
    except BookingRefused as refused:
        raise _refusal(booking, refused) from None
    except CalendarError as exc:
        raise _unavailable(ctx, exc) from None
    moved = _event(booking, after, details=True)
    return {
        "event": moved,
        "say": f"Moved from {booking.spoken(before.start)} to {moved['spoken']}.",
    }


@tool(owner_only=True, prompt=_agenda_prompt)
async def get_my_agenda(ctx: ToolContext, args: AgendaArgs) -> dict[str, Any]:
    """Read {owner}'s own agenda with full details: titles, who booked, notes. Only on {owner}'s own
    calls; use it when {owner} asks what is in their calendar."""
    booking = _booking(ctx)
    first, last = _days(ctx, args.date, args.end_date, 0)
    if (last - first).days >= MAX_RANGE_DAYS:
        raise ToolError(f"Ask for at most {MAX_RANGE_DAYS} days at a time.")
    try:
        events = await booking.agenda(first, last)
    except CalendarError as exc:
        raise _unavailable(ctx, exc) from None
    return {"events": [_event(booking, event, details=True) for event in events]}


CALENDAR_TOOLS: tuple[Tool, ...] = (
    check_availability,
    create_event,
    find_my_events,
    cancel_event,
    reschedule_event,
    get_my_agenda,
)


def register_calendar_tools(registry: ToolRegistry) -> None:
    """Add the calendar tools to `registry` (for registries built tool by tool; see tools.all_tools)."""
    registry.add(*CALENDAR_TOOLS)


def _unavailable(ctx: ToolContext, exc: Exception) -> ToolError:
    # The details (server, account) are for the log, not for the caller or the model.
    ctx.logger.warning("calendar unavailable: %s", exc)
    owner = getattr(ctx.services, "owner_name", None) or "the owner"
    return ToolError(
        f"The calendar can't be reached right now. Apologise, and offer to take a message so {owner} "
        "can confirm a time."
    )


def _not_found(event_id: str) -> str:
    # Same answer whether it doesn't exist or belongs to someone else: existence is private too.
    return f"No booking {event_id!r} made from this phone number. Use find_my_events to get the right id."
