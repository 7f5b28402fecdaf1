"""What the owner is told after a call: messages taken, bookings made or changed, urgent calls.

One short text, sent by SMS and/or e-mail through the outbox. Calls that produced none of these
don't notify anyone (the record is in `callassist calls list` and the API). Whatever in it a caller
could influence (their name, their message, titles, the summary) is one clean line (caller_text),
so the subject is always a valid e-mail header and the text says what the caller said, nothing more.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from callassist import caller_text
from callassist.call.recorder import CallSummaryFields, call_cost
from callassist.notify.notices import enqueue_call_notices
from callassist.settings import Settings
from callassist.store.db import Database
from callassist.store.models import CallRow, MessageRow, ToolCallRow, TranscriptEntryRow
from callassist.tools import STANDARD_TOOLS
from callassist.tools.registry import ToolOutcome

log = logging.getLogger(__name__)

# How the owner's notice names what a tool did: each tool declares its own label (tools/).
NOTICE_LABELS = {tool.name: tool.notice_label for tool in STANDARD_TOOLS if tool.notice_label}


@dataclass(frozen=True)
class MessageFact:
    """A message the caller left, as the owner's notice tells it."""

    message: str
    urgency: str
    callback_number: str | None


@dataclass
class CallFacts:
    caller_number: str | None
    caller_name: str | None
    started_at: datetime
    duration_s: float
    summary: CallSummaryFields | None
    tool_outcomes: list[ToolOutcome] = field(default_factory=list)
    # The messages taken; None: read from the take_message calls among `tool_outcomes`.
    messages: list[MessageFact] | None = None


NUMBER_CHARS = 40  # Twilio's caller: a number, "anonymous" or a client name


def owner_notice(facts: CallFacts, zone: ZoneInfo) -> tuple[str, str] | None:
    """(subject, text) for the owner, or None when the call needs no notice."""
    messages = facts.messages if facts.messages is not None else _messages_of(facts.tool_outcomes)
    # Calendar changes: a labelled tool that reports the event it booked, moved or cancelled.
    bookings = [
        o
        for o in facts.tool_outcomes
        if o.ok and o.name in NOTICE_LABELS and (o.output.get("event") or o.output.get("cancelled"))
    ]
    urgency = facts.summary.urgency if facts.summary else None
    urgent = urgency in ("high", "urgent") or any(m.urgency in ("high", "urgent") for m in messages)
    if not (messages or bookings or urgent):
        return None

    who = caller_text.name(facts.caller_name) or caller_text.name(
        facts.summary.caller_name if facts.summary else None
    )
    number = caller_text.one_line(facts.caller_number, NUMBER_CHARS) or "a hidden number"
    caller = f"{who} ({number})" if who else number
    local = facts.started_at.astimezone(zone)
    minutes = max(1, round(facts.duration_s / 60))
    flag = "URGENT: " if urgent else ""
    lines = [f"{flag}Call from {caller}, {local:%a %b} {local.day} {local:%H:%M}, {minutes} min."]
    for message in messages:
        label = "Message" if message.urgency == "normal" else f"Message ({message.urgency})"
        callback = caller_text.one_line(message.callback_number or facts.caller_number, NUMBER_CHARS)
        text = caller_text.one_line(message.message, caller_text.MESSAGE_CHARS)
        lines.append(f'{label}: "{text}"' + (f" Call back: {callback}." if callback else ""))
    for booking in bookings:
        event = booking.output.get("event") or booking.output.get("cancelled") or {}
        title = caller_text.one_line(str(event.get("title") or ""), caller_text.TITLE_CHARS)
        shown_title = f' ("{title}")' if title else ""
        when = caller_text.one_line(str(event.get("spoken") or ""), 100)
        duration = caller_text.one_line(str(event.get("duration") or ""), 60)
        length = f", {duration}" if duration else ""
        lines.append(f"{NOTICE_LABELS[booking.name]}: {when}{length}{shown_title}.")
    summary = caller_text.one_line(
        facts.summary.summary if facts.summary else None, caller_text.SUMMARY_CHARS
    )
    if summary:
        lines.append(f"Summary: {summary}")
    kind = "Urgent call" if urgent else "Message" if messages else "Booking"
    return f"{kind} from {caller}", "\n".join(lines)


def _messages_of(outcomes: list[ToolOutcome]) -> list[MessageFact]:
    messages = []
    for outcome in outcomes:
        if outcome.name != "take_message" or not outcome.ok:
            continue
        args = _arguments(outcome)
        urgency = str(args.get("urgency") or "normal")
        messages.append(
            MessageFact(
                message=str(args.get("message") or ""),
                urgency=urgency if urgency in URGENCIES else "normal",
                callback_number=outcome.output.get("callback_number"),
            )
        )
    return messages


URGENCIES = ("low", "normal", "high", "urgent")


def _arguments(outcome: ToolOutcome) -> dict[str, object]:
    try:
        parsed = json.loads(outcome.arguments or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def close_unfinished_calls(database: Database, settings: Settings, *, notify: bool) -> int:
    """At start-up: calls a killed process never closed get an end (their last words) and the
    outcome "interrupted", and the owner is still told about their messages and bookings.

    Bookings come from the tool calls recorded (a tool that changed something had its outcome
    committed before the caller was told); messages from the messages table, which holds every
    message the caller was told was taken."""
    closed = 0
    async with database.session() as session:
        calls = list(await session.scalars(select(CallRow).where(CallRow.ended_at.is_(None))))
        for call in calls:
            last_words = await session.scalar(
                select(func.max(TranscriptEntryRow.spoken_at)).where(
                    TranscriptEntryRow.call_sid == call.call_sid
                )
            )
            call.ended_at = max(last_words or call.started_at, call.started_at)
            call.outcome = "interrupted"
            call.cost_nanousd = int(await session.scalar(select(call_cost(call.call_sid))) or 0)
            closed += 1
            if not notify:
                continue
            tools = await session.scalars(
                select(ToolCallRow)
                .where(ToolCallRow.call_sid == call.call_sid)
                .order_by(ToolCallRow.started_at, ToolCallRow.id)
            )
            outcomes = [_stored_outcome(row) for row in tools]
            taken = await session.scalars(
                select(MessageRow)
                .where(MessageRow.call_sid == call.call_sid)
                .order_by(MessageRow.created_at, MessageRow.id)
            )
            rows = list(taken)
            messages = [MessageFact(row.message, row.urgency, row.callback_number) for row in rows]
            # The name the caller gave (a message, a booking), when the call's end that records it
            # never came.
            given = [row.caller_name for row in rows] + [
                str(_arguments(o).get("caller_name") or "") for o in outcomes if o.ok
            ]
            facts = CallFacts(
                caller_number=call.caller_number,
                caller_name=call.caller_name or next((name for name in given if name), None),
                started_at=call.started_at,
                duration_s=(call.ended_at - call.started_at).total_seconds(),
                summary=None,
                tool_outcomes=outcomes,
                messages=messages,
            )
            notice = owner_notice(facts, settings.zone)
            if notice is not None:
                subject, text = notice
                await enqueue_call_notices(
                    session,
                    settings,
                    call_sid=call.call_sid,
                    text=text,
                    subject=subject,
                    sms_sender=call.called_number,
                )
    if closed:
        log.warning("closed %d call record(s) left open by a previous run", closed)
    return closed


def _stored_outcome(row: ToolCallRow) -> ToolOutcome:
    try:
        output = json.loads(row.result)
    except ValueError:
        output = {}
    return ToolOutcome(
        row.name,
        row.call_id,
        row.arguments,
        output if isinstance(output, dict) else {},
        row.duration_ms / 1000,
    )
