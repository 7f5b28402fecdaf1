"""The dashboard's reads that the JSON API does not need: the history page's search and filters,
and a call's cost split by kind. One query per page (counts as correlated subqueries, no N+1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.realtime.pricing import MILLION, PriceTable
from callassist.store.models import (
    CallRow,
    ContactRow,
    MessageRow,
    ToolCallRow,
    TranscriptEntryRow,
    utc_now,
)
from callassist.store.records import (
    BOOKING_TOOLS,
    CallSummary,
    UsageRecord,
    _summary,  # the one conversion of a call-list row; shared so both lists read the same
    _summary_query,
)

PAGE_SIZE = 25
URGENT = ("high", "urgent")
FILTERS = ("message", "booked", "urgent")


@dataclass(frozen=True)
class HistoryQuery:
    """What the owner asked the history page for."""

    text: str = ""
    since: date | None = None
    until: date | None = None  # inclusive
    filters: frozenset[str] = frozenset()
    page: int = 1


@dataclass(frozen=True)
class HistoryPage:
    calls: list[CallSummary]
    page: int
    more: bool


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conditions(query: HistoryQuery, zone: ZoneInfo) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    text = query.text.strip()
    if text:
        pattern = _like(text)
        in_transcript = exists().where(
            TranscriptEntryRow.call_sid == CallRow.call_sid,
            TranscriptEntryRow.text.ilike(pattern, escape="\\"),
        )
        conditions.append(
            or_(
                CallRow.caller_name.ilike(pattern, escape="\\"),
                ContactRow.name.ilike(pattern, escape="\\"),
                CallRow.caller_number.like(pattern, escape="\\"),
                CallRow.summary.ilike(pattern, escape="\\"),
                in_transcript,
            )
        )
    if query.since is not None:
        conditions.append(CallRow.started_at >= _utc_start(query.since, zone))
    if query.until is not None:
        conditions.append(CallRow.started_at < _utc_start(query.until + timedelta(days=1), zone))
    if "message" in query.filters:
        conditions.append(exists().where(MessageRow.call_sid == CallRow.call_sid))
    if "booked" in query.filters:
        conditions.append(
            exists().where(
                ToolCallRow.call_sid == CallRow.call_sid,
                ToolCallRow.ok.is_(True),
                ToolCallRow.name.in_(BOOKING_TOOLS),
            )
        )
    if "urgent" in query.filters:
        conditions.append(
            or_(
                CallRow.urgency.in_(URGENT),
                exists().where(MessageRow.call_sid == CallRow.call_sid, MessageRow.urgency.in_(URGENT)),
            )
        )
    return conditions


def _utc_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


async def history(session: AsyncSession, query: HistoryQuery, zone: ZoneInfo) -> HistoryPage:
    """One page of calls, newest first, matching the owner's search and filters."""
    statement = _summary_query()
    for condition in _conditions(query, zone):
        statement = statement.where(condition)
    page = max(1, query.page)
    statement = (
        statement.order_by(CallRow.started_at.desc(), CallRow.call_sid.desc())
        .offset((page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE + 1)
    )
    rows = [_summary(*row) for row in await session.execute(statement)]
    return HistoryPage(rows[:PAGE_SIZE], page, len(rows) > PAGE_SIZE)


@dataclass(frozen=True)
class CostPart:
    label: str
    usd: Decimal


def cost_parts(usage: list[UsageRecord], prices: PriceTable) -> list[CostPart]:
    """A call's cost by kind (audio in/out, cached input, text in/out, transcription), at the
    configured prices. The recorded total is what was charged; this shows where it went."""
    totals: dict[str, Decimal] = {
        "audio in": Decimal(0),
        "audio out": Decimal(0),
        "cached input": Decimal(0),
        "text in": Decimal(0),
        "text out": Decimal(0),
        "transcription": Decimal(0),
    }
    for record in usage:
        if record.kind == "transcription":
            totals["transcription"] += record.cost_usd
            continue
        price = prices.prices_for(record.model)
        if price is None:
            continue
        totals["audio in"] += (record.audio_in - record.cached_audio) * price.audio_in / MILLION
        totals["audio out"] += record.audio_out * price.audio_out / MILLION
        totals["cached input"] += (
            record.cached_text * price.text_cached + record.cached_audio * price.audio_cached
        ) / MILLION
        totals["text in"] += (record.text_in - record.cached_text) * price.text_in / MILLION
        totals["text out"] += record.text_out * price.text_out / MILLION
    return [CostPart(label, amount) for label, amount in totals.items()]


# Inbox ------------------------------------------------------------------------------------------

INBOX_SIZE = 100


@dataclass(frozen=True)
class InboxMessage:
    id: int
    call_sid: str | None
    caller_number: str | None
    caller_name: str | None  # as the caller gave it, else the contact's name
    callback_number: str | None
    message: str
    urgency: str
    created_at: datetime
    done_at: datetime | None


async def inbox(session: AsyncSession, *, done: bool) -> list[InboxMessage]:
    """The messages still to deal with (`done=False`: urgent ones first, then newest first), or the
    ones dealt with (newest first)."""
    query = (
        select(MessageRow, ContactRow.name)
        .outerjoin(ContactRow, ContactRow.phone == MessageRow.caller_number)
        .where(MessageRow.done_at.is_not(None) if done else MessageRow.done_at.is_(None))
    )
    if done:
        query = query.order_by(MessageRow.done_at.desc(), MessageRow.id.desc())
    else:
        urgent_first = MessageRow.urgency.in_(URGENT).desc()
        query = query.order_by(urgent_first, MessageRow.created_at.desc(), MessageRow.id.desc())
    rows = await session.execute(query.limit(INBOX_SIZE))
    return [
        InboxMessage(
            id=row.id,
            call_sid=row.call_sid,
            caller_number=row.caller_number,
            caller_name=row.caller_name or contact_name,
            callback_number=row.callback_number,
            message=row.message,
            urgency=row.urgency,
            created_at=row.created_at,
            done_at=row.done_at,
        )
        for row, contact_name in rows
    ]


async def mark_done(session: AsyncSession, message_id: int, *, done: bool) -> bool:
    """Mark a message done (or not done again); False if there is no such message."""
    result = await session.execute(
        update(MessageRow).where(MessageRow.id == message_id).values(done_at=utc_now() if done else None)
    )
    return bool(getattr(result, "rowcount", 0))
