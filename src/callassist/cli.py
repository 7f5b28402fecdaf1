"""The `callassist` command: run the server, and play a caller against it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from callassist.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from callassist.calendar.base import Calendar

app = typer.Typer(
    help="callassist: an AI phone assistant that answers your Twilio number when you can't.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise fail(str(exc), 2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on [CALLASSIST_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [CALLASSIST_PORT]")] = None,
) -> None:
    """Run the server that answers calls."""
    from callassist import server
    from callassist.observability import setup_logging

    settings = settings_or_exit(host=host, port=port)
    if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
        raise fail("OPENAI_API_KEY is not set: put it in the environment or in .env", 2)
    setup_logging(settings.log_level)
    server.run(settings)


@app.command()
def call(
    url: Annotated[str, typer.Option(help="Where the callassist server listens")] = "http://127.0.0.1:8000",
    say: Annotated[str | None, typer.Option(help="What the caller says (spoken with espeak-ng)")] = None,
    audio: Annotated[
        Path | None, typer.Option(help="A WAV file the caller plays instead of --say", exists=True)
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Save what the caller heard to this WAV file")] = None,
    seconds: Annotated[float, typer.Option(help="Hang up after this many seconds at most")] = 30.0,
    from_number: Annotated[str, typer.Option("--from", help="The caller's number")] = "+15551230000",
    to_number: Annotated[str, typer.Option("--to", help="The number dialled")] = "+15559870000",
    owner_answers: Annotated[bool, typer.Option(help="Pretend the owner picks up when rung")] = False,
) -> None:
    """Play Twilio and a caller against a running server, and report what happened.

    Signs requests with TWILIO_AUTH_TOKEN when it is set, as Twilio would (PUBLIC_BASE_URL tells
    which URL the server validates against).
    """
    from callassist.simulator.report import SimulatorError, run_call

    if say and audio:
        raise fail("give either --say or --audio, not both", 2)
    token = os.environ.get("TWILIO_AUTH_TOKEN") or None
    public = os.environ.get("PUBLIC_BASE_URL") or None
    try:
        asyncio.run(
            run_call(
                url,
                say=say,
                audio=audio,
                out=out,
                seconds=seconds,
                auth_token=token,
                public_base_url=public,
                from_number=from_number,
                to_number=to_number,
                owner_answers=owner_answers,
                console=console,
            )
        )
    except SimulatorError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


db_app = typer.Typer(help="The database: schema upgrades.", no_args_is_help=True)
calendar_app = typer.Typer(help="The owner's calendar: list, add, export.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(calendar_app, name="calendar")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database schema to the latest version (`serve` also does this on start)."""
    from callassist.store.db import Database

    settings = settings_or_exit()

    async def upgrade() -> None:
        database = Database.from_url(settings.database)
        try:
            revision = await database.upgrade()
            console.print(f"{database.url_for_display}: at revision {revision}", highlight=False)
        finally:
            await database.close()

    try:
        asyncio.run(upgrade())
    except Exception as exc:
        raise fail(f"could not upgrade the database: {exc}") from None


@asynccontextmanager
async def open_owner_calendar(settings: Settings) -> AsyncIterator[Calendar]:
    """The configured calendar backend, with the store migrated, for one CLI command."""
    from callassist.calendar.base import CalendarError
    from callassist.calendar.factory import open_calendar
    from callassist.store.db import Database

    database = Database.from_url(settings.database)
    try:
        await database.upgrade()
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


@calendar_app.command("list")
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

    events = asyncio.run(listing())
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


@calendar_app.command("add")
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

    event_id, clashes = asyncio.run(add())
    console.print(
        f"Added {title!r} at {iso(new.start, settings.zone)} (id {event_id})", highlight=False, soft_wrap=True
    )
    for clash in clashes:
        errors.print(f"[yellow]note:[/] overlaps {clash}", highlight=False)


@calendar_app.command("export")
def calendar_export(
    from_date: Annotated[str | None, typer.Option("--from", help="First day (default 60 days ago)")] = None,
    to_date: Annotated[
        str | None, typer.Option("--to", help="Last day, inclusive (default +400 days)")
    ] = None,
) -> None:
    """Write the owner's calendar as iCalendar (RFC 5545): `callassist calendar export > cal.ics`."""
    from callassist.dashboard.calendar_feed import export_document

    settings = settings_or_exit()
    today = settings.local_now().date()
    first = _parse_day(from_date, today - timedelta(days=60))
    last = _parse_day(to_date, today + timedelta(days=400))

    async def export() -> bytes:
        async with open_owner_calendar(settings) as calendar:
            return await export_document(
                calendar,
                name=f"{settings.owner_name} (callassist)",
                start=_day_start(first, settings),
                end=_day_start(last + timedelta(days=1), settings),
                zone=settings.zone,
            )

    sys.stdout.buffer.write(asyncio.run(export()))
    sys.stdout.buffer.flush()


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="callassist")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
