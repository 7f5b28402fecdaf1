"""`callassist calls`: the calls the assistant answered, as a list or one in full."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from callassist.cli.common import console, echo_json, fail, open_records, run_on_database, settings_or_exit
from callassist.cli.text import NOTICE_STYLES, duration, local, shorten, terminal_safe, who

if TYPE_CHECKING:
    from callassist.settings import Settings
    from callassist.store.records import CallDetail

app = typer.Typer(help="Calls the assistant answered: list, show one, its recording.", no_args_is_help=True)


@app.command("list")
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
        echo_json(calls_json(calls, settings.zone, limit=limit))
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
                (local(call.started_at, settings), "bold"),
                "  ",
                who(call.caller_name, call.caller_number),
                f"  {duration(call.duration_s)}  {outcome}  ",
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


@app.command("show")
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
        echo_json(call_detail_json(detail, settings.zone))
        return
    _print_call(detail, settings)


@app.command("audio")
def calls_audio(call_sid: Annotated[str, typer.Argument(help="The call's Twilio CallSid (CA...)")]) -> None:
    """Write a recorded call's WAV (CALLASSIST_RECORD) to standard output: `> call.wav`."""
    import shutil
    import sys

    from callassist.media.recording import RECORDINGS, recording_path

    settings = settings_or_exit()
    path = recording_path(settings.data_dir / RECORDINGS, call_sid)
    if path is None or not path.is_file():
        raise fail(f"no recording of call {call_sid!r} (recording is on with CALLASSIST_RECORD=true)")
    if sys.stdout.isatty():
        raise fail(
            "the recording is audio: redirect it to a file, e.g. `callassist calls audio CA... > call.wav`"
        )
    with path.open("rb") as source:
        shutil.copyfileobj(source, sys.stdout.buffer)


def _print_call(detail: CallDetail, settings: Settings) -> None:
    from decimal import Decimal

    from rich.table import Table
    from rich.text import Text

    call = detail.call
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    caller = who(call.caller_name, call.caller_number)
    if detail.called_number:
        caller += f" -> {detail.called_number}"
    if detail.is_owner:
        caller += " (the owner)"
    header.add_row("Call", Text(f"{call.call_sid}  from {caller}"))
    when = local(call.started_at, settings, "%a %Y-%m-%d %H:%M:%S %Z")
    if call.ended_at is not None:
        when += f", ended {local(call.ended_at, settings, '%H:%M:%S')} ({duration(call.duration_s)})"
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
        lines.append((entry.spoken_at, local(entry.spoken_at, settings, "%H:%M:%S"), role, text))
    for tool in detail.tool_calls:
        text = Text.assemble(
            f"{tool.name} ",
            ("ok", "green") if tool.ok else ("failed", "red"),
            f" {tool.duration_ms} ms  ",
            shorten(json.dumps(tool.arguments, ensure_ascii=False)),
            " -> ",
            shorten(json.dumps(tool.result, ensure_ascii=False)),
        )
        started = local(tool.started_at, settings, "%H:%M:%S")
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
        for _, clock, speaker, said in sorted(lines, key=lambda line: line[0]):
            transcript.add_row(clock, speaker, said)
        console.print(transcript)

    if detail.messages:
        console.print()
        console.print("[bold]Messages[/]")
        for message in detail.messages:
            console.print(
                Text(f"[{message.urgency}] {who(message.caller_name, message.caller_number)}: "),
                Text(message.message),
                Text(f" (call back on {message.callback_number})" if message.callback_number else ""),
                sep="",
            )

    if detail.segments:
        console.print()
        console.print("[bold]Transfer[/]")
        for segment in detail.segments:
            began = segment.started_at.astimezone(settings.zone)
            ended = f"{segment.ended_at.astimezone(settings.zone):%H:%M:%S}" if segment.ended_at else "?"
            ended_how = f" ({segment.outcome})" if segment.outcome else ""
            console.print(Text(f"{began:%H:%M:%S}-{ended} {segment.kind}{ended_how}"))

    if detail.voicemail is not None:
        voicemail = detail.voicemail
        length = f"{voicemail.duration_s} s" if voicemail.duration_s is not None else "no recording"
        console.print()
        console.print("[bold]Voicemail[/] ", Text(length), sep="")
        if voicemail.transcription:
            console.print(Text(terminal_safe(voicemail.transcription)))

    if detail.notices:
        notices = Table(
            "Channel", "To", "Status", "Attempts", "Last error",
            title="Notices", title_justify="left", title_style="bold", box=None, pad_edge=False,
        )  # fmt: skip
        for notice in detail.notices:
            notices.add_row(
                notice.channel,
                Text(notice.recipient),
                Text(notice.status, style=NOTICE_STYLES.get(notice.status, "")),
                str(notice.attempts),
                Text(terminal_safe(notice.last_error or "")),
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
