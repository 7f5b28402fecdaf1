"""One scripted test call for the `callassist call` command: place it, talk once, report what happened.

`run_call()` listens to the greeting, says one thing (espeak-ng text or a WAV file), listens to the reply,
hangs up (unless the server ended the call first), saves what the caller heard as a WAV file and prints a
summary with rich. Turn latency counts from the end of the caller's speech (its last loud frame, trailing
silence excluded) to the first audio of the answer, as the server records it (`callassist calls show`).
Failures a user can fix (server down, signature rejected, espeak-ng missing, unreadable audio) raise
`SimulatorError` with a one-line message for the CLI to print before exiting 1.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from callassist.simulator.audio import BYTES_PER_MS, AudioToolMissing, convert_to_ulaw, speak, write_wav
from callassist.simulator.call import SimulatedCall
from callassist.simulator.caller import CallerSimulator
from callassist.simulator.errors import SimulatorError

__all__ = ["CallReport", "SimulatorError", "run_call"]

GREETING_WAIT_S = 10.0  # past this, say our piece even if the assistant never spoke first


@dataclass(slots=True)
class CallReport:
    """The figures of one simulated call."""

    call_sid: str
    stream_opened: bool
    twiml: list[str]  # verbs followed, in order
    greeting_latency_ms: float | None
    turn_latencies_ms: list[float]
    media_in: int
    marks_in: int
    marks_echoed: int
    clears: int
    heard_seconds: float
    received_seconds: float
    sent_seconds: float
    violations: list[str]
    warnings: list[str]
    end_reason: str | None
    close_code: int | None
    out: Path | None
    notes: list[str] = field(default_factory=list)
    # "caller" (we hung up), "server" (it closed the stream), None (no stream); and how it ended, in words.
    stream_closed_by: str | None = None
    ending: str = ""

    @property
    def turn_latency_ms(self) -> float | None:
        return self.turn_latencies_ms[0] if self.turn_latencies_ms else None


def _read_audio(path: Path) -> bytes:
    if not path.is_file():
        raise SimulatorError(f"audio file not found: {path}")
    return convert_to_ulaw(path)


async def _load_speech(say: str | None, audio: Path | None) -> bytes | None:
    if say is not None and audio is not None:
        raise SimulatorError("give either text to say or an audio file, not both")
    try:
        if say is not None:
            return await asyncio.to_thread(speak, say)
        if audio is not None:
            return await asyncio.to_thread(_read_audio, audio)
    except AudioToolMissing as exc:
        raise SimulatorError(str(exc)) from None
    except SimulatorError:
        raise
    except (ValueError, RuntimeError, OSError) as exc:
        raise SimulatorError(f"cannot prepare the caller's audio: {exc}") from None
    return None


async def _converse(call: SimulatedCall, speech: bytes | None, deadline: float, notes: list[str]) -> None:
    def remaining() -> float:
        return deadline - time.monotonic()

    try:
        try:
            await call.wait_until_quiet(timeout=max(0.0, min(remaining(), GREETING_WAIT_S)))
        except TimeoutError as exc:
            if call.stream_ended or remaining() <= 0:
                raise
            notes.append(f"no greeting finished: {exc}")
        if speech is None:
            return
        # The answer may begin while the clip's trailing silence still plays: listen from the start.
        speaking_from = time.monotonic()
        await call.say(speech)
        await call.wait_until_quiet(timeout=max(0.0, remaining()), after=speaking_from)
    except TimeoutError as exc:
        notes.append(str(exc) if remaining() > 0 else "time limit reached before the assistant finished")
    except SimulatorError as exc:
        notes.append(str(exc))


def describe_ending(call: SimulatedCall) -> str:
    """How the call ended, in words: who closed the stream, and the TwiML Twilio followed after it."""
    by = call.stream_closed_by
    if by == "caller":
        return "caller hung up"
    if by == "redirect":
        return f"the call was given new TwiML through the REST API; {call.end_reason or 'still going'}"
    if by is None:
        return call.end_reason or "—"
    reason = f": {call.close_reason}" if call.close_reason else ""
    if call.close_code == 1000:
        text = f"the assistant ended the call (the server closed the stream, code 1000{reason})"
    else:
        text = f"the server closed the stream (code {call.close_code}{reason})"
    closed_at = next(event.t for event in call.events if event.kind == "stream_closed")
    after = [event for event in call.events if event.t >= closed_at and event.kind in ("webhook", "verb")]
    steps = [
        urlsplit(str(event.detail["url"])).path
        if event.kind == "webhook"
        else str(event.detail["description"])
        for event in after
    ]
    if steps:
        text += "; then " + " → ".join(steps)
    if not call.ended:
        text += " (call still going)"
    elif call.end_reason == "error" and call.errors:
        text += f" (failed: {call.errors[-1]})"
    return text


def _build_report(call: SimulatedCall, out: Path | None, notes: list[str]) -> CallReport:
    return CallReport(
        call_sid=call.call_sid,
        stream_opened=call.stream_opened,
        twiml=list(call.verbs),
        greeting_latency_ms=call.greeting_latency_ms,
        turn_latencies_ms=list(call.turn_latencies_ms),
        media_in=call.count("media_in"),
        marks_in=call.count("mark_in"),
        marks_echoed=call.count("mark_echo"),
        clears=call.count("clear_in"),
        heard_seconds=len(call.audio_heard) / (BYTES_PER_MS * 1000),
        received_seconds=len(call.audio_received) / (BYTES_PER_MS * 1000),
        sent_seconds=len(call.audio_sent) / (BYTES_PER_MS * 1000),
        violations=list(call.violations),
        warnings=list(call.warnings),
        end_reason=call.end_reason,
        close_code=call.close_code,
        out=out,
        notes=notes,
        stream_closed_by=call.stream_closed_by,
        ending=describe_ending(call),
    )


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def print_report(report: CallReport, console: Console) -> None:
    """Print a call report as a rich table plus lists of TwiML, notes, warnings and violations."""
    table = Table(title=f"Call {report.call_sid}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Media stream", "opened" if report.stream_opened else "not opened")
    table.add_row("Greeting latency", _ms(report.greeting_latency_ms))
    # From the end of the caller's speech, as `callassist calls show` counts it.
    table.add_row("Turn latency", ", ".join(_ms(v) for v in report.turn_latencies_ms) or "—")
    table.add_row("Media messages in", str(report.media_in))
    table.add_row("Marks in / echoed", f"{report.marks_in} / {report.marks_echoed}")
    table.add_row("Clears", str(report.clears))
    table.add_row("Heard", f"{report.heard_seconds:.2f} s (received {report.received_seconds:.2f} s)")
    table.add_row("Caller audio sent", f"{report.sent_seconds:.2f} s")
    table.add_row("Ended", report.ending or report.end_reason or "—")
    if report.out is not None:
        table.add_row("Saved", str(report.out))
    console.print(table)
    console.print("TwiML followed: " + (" → ".join(report.twiml) or "(none)"), markup=False, highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", style="cyan", markup=False)
    for warning in report.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False)
    if report.violations:
        console.print(f"{len(report.violations)} protocol violation(s):", style="bold red")
        for violation in report.violations:
            console.print(f"  {violation}", style="red", markup=False)
    else:
        console.print("No protocol violations.", style="green")


async def run_call(
    url: str,
    *,
    say: str | None,
    audio: Path | None,
    out: Path | None,
    seconds: float,
    auth_token: str | None,
    public_base_url: str | None,
    from_number: str,
    to_number: str,
    owner_answers: bool = False,
    account_sid: str | None = None,
    console: Console,
) -> CallReport:
    """Place one call at `url`, talk once, hang up within `seconds`, save the heard audio, print a report."""
    speech = await _load_speech(say, audio)
    try:
        simulator = CallerSimulator(
            url, auth_token=auth_token, account_sid=account_sid, public_base_url=public_base_url
        )
    except ValueError as exc:
        raise SimulatorError(str(exc)) from None
    deadline = time.monotonic() + seconds
    console.print(f"Calling {url} from {from_number} to {to_number}…", style="dim", markup=False)
    call = await simulator.place_call(
        from_number=from_number, to_number=to_number, owner_answers=owner_answers
    )
    notes: list[str] = []
    if call.stream_opened:
        console.print(f"Media stream open ({call.stream_sid}); listening.", style="dim", markup=False)
        await _converse(call, speech, deadline, notes)
        # A no-op beyond letting Twilio's TwiML run out if the server already closed the stream.
        await call.hang_up()
    else:
        notes.append(f"the call ended without a media stream ({call.end_reason})")
    if out is not None:
        try:
            write_wav(out, bytes(call.audio_heard))
        except OSError as exc:
            raise SimulatorError(f"cannot write {out}: {exc.strerror or exc}") from None
    report = _build_report(call, out, notes)
    print_report(report, console)
    return report
