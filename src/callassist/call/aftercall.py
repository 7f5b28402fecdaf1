"""What the owner is told after a call: messages taken, bookings made or changed, urgent calls.

One short text, sent by SMS and/or e-mail through the outbox. Calls that produced none of these
don't notify anyone (the record is in `callassist calls list` and the API).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from callassist.call.recorder import CallSummaryFields, call_cost
from callassist.notify.notices import enqueue_call_notices
from callassist.settings import Settings
from callassist.store.db import Database
from callassist.store.models import CallRow, ToolCallRow, TranscriptEntryRow
from callassist.tools.registry import ToolOutcome

log = logging.getLogger(__name__)

BOOKING_TOOLS = {"create_event": "Booked", "reschedule_event": "Moved", "cancel_event": "Cancelled"}


@dataclass
class CallFacts:
    caller_number: str | None
    caller_name: str | None
    started_at: datetime
    duration_s: float
    summary: CallSummaryFields | None
    tool_outcomes: list[ToolOutcome] = field(default_factory=list)


def owner_notice(facts: CallFacts, zone: ZoneInfo) -> tuple[str, str] | None:
    """(subject, text) for the owner, or None when the call needs no notice."""
    messages = [o for o in facts.tool_outcomes if o.name == "take_message" and o.ok]
    bookings = [o for o in facts.tool_outcomes if o.name in BOOKING_TOOLS and o.ok]
    urgency = facts.summary.urgency if facts.summary else None
    urgent = urgency in ("high", "urgent") or any(
        _arguments(m).get("urgency") in ("high", "urgent") for m in messages
    )
    if not (messages or bookings or urgent):
        return None

    who = facts.caller_name or (facts.summary.caller_name if facts.summary else None)
    number = facts.caller_number or "a hidden number"
    caller = f"{who} ({number})" if who else number
    local = facts.started_at.astimezone(zone)
    minutes = max(1, round(facts.duration_s / 60))
    flag = "URGENT: " if urgent else ""
    lines = [f"{flag}Call from {caller}, {local:%a %b} {local.day} {local:%H:%M}, {minutes} min."]
    for message in messages:
        args = _arguments(message)
        level = args.get("urgency", "normal")
        label = "Message" if level == "normal" else f"Message ({level})"
        callback = message.output.get("callback_number") or facts.caller_number
        lines.append(
            f'{label}: "{args.get("message", "").strip()}"' + (f" Call back: {callback}." if callback else "")
        )
    for booking in bookings:
        event = booking.output.get("event") or booking.output.get("cancelled") or {}
        title = f' ("{event["title"]}")' if event.get("title") else ""
        when = event.get("spoken", "")
        length = f", {event['duration']}" if event.get("duration") else ""
        lines.append(f"{BOOKING_TOOLS[booking.name]}: {when}{length}{title}.")
    if facts.summary and facts.summary.summary:
        lines.append(f"Summary: {facts.summary.summary}")
    kind = "Urgent call" if urgent else "Message" if messages else "Booking"
    return f"{kind} from {caller}", "\n".join(lines)


def _arguments(outcome: ToolOutcome) -> dict[str, str]:
    try:
        parsed = json.loads(outcome.arguments or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def close_unfinished_calls(database: Database, settings: Settings, *, notify: bool) -> int:
    """At start-up: calls a killed process never closed get an end (their last words) and the
    outcome "interrupted", and the owner is still told about their messages and bookings."""
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
            tools = await session.scalars(select(ToolCallRow).where(ToolCallRow.call_sid == call.call_sid))
            outcomes = [_stored_outcome(row) for row in tools]
            facts = CallFacts(
                caller_number=call.caller_number,
                caller_name=call.caller_name,
                started_at=call.started_at,
                duration_s=(call.ended_at - call.started_at).total_seconds(),
                summary=None,
                tool_outcomes=outcomes,
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
