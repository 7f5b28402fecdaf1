"""The `callassist` command: run the server, and play a caller against it."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from callassist.settings import DEFAULT_PORT, Settings, SettingsError, env_file_values, load_settings

if TYPE_CHECKING:
    from callassist.calendar.base import Calendar
    from callassist.store.db import Database
    from callassist.store.records import CallDetail, NoticeRecord

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
    # Like any other bad setting, a database that can't be used stops the start in one line.
    run_on_database(_prepare_database(settings), "open the database")
    setup_logging(settings.log_level)
    running = server.build_server(settings)
    running.run()
    if not running.started:
        raise fail("the server did not start (see the log above)")


async def _prepare_database(settings: Settings) -> None:
    from callassist.store.db import Database

    database = Database.from_url(settings.database)
    try:
        await database.prepare()
    finally:
        await database.close()


def _call_settings() -> tuple[str, int, str | None, str | None, str | None]:
    """(host, port, Twilio auth token, public base URL, account SID) as `serve` sees them: from
    Settings (the environment and the .env files), or, when settings that have nothing to do with
    calling are invalid, from those values alone, with a one-line warning."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        names = (
            "CALLASSIST_HOST", "CALLASSIST_PORT", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL",
            "TWILIO_ACCOUNT_SID",
        )  # fmt: skip
        raw = {name: value.strip() for name, value in env_file_values(*names).items()}
        errors.print(
            f"[yellow]warning:[/] `serve` would refuse this configuration ({exc}); "
            "calling with CALLASSIST_PORT, TWILIO_AUTH_TOKEN and PUBLIC_BASE_URL as they are",
            highlight=False,
            soft_wrap=True,
        )
        port_text = raw.get("CALLASSIST_PORT") or str(DEFAULT_PORT)
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise fail(f"CALLASSIST_PORT: {port_text!r} is not a port number (1-65535)", 2) from None
        return (
            raw.get("CALLASSIST_HOST") or "127.0.0.1",
            int(port_text),
            raw.get("TWILIO_AUTH_TOKEN") or None,
            (raw.get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
            raw.get("TWILIO_ACCOUNT_SID") or None,
        )
    return (
        settings.host,
        settings.port,
        settings.signature_token,
        settings.public_base_url,
        settings.twilio_account_sid,
    )


def _local_url(host: str, port: int) -> str:
    """Where a server listening on host:port is reached from this machine."""
    if host in ("", "0.0.0.0", "::", "[::]"):  # all interfaces: loopback is one of them
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


@app.command()
def call(
    url: Annotated[
        str | None,
        typer.Option(help="Where the callassist server listens (default: the port `serve` uses)"),
    ] = None,
    say: Annotated[str | None, typer.Option(help="What the caller says (spoken with espeak-ng)")] = None,
    audio: Annotated[
        Path | None, typer.Option(help="A WAV file the caller plays instead of --say", exists=True)
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Save what the caller heard to this WAV file")] = None,
    seconds: Annotated[float, typer.Option(help="Hang up after this many seconds at most")] = 60.0,
    from_number: Annotated[str, typer.Option("--from", help="The caller's number")] = "+15551230000",
    to_number: Annotated[str, typer.Option("--to", help="The number dialled")] = "+15559870000",
    owner_answers: Annotated[bool, typer.Option(help="Pretend the owner picks up when rung")] = False,
) -> None:
    """Play Twilio and a caller against a running server, and report what happened.

    Reads the environment and .env as `serve` does: the port, TWILIO_AUTH_TOKEN (to sign requests
    as Twilio would) and PUBLIC_BASE_URL (the URL signatures are computed on).
    """
    from callassist.simulator.report import SimulatorError, run_call

    if say and audio:
        raise fail("give either --say or --audio, not both", 2)
    host, port, token, public, account_sid = _call_settings()
    try:
        asyncio.run(
            run_call(
                url or _local_url(host, port),
                say=say,
                audio=audio,
                out=out,
                seconds=seconds,
                auth_token=token,
                public_base_url=public,
                account_sid=account_sid,  # a server with TWILIO_ACCOUNT_SID refuses any other
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
calendar_app = typer.Typer(help="The owner's calendar: list, add, export, feed-url.", no_args_is_help=True)
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
            revision = await database.prepare()
            console.print(f"{database.url_for_display}: at revision {revision}", highlight=False)
        finally:
            await database.close()

    run_on_database(upgrade(), "upgrade the database")


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

    event_id, clashes = run_on_database(add(), "add the event")
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

    sys.stdout.buffer.write(run_on_database(export(), "export the calendar"))
    sys.stdout.buffer.flush()


@calendar_app.command("feed-url")
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


# Call records: calls, messages, notices, contacts ------------------------------------------------

calls_app = typer.Typer(help="Calls the assistant answered: list, show one.", no_args_is_help=True)
messages_app = typer.Typer(help="Messages callers left for the owner.", no_args_is_help=True)
notices_app = typer.Typer(
    help="Notices sent to the owner (SMS, e-mail) and whether they arrived.", no_args_is_help=True
)
contacts_app = typer.Typer(help="People the assistant greets by name.", no_args_is_help=True)
app.add_typer(calls_app, name="calls")
app.add_typer(messages_app, name="messages")
app.add_typer(notices_app, name="notices")
app.add_typer(contacts_app, name="contacts")

_T = TypeVar("_T")


@asynccontextmanager
async def open_records(settings: Settings) -> AsyncIterator[Database]:
    """The configured database, migrated, for one CLI command."""
    from callassist.store.db import Database

    database = Database.from_url(settings.database)
    try:
        await database.prepare()
        yield database
    finally:
        await database.close()


def run_on_database(work: Coroutine[Any, Any, _T], doing: str = "read the database") -> _T:
    """asyncio.run(work), a database failure turned into one line on stderr (exit status 1)."""
    from sqlalchemy.exc import SQLAlchemyError

    from callassist.store.db import DatabaseUnavailable, DatabaseUrlError, describe_failure

    try:
        return asyncio.run(work)
    except DatabaseUnavailable as exc:  # which database (password masked) and why, in one line
        raise fail(f"could not {doing}: {exc.database}: {exc.reason}") from None
    except DatabaseUrlError as exc:
        raise fail(str(exc)) from None
    except (SQLAlchemyError, OSError) as exc:
        # A DBAPIError's own text appends the SQL and parameters; the driver's message is enough.
        raise fail(f"could not {doing}: {describe_failure(exc)}") from None


def _echo_json(body: object) -> None:
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False))  # plain: rich would wrap long lines


def _local(moment: datetime, settings: Settings, spec: str = "%a %Y-%m-%d %H:%M") -> str:
    return moment.astimezone(settings.zone).strftime(spec)


def _local_since(moment: datetime, since: datetime, settings: Settings) -> str:
    """`moment` local: the time alone on the (local) day of `since`, else with its date."""
    same_day = moment.astimezone(settings.zone).date() == since.astimezone(settings.zone).date()
    return _local(moment, settings, "%H:%M" if same_day else "%a %Y-%m-%d %H:%M")


def _seconds(total: float | None) -> str:
    if total is None:
        return "-"
    minutes, seconds = divmod(round(total), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _who(name: str | None, number: str | None) -> str:
    return " ".join(part for part in (name, number) if part) or "unknown caller"


def _shorten(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _terminal_safe(text: str) -> str:
    """Stored text as one line a terminal prints and never obeys: whitespace runs become one space
    (as the outbox stores a reason), any other control or format character is shown escaped."""
    import unicodedata

    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in ("Cc", "Cf") else char
        for char in " ".join(text.split())
    )


_NOTICE_STYLES = {"failed": "bold red", "pending": "yellow", "sent": "green"}


def _attempts(count: int) -> str:
    return f"{count} attempt{'s' if count != 1 else ''}"


@calls_app.command("list")
def calls_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /api/calls)")] = False,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many calls, newest first")] = 50,
    caller: Annotated[str | None, typer.Option(help="Only calls from this number")] = None,
    before: Annotated[
        str | None,
        typer.Option(help="Only calls started before this time (local, or next_before from --json)"),
    ] = None,
) -> None:
    """List the calls the assistant answered, newest first (times in CALLASSIST_TIMEZONE)."""
    from decimal import Decimal

    from rich.text import Text

    from callassist.calendar.timeutil import TimeError, parse_local_datetime
    from callassist.dashboard.serialize import calls_json
    from callassist.store.contacts import phone_for_lookup
    from callassist.store.records import CallSummary, list_calls

    settings = settings_or_exit()
    try:
        started_before = parse_local_datetime(before, settings.zone) if before else None
    except TimeError as exc:
        raise fail(str(exc), 2) from None

    async def listing() -> list[CallSummary]:
        async with open_records(settings) as database, database.session(read_only=True) as session:
            return await list_calls(
                session,
                limit=limit,
                before=started_before,
                caller=phone_for_lookup(caller) if caller else None,
            )

    calls = run_on_database(listing())
    if as_json:
        _echo_json(calls_json(calls, settings.zone, limit=limit))
        return
    if not calls:
        console.print("No calls yet." if caller is None else f"No calls from {caller}.", highlight=False)
        return
    from rich.padding import Padding

    # Blocks, not a table: a summary and a 34-character sid don't fit beside the rest in 80 columns.
    for call in calls:
        outcome = call.outcome or ("in progress" if call.ended_at is None else "-")
        console.print(
            Text.assemble(
                (_local(call.started_at, settings), "bold"),
                "  ",
                _who(call.caller_name, call.caller_number),
                f"  {_seconds(call.duration_s)}  {outcome}  ",
                f"${call.cost_usd.quantize(Decimal('0.0001'))}",
            )
        )
        notes = []
        if call.follow_up:
            notes.append("follow-up")
        if call.urgency and call.urgency not in ("low", "normal"):
            notes.append(call.urgency)
        if call.message_count:
            notes.append(f"{call.message_count} message{'s' if call.message_count != 1 else ''}")
        if call.booking_count:
            notes.append(f"{call.booking_count} booking{'s' if call.booking_count != 1 else ''}")
        summary = " ".join(filter(None, (call.summary, f"({', '.join(notes)})" if notes else None)))
        if summary:
            console.print(Padding(Text(summary), (0, 0, 0, 2), expand=False))
        console.print(Padding(Text(call.call_sid, style="dim"), (0, 0, 0, 2), expand=False))


@calls_app.command("show")
def calls_show(
    call_sid: Annotated[str, typer.Argument(help="The call's Twilio CallSid (CA...)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /api/calls/<sid>)")] = False,
) -> None:
    """Show one call: who, when, cost, latency, summary, transcript, tool calls, messages, notices."""
    from callassist.dashboard.serialize import call_detail_json
    from callassist.store.records import get_call

    settings = settings_or_exit()

    async def fetch() -> CallDetail | None:
        async with open_records(settings) as database, database.session(read_only=True) as session:
            return await get_call(session, call_sid)

    detail = run_on_database(fetch())
    if detail is None:
        raise fail(f"no call {call_sid!r} (see `callassist calls list`)")
    if as_json:
        _echo_json(call_detail_json(detail, settings.zone))
        return
    _print_call(detail, settings)


def _print_call(detail: CallDetail, settings: Settings) -> None:
    from decimal import Decimal

    from rich.table import Table
    from rich.text import Text

    call = detail.call
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    caller = _who(call.caller_name, call.caller_number)
    if detail.called_number:
        caller += f" -> {detail.called_number}"
    if detail.is_owner:
        caller += " (the owner)"
    header.add_row("Call", Text(f"{call.call_sid}  from {caller}"))
    when = _local(call.started_at, settings, "%a %Y-%m-%d %H:%M:%S %Z")
    if call.ended_at is not None:
        when += f", ended {_local(call.ended_at, settings, '%H:%M:%S')} ({_seconds(call.duration_s)})"
    else:
        when += ", not ended"
    header.add_row("When", when)
    outcome = [call.outcome or "-"]
    if detail.dial_status:
        outcome.append(f"owner's phone: {detail.dial_status}")
    if call.follow_up:
        outcome.append("follow-up needed")
    if call.urgency:
        outcome.append(f"urgency {call.urgency}")
    if detail.reconnects:
        outcome.append(f"{detail.reconnects} reconnect{'s' if detail.reconnects != 1 else ''}")
    header.add_row("Outcome", Text("; ".join(outcome)))
    cost = f"${call.cost_usd.quantize(Decimal('0.000001'))}"
    if detail.model:
        cost += f" ({detail.model})"
    header.add_row("Cost", cost)
    latency = detail.latency
    figures = []
    if latency.greeting_ms is not None:
        figures.append(f"greeting {latency.greeting_ms} ms")
    if latency.turns_ms:
        count = len(latency.turns_ms)
        figures.append(
            f"turns: average {latency.average_ms:.0f} ms, p50 {latency.p50_ms} ms, "
            f"max {latency.max_ms} ms ({count} turn{'s' if count != 1 else ''})"
        )
    header.add_row("Latency", "; ".join(figures) or "-")
    if latency.turns_ms:
        # Each answer, in order: caller went quiet -> first audio of the answer (as `callassist call` prints).
        header.add_row("Turn latency", ", ".join(f"{ms} ms" for ms in latency.turns_ms))
    if call.summary:
        header.add_row("Summary", Text(call.summary))
    if detail.reason:
        header.add_row("Reason", Text(detail.reason))
    console.print(header)

    # Tool calls go inline, where they happened in the conversation; a grid keeps wrapped text
    # indented under its own column.
    lines: list[tuple[datetime, str, Text, Text]] = []
    for entry in detail.transcript:
        text = Text(entry.text)
        if entry.interrupted:
            heard = f" after {entry.heard_ms / 1000:.1f} s" if entry.heard_ms is not None else ""
            text.append(f" (interrupted{heard})", style="yellow")
        role = Text(entry.role.capitalize(), style="bold cyan" if entry.role == "assistant" else "bold")
        lines.append((entry.spoken_at, _local(entry.spoken_at, settings, "%H:%M:%S"), role, text))
    for tool in detail.tool_calls:
        text = Text.assemble(
            f"{tool.name} ",
            ("ok", "green") if tool.ok else ("failed", "red"),
            f" {tool.duration_ms} ms  ",
            _shorten(json.dumps(tool.arguments, ensure_ascii=False)),
            " -> ",
            _shorten(json.dumps(tool.result, ensure_ascii=False)),
        )
        started = _local(tool.started_at, settings, "%H:%M:%S")
        lines.append((tool.started_at, started, Text("Tool", style="bold magenta"), text))
    console.print()
    console.print("[bold]Transcript[/]")
    if not lines:
        console.print("(nothing was said)")
    else:
        transcript = Table.grid(padding=(0, 2))
        transcript.add_column(style="dim", no_wrap=True)
        transcript.add_column(no_wrap=True)
        transcript.add_column()
        for _, clock, who, said in sorted(lines, key=lambda line: line[0]):
            transcript.add_row(clock, who, said)
        console.print(transcript)

    if detail.messages:
        console.print()
        console.print("[bold]Messages[/]")
        for message in detail.messages:
            console.print(
                Text(f"[{message.urgency}] {_who(message.caller_name, message.caller_number)}: "),
                Text(message.message),
                Text(f" (call back on {message.callback_number})" if message.callback_number else ""),
                sep="",
            )

    if detail.notices:
        notices = Table(
            "Channel", "To", "Status", "Attempts", "Last error",
            title="Notices", title_justify="left", title_style="bold", box=None, pad_edge=False,
        )  # fmt: skip
        for notice in detail.notices:
            notices.add_row(
                notice.channel,
                Text(notice.recipient),
                Text(notice.status, style=_NOTICE_STYLES.get(notice.status, "")),
                str(notice.attempts),
                Text(_terminal_safe(notice.last_error or "")),
            )
        console.print()
        console.print(notices)

    if detail.usage:
        usage = Table(
            "Kind", "Model", "Text", "Audio", "Cached", "Cost",
            title="Usage (tokens in/out)", title_justify="left", title_style="bold", box=None,
            pad_edge=False,
        )  # fmt: skip
        for record in detail.usage:
            kind = record.kind if record.purpose is None else f"{record.kind} ({record.purpose})"
            if record.seconds is not None:
                kind += f" {record.seconds:.1f} s"
            usage.add_row(
                Text(kind),
                Text(record.model),
                f"{record.text_in}/{record.text_out}",
                f"{record.audio_in}/{record.audio_out}",
                str(record.cached_text + record.cached_audio),
                f"${record.cost_usd.quantize(Decimal('0.000001'))}",
            )
        usage.add_row("Total", "", "", "", "", f"${call.cost_usd.quantize(Decimal('0.000001'))}")
        console.print()
        console.print(usage)


@messages_app.command("list")
def messages_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /api/messages)")] = False,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many messages, newest first")] = 50,
) -> None:
    """List the messages callers left, newest first."""
    from rich.text import Text

    from callassist.dashboard.serialize import messages_json
    from callassist.store.records import MessageRecord, list_messages

    settings = settings_or_exit()

    async def listing() -> list[MessageRecord]:
        async with open_records(settings) as database, database.session(read_only=True) as session:
            return await list_messages(session, limit=limit)

    messages = run_on_database(listing())
    if as_json:
        _echo_json(messages_json(messages, settings.zone))
        return
    if not messages:
        console.print("No messages.")
        return
    from rich.padding import Padding

    for message in messages:
        head = Text.assemble(
            (_local(message.created_at, settings), "bold"),
            "  ",
            _who(message.caller_name, message.caller_number),
            "  ",
            (message.urgency, "bold red" if message.urgency in ("high", "urgent") else ""),
        )
        if message.callback_number:
            head.append(f"  call back on {message.callback_number}")
        console.print(head)
        console.print(Padding(Text(message.message), (0, 0, 0, 2), expand=False))


@notices_app.command("list")
def notices_list(
    failed: Annotated[bool, typer.Option("--failed", help="Only the notices that failed for good")] = False,
    status: Annotated[
        str | None, typer.Option(help="Only notices with this status: pending, sent or failed")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /api/notices)")] = False,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many notices, newest first")] = 50,
) -> None:
    """List the notices sent to the owner and their delivery, newest first (CALLASSIST_TIMEZONE).

    A failed notice will never arrive; it shows the reason it was given up, as stored.
    """
    from rich.padding import Padding
    from rich.text import Text

    from callassist.dashboard.serialize import notices_json
    from callassist.store.records import NOTICE_STATUSES, list_notices

    if status is not None and status not in NOTICE_STATUSES:
        raise fail(f"--status must be one of: {', '.join(NOTICE_STATUSES)}", 2)
    if failed and status not in (None, "failed"):
        raise fail(f"--failed and --status {status} contradict each other", 2)
    wanted = "failed" if failed else status
    settings = settings_or_exit()

    async def listing() -> list[NoticeRecord]:
        async with open_records(settings) as database, database.session(read_only=True) as session:
            return await list_notices(session, status=wanted, limit=limit)

    notices = run_on_database(listing())
    if as_json:
        _echo_json(notices_json(notices, settings.zone))
        return
    if not notices:
        console.print("No notices." if wanted is None else f"No {wanted} notices.", highlight=False)
        return
    for notice in notices:
        state = notice.status
        if notice.sent_at is not None:
            state += f" {_local_since(notice.sent_at, notice.created_at, settings)}"
        elif notice.next_attempt_at is not None:
            state += f" (next try {_local_since(notice.next_attempt_at, notice.created_at, settings)})"
        head = Text.assemble(
            (_local(notice.created_at, settings), "bold"),
            f"  {notice.channel} to ",
            notice.recipient,
            "  ",
            (state, _NOTICE_STYLES.get(notice.status, "")),
            f"  {_attempts(notice.attempts)}",
        )
        console.print(head)
        if notice.last_error:
            reason = Text.assemble(("last error: ", "dim"), _terminal_safe(notice.last_error))
            console.print(Padding(reason, (0, 0, 0, 2), expand=False))
        about = f"call {notice.call_sid}" if notice.call_sid else "no call"
        console.print(Padding(Text(about, style="dim"), (0, 0, 0, 2), expand=False))


def _phone_or_exit(number: str) -> str:
    from callassist.store.contacts import normalize_phone

    try:
        return normalize_phone(number)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


@contacts_app.command("add")
def contacts_add(
    number: Annotated[str, typer.Argument(help="Their number, with country code: +15551234567")],
    name: Annotated[str, typer.Argument(help="How the assistant should call them")],
    note: Annotated[str | None, typer.Option(help="Something the assistant should know")] = None,
) -> None:
    """Add a contact, or update the name and note of an existing one."""
    from callassist.store.contacts import Contact, ContactRepository

    settings = settings_or_exit()
    phone = _phone_or_exit(number)
    if not name.strip():
        raise fail("the contact's name is empty", 2)

    async def save() -> Contact:
        async with open_records(settings) as database, database.session() as session:
            return await ContactRepository(session).upsert(phone, name, note)

    contact = run_on_database(save(), "save the contact")
    console.print(f"Saved {contact.name} ({contact.phone})", highlight=False, markup=False)


@contacts_app.command("list")
def contacts_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /api/contacts)")] = False,
) -> None:
    """List the contacts, by name."""
    from rich.table import Table
    from rich.text import Text

    from callassist.dashboard.serialize import contacts_json
    from callassist.store.contacts import Contact, ContactRepository

    settings = settings_or_exit()

    async def listing() -> list[Contact]:
        async with open_records(settings) as database, database.session(read_only=True) as session:
            return await ContactRepository(session).list()

    contacts = run_on_database(listing())
    if as_json:
        _echo_json(contacts_json(contacts, settings.zone))
        return
    if not contacts:
        console.print("No contacts. Add one: callassist contacts add +15551234567 'Alex Chen'", markup=False)
        return
    table = Table("Number", "Name", "Note", box=None, pad_edge=False)
    for contact in contacts:
        table.add_row(contact.phone, Text(contact.name), Text(contact.note or ""))
    console.print(table)


@contacts_app.command("remove")
def contacts_remove(
    number: Annotated[str, typer.Argument(help="The contact's number")],
) -> None:
    """Forget a contact (their past calls stay in the records)."""
    from callassist.store.contacts import ContactRepository

    settings = settings_or_exit()
    phone = _phone_or_exit(number)

    async def remove() -> bool:
        async with open_records(settings) as database, database.session() as session:
            return await ContactRepository(session).remove(phone)

    if not run_on_database(remove(), "remove the contact"):
        raise fail(f"no contact with the number {phone}")
    console.print(f"Removed {phone}", highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="callassist")


if __name__ == "__main__":  # pragma: no cover
    main()
