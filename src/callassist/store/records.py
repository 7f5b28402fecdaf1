"""Reading call records back: the call list, one call in full, the messages callers left, and the
owner's notices with their delivery state (a notice that failed for good says why).

Every query returns plain frozen dataclasses, never ORM rows, so callers can keep them after the
session closes and can't write through them by accident. Money stays exact: `Decimal` dollars made
from the integer nano-dollars the tables hold.

One reason this module is a little over 400 lines: it is one job, the read side of the records. The
dataclasses are exactly what the queries return, so each changes with the other; the writing side
is `call.recorder` and `store.writer`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.store.models import (
    CallRow,
    CallSegmentRow,
    ContactRow,
    MessageRow,
    OutboxRow,
    ToolCallRow,
    TranscriptEntryRow,
    UsageRow,
)
from callassist.store.voicemail import Voicemail, get_voicemail

NANO_PER_USD = Decimal(1_000_000_000)
# Tools whose successful call means an appointment was made (or moved) during the call.
BOOKING_TOOLS = ("create_event", "reschedule_event")
# Where a notice's delivery can stand (the outbox table's `status` check constraint).
NOTICE_STATUSES = ("pending", "sent", "failed")


def usd(nanousd: int) -> Decimal:
    """Exact dollars from integer nano-dollars."""
    return Decimal(nanousd) / NANO_PER_USD


@dataclass(frozen=True)
class CallSummary:
    """One line of the call list."""

    call_sid: str
    caller_number: str | None
    caller_name: str | None  # as recorded, else the contact's current name
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    cost_nanousd: int
    summary: str | None
    urgency: str | None
    follow_up: bool | None
    message_count: int
    booking_count: int

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at).total_seconds(), 3)

    @property
    def cost_usd(self) -> Decimal:
        return usd(self.cost_nanousd)


@dataclass(frozen=True)
class TranscriptEntry:
    role: str  # 'caller', 'assistant' or 'system'
    text: str
    spoken_at: datetime
    interrupted: bool
    heard_ms: int | None
    audio_ms: int | None
    latency_ms: int | None


@dataclass(frozen=True)
class ToolCallRecord:
    name: str
    arguments: Any  # parsed JSON when the stored text is JSON, else that text
    result: Any
    ok: bool
    started_at: datetime
    duration_ms: int
    call_id: str


@dataclass(frozen=True)
class UsageRecord:
    kind: str  # 'response' or 'transcription'
    ref: str | None
    purpose: str | None
    status: str | None
    model: str
    text_in: int
    audio_in: int
    cached_text: int
    cached_audio: int
    text_out: int
    audio_out: int
    seconds: float | None
    cost_nanousd: int
    created_at: datetime

    @property
    def cost_usd(self) -> Decimal:
        return usd(self.cost_nanousd)


@dataclass(frozen=True)
class MessageRecord:
    id: int
    call_sid: str | None
    caller_number: str | None
    caller_name: str | None
    callback_number: str | None
    message: str
    urgency: str
    created_at: datetime


@dataclass(frozen=True)
class NoticeRecord:
    """A notice to the owner and where its delivery stands."""

    id: int
    call_sid: str | None
    channel: str  # 'sms' or 'email'
    recipient: str
    subject: str | None
    status: str  # 'pending', 'sent' or 'failed'
    attempts: int
    last_error: str | None  # why the last attempt failed (for 'failed': why it was given up)
    created_at: datetime
    next_attempt_at: datetime | None  # pending only
    sent_at: datetime | None


@dataclass(frozen=True)
class LatencyFigures:
    """Assistant turns: caller stopped speaking -> first audio sent, in milliseconds."""

    turns_ms: list[int]
    greeting_ms: int | None

    @property
    def average_ms(self) -> float | None:
        return round(sum(self.turns_ms) / len(self.turns_ms), 1) if self.turns_ms else None

    @property
    def p50_ms(self) -> int | None:
        # Nearest rank: always a latency some turn really had, never an average of two.
        if not self.turns_ms:
            return None
        ordered = sorted(self.turns_ms)
        return ordered[math.ceil(len(ordered) / 2) - 1]

    @property
    def max_ms(self) -> int | None:
        return max(self.turns_ms) if self.turns_ms else None


@dataclass(frozen=True)
class Segment:
    """A stretch of a transferred call: `assistant`, `hold` (the owner rung; `outcome` says how it
    ended) or `owner`."""

    kind: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class CallDetail:
    """One call with everything recorded about it."""

    call: CallSummary  # its cost is the total of `usage` when there is any
    called_number: str | None
    is_owner: bool
    dial_status: str | None
    model: str | None
    reason: str | None
    reconnects: int
    details: Any  # summary_json parsed (the summariser's structured output), or None
    transcript: list[TranscriptEntry]
    tool_calls: list[ToolCallRecord]
    usage: list[UsageRecord]
    messages: list[MessageRecord]
    latency: LatencyFigures
    notices: list[NoticeRecord] = field(default_factory=list)  # what the owner was sent about it
    voicemail: Voicemail | None = None  # left when the assistant could not answer
    # Who the caller was with, in order, when the call was transferred (none otherwise).
    segments: list[Segment] = field(default_factory=list)

    @property
    def call_sid(self) -> str:
        return self.call.call_sid

    @property
    def cost_usd(self) -> Decimal:
        return self.call.cost_usd


def parse_json_text(text: str | None) -> Any:
    """The JSON value in `text`, or `text` itself when it isn't JSON (kept as the model sent it)."""
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return text


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are Python's JSON extensions: strict JSON encoders downstream reject them.
    raise ValueError(f"{name} is not JSON")


# Queries ------------------------------------------------------------------------------------------


_SummaryRow = tuple[CallRow, str | None, int, int, Any]


def _summary_query() -> Select[*_SummaryRow]:
    """calls + contact name + per-call counts and cost, as correlated subqueries (one round trip)."""
    message_count = (
        select(func.count(MessageRow.id)).where(MessageRow.call_sid == CallRow.call_sid).scalar_subquery()
    )
    booking_count = (
        select(func.count(ToolCallRow.id))
        .where(
            ToolCallRow.call_sid == CallRow.call_sid,
            ToolCallRow.ok.is_(True),
            ToolCallRow.name.in_(BOOKING_TOOLS),
        )
        .scalar_subquery()
    )
    usage_cost = (
        select(func.sum(UsageRow.cost_nanousd)).where(UsageRow.call_sid == CallRow.call_sid).scalar_subquery()
    )
    return (
        select(
            CallRow,
            ContactRow.name,
            message_count.label("message_count"),
            booking_count.label("booking_count"),
            usage_cost.label("usage_cost"),
        )
        .select_from(CallRow)
        .outerjoin(ContactRow, ContactRow.phone == CallRow.caller_number)
    )


def _summary(
    call: CallRow, contact_name: str | None, messages: int, bookings: int, usage_cost: Any
) -> CallSummary:
    # The usage rows are the detailed truth while a call runs; the call's own total covers calls
    # recorded without them. (PostgreSQL's SUM of a bigint is numeric, hence int().)
    cost = int(usage_cost) if usage_cost is not None else call.cost_nanousd
    return CallSummary(
        call_sid=call.call_sid,
        caller_number=call.caller_number,
        caller_name=call.caller_name or contact_name,
        started_at=call.started_at,
        ended_at=call.ended_at,
        outcome=call.outcome,
        cost_nanousd=cost,
        summary=call.summary,
        urgency=call.urgency,
        follow_up=call.follow_up,
        message_count=int(messages or 0),
        booking_count=int(bookings or 0),
    )


async def list_calls(
    session: AsyncSession,
    *,
    limit: int = 50,
    before: datetime | None = None,
    caller: str | None = None,
) -> list[CallSummary]:
    """The newest `limit` calls that started before `before`, optionally from one number only.

    Page with `before=<started_at of the last call of the previous page>`.
    """
    query = _summary_query()
    if before is not None:
        query = query.where(CallRow.started_at < before)
    if caller is not None:
        query = query.where(CallRow.caller_number == caller)
    query = query.order_by(CallRow.started_at.desc(), CallRow.call_sid.desc()).limit(limit)
    rows = await session.execute(query)
    return [_summary(*row) for row in rows]


async def get_call(session: AsyncSession, call_sid: str) -> CallDetail | None:
    """The call with its transcript, tool calls, usage and messages; None if there is no such call."""
    found = (await session.execute(_summary_query().where(CallRow.call_sid == call_sid))).first()
    if found is None:
        return None
    call: CallRow = found[0]
    summary = _summary(*found)

    entries = await session.scalars(
        select(TranscriptEntryRow)
        .where(TranscriptEntryRow.call_sid == call_sid)
        .order_by(TranscriptEntryRow.spoken_at, TranscriptEntryRow.id)
    )
    transcript = [
        TranscriptEntry(
            role=row.role,
            text=row.text,
            spoken_at=row.spoken_at,
            interrupted=row.interrupted,
            heard_ms=row.heard_ms,
            audio_ms=row.audio_ms,
            latency_ms=row.latency_ms,
        )
        for row in entries
    ]
    tool_rows = await session.scalars(
        select(ToolCallRow)
        .where(ToolCallRow.call_sid == call_sid)
        .order_by(ToolCallRow.started_at, ToolCallRow.id)
    )
    tool_calls = [
        ToolCallRecord(
            name=row.name,
            arguments=parse_json_text(row.arguments),
            result=parse_json_text(row.result),
            ok=row.ok,
            started_at=row.started_at,
            duration_ms=row.duration_ms,
            call_id=row.call_id,
        )
        for row in tool_rows
    ]
    usage_rows = await session.scalars(
        select(UsageRow).where(UsageRow.call_sid == call_sid).order_by(UsageRow.created_at, UsageRow.id)
    )
    usage = [
        UsageRecord(
            kind=row.kind,
            ref=row.ref,
            purpose=row.purpose,
            status=row.status,
            model=row.model,
            text_in=row.text_in,
            audio_in=row.audio_in,
            cached_text=row.cached_text,
            cached_audio=row.cached_audio,
            text_out=row.text_out,
            audio_out=row.audio_out,
            seconds=row.seconds,
            cost_nanousd=row.cost_nanousd,
            created_at=row.created_at,
        )
        for row in usage_rows
    ]
    message_rows = await session.scalars(
        select(MessageRow)
        .where(MessageRow.call_sid == call_sid)
        .order_by(MessageRow.created_at, MessageRow.id)
    )
    notice_rows = await session.scalars(
        select(OutboxRow).where(OutboxRow.call_sid == call_sid).order_by(OutboxRow.created_at, OutboxRow.id)
    )
    latency = LatencyFigures(
        turns_ms=[
            entry.latency_ms
            for entry in transcript
            if entry.role == "assistant" and entry.latency_ms is not None
        ],
        greeting_ms=call.greeting_latency_ms,
    )
    return CallDetail(
        call=summary,
        called_number=call.called_number,
        is_owner=call.is_owner,
        dial_status=call.dial_status,
        model=call.model,
        reason=call.reason,
        reconnects=call.reconnects,
        details=parse_json_text(call.summary_json),
        transcript=transcript,
        tool_calls=tool_calls,
        usage=usage,
        messages=[_message(row) for row in message_rows],
        latency=latency,
        notices=[_notice(row) for row in notice_rows],
        voicemail=await get_voicemail(session, call_sid),
        segments=[
            Segment(row.kind, row.started_at, row.ended_at, row.outcome)
            for row in await session.scalars(
                select(CallSegmentRow).where(CallSegmentRow.call_sid == call_sid).order_by(CallSegmentRow.seq)
            )
        ],
    )


def _message(row: MessageRow) -> MessageRecord:
    return MessageRecord(
        id=row.id,
        call_sid=row.call_sid,
        caller_number=row.caller_number,
        caller_name=row.caller_name,
        callback_number=row.callback_number,
        message=row.message,
        urgency=row.urgency,
        created_at=row.created_at,
    )


async def list_messages(session: AsyncSession, *, limit: int = 50) -> list[MessageRecord]:
    """The newest `limit` messages callers left."""
    rows = await session.scalars(
        select(MessageRow).order_by(MessageRow.created_at.desc(), MessageRow.id.desc()).limit(limit)
    )
    return [_message(row) for row in rows]


def _notice(row: OutboxRow) -> NoticeRecord:
    return NoticeRecord(
        id=row.id,
        call_sid=row.call_sid,
        channel=row.channel,
        recipient=row.recipient,
        subject=row.subject,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        sent_at=row.sent_at,
    )


async def list_notices(
    session: AsyncSession, *, status: str | None = None, limit: int = 50
) -> list[NoticeRecord]:
    """The newest `limit` notices to the owner, optionally only those with `status` ('failed': the
    ones that will never arrive, each with its reason)."""
    query = select(OutboxRow)
    if status is not None:
        query = query.where(OutboxRow.status == status)
    rows = await session.scalars(
        query.order_by(OutboxRow.created_at.desc(), OutboxRow.id.desc()).limit(limit)
    )
    return [_notice(row) for row in rows]
