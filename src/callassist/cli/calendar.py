"""`callassist calendar`: the owner's calendar (list, add, export, feed-url)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from callassist.cli.common import console, errors, fail, run_on_database, settings_or_exit

if TYPE_CHECKING:
    from callassist.calendar.base import Calendar
    from callassist.settings import Settings

app = typer.Typer(help="The owner's calendar: list, add, export, feed-url.", no_args_is_help=True)


@asynccontextmanager
async def open_owner_calendar(settings: Settings) -> AsyncIterator[Calendar]:
    """The configured calendar backend, with the store migrated, for one CLI command."""
    from callassist.calendar.base import CalendarError
    from callassist.calendar.factory import open_calendar
    from callassist.store.db import Database

    database = Database.from_url(settings.database)
    try:
        await database.prepare()
        try:
            calendar = await open_calendar(settings, database, require=True)
        except CalendarError as exc:
            raise fail(f"calendar unavailable: {exc}") from None
        try:
            yield calendar
        finally:
            await calendar.close()
    finally:
        await database.close()


def _day_start(day: date, settings: Settings) -> datetime:
    from callassist.calendar.timeutil import localize

    return localize(datetime.combine(day, datetime.min.time()), settings.zone).astimezone(UTC)


def _parse_day(text: str | None, default: date) -> date:
    if text is None:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise fail(f"{text!r} is not a date (YYYY-MM-DD)", 2) from None


@app.command("list")
def calendar_list(
    from_date: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (default today)")
    ] = None,
    to_date: Annotated[
        str | None, typer.Option("--to", help="Last day, inclusive (default +30 days)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the owner's events (times in CALLASSIST_TIMEZONE)."""
    from callassist.calendar.timeutil import iso

    settings = settings_or_exit()
    today = settings.local_now().date()
    first = _parse_day(from_date, today)
    last = _parse_day(to_date, first + timedelta(days=30))

    async def listing() -> list[dict[str, object]]:
        async with open_owner_calendar(settings) as calendar:
            events = await calendar.events_between(
                _day_start(first, settings), _day_start(last + timedelta(days=1), settings)
            )
        return [
            {
                "id": event.id,
                "title": event.title,
                "start": iso(event.start, settings.zone),
                "end": iso(event.end, settings.zone),
                "all_day": event.all_day,
                "caller_number": event.caller_number,
                "caller_name": event.caller_name,
                "notes": event.notes,
            }
            for event in events
        ]

    events = run_on_database(listing(), "read the calendar")
    if as_json:
        typer.echo(json.dumps(events, indent=2))  # plain: rich would wrap long lines
        return
    if not events:
        console.print(f"No events from {first} to {last}.")
        return
    from rich.table import Table

    table = Table("When", "Title", "Booked by", box=None, pad_edge=False)
    for event in events:
        start = datetime.fromisoformat(str(event["start"]))
        end = datetime.fromisoformat(str(event["end"]))
        booked_by = " ".join(str(part) for part in (event["caller_name"], event["caller_number"]) if part)
        table.add_row(f"{start:%a %Y-%m-%d %H:%M}-{end:%H:%M}", str(event["title"]), booked_by)
    console.print(table)


@app.command("add")
def calendar_add(
    title: Annotated[str, typer.Option(help="What it is")],
    start: Annotated[str, typer.Option(help="Start, local time: 2026-11-25T14:00")],
    minutes: Annotated[int, typer.Option(help="Length in minutes")] = 60,
    notes: Annotated[str | None, typer.Option(help="Notes")] = None,
    caller_number: Annotated[str | None, typer.Option(help="Book it for this caller's number")] = None,
    caller_name: Annotated[str | None, typer.Option(help="The caller's name")] = None,
) -> None:
    """Add an event to the owner's calendar (the owner's own entry: no working-hours rules)."""
    from callassist.calendar.base import NewEvent
    from callassist.calendar.timeutil import TimeError, iso, parse_local_datetime

    settings = settings_or_exit()
    try:
        begins = parse_local_datetime(start, settings.zone)
    except TimeError as exc:
        raise fail(str(exc), 2) from None
    if not 1 <= minutes <= 24 * 60:
        raise fail("--minutes must be between 1 and 1440", 2)
    new = NewEvent(
        title=title,
        start=begins,
        end=begins + timedelta(minutes=minutes),
        caller_number=caller_number,
        caller_name=caller_name,
        notes=notes,
    )

    async def add() -> tuple[str, list[str]]:
        async with open_owner_calendar(settings) as calendar:
            clashes = await calendar.events_between(new.start, new.end)
            created = await calendar.create(new)
        return created.id, [f"{clash.title} ({iso(clash.start, settings.zone)})" for clash in clashes]

    event_id, clashes = run_on_database(add(), "add the event")
    console.print(
        f"Added {title!r} at {iso(new.start, settings.zone)} (id {event_id})", highlight=False, soft_wrap=True
    )
    for clash in clashes:
        errors.print(f"[yellow]note:[/] overlaps {clash}", highlight=False)


@app.command("export")
def calendar_export(
    from_date: Annotated[str | None, typer.Option("--from", help="First day (default 60 days ago)")] = None,
    to_date: Annotated[
        str | None, typer.Option("--to", help="Last day, inclusive (default +400 days)")
    ] = None,
) -> None:
    """Write the owner's calendar as iCalendar (RFC 5545): `callassist calendar export > cal.ics`."""
    from callassist.calendar.export import FUTURE, PAST, export_document

    settings = settings_or_exit()
    today = settings.local_now().date()
    first = _parse_day(from_date, today - PAST)
    last = _parse_day(to_date, today + FUTURE)

    async def export() -> bytes:
        async with open_owner_calendar(settings) as calendar:
            return await export_document(
                calendar,
                name=f"{settings.owner_name} (callassist)",
                start=_day_start(first, settings),
                end=_day_start(last + timedelta(days=1), settings),
                zone=settings.zone,
            )

    sys.stdout.buffer.write(run_on_database(export(), "export the calendar"))
    sys.stdout.buffer.flush()


@app.command("feed-url")
def calendar_feed_url() -> None:
    """Print the calendar feed's URL, to subscribe to from a calendar app. Its token is read-only
    (it opens the feed and nothing else) and changes when CALLASSIST_ADMIN_TOKEN does. Keep it
    private all the same: it shows your calendar to whoever has it."""
    from urllib.parse import quote

    from callassist.dashboard.auth import feed_token

    settings = settings_or_exit()
    token = feed_token(settings)
    url = settings.public_url.rstrip("/") + "/calendar.ics"
    if token is None:
        if not settings.local_only:
            raise fail("set CALLASSIST_ADMIN_TOKEN: the feed's token is derived from it")
        errors.print("[yellow]note:[/] no CALLASSIST_ADMIN_TOKEN: this URL works on this machine only")
        typer.echo(url)
        return
    typer.echo(f"{url}?token={quote(token, safe='')}")
