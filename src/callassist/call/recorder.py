"""Call records, written as they happen and off the audio path.

Each call has a CallRecorder the bridge hands small snapshots to (a turn, a tool call, a response's
usage) without waiting; the server's one RecordWriter (`callassist.store.writer`) commits them in
order, batched. A crash loses at most the last tenth of a second: the turn in flight. What must not
be lost, a message and the outcome of a tool that changed something (a booking), is committed before
the caller is told it is done: `message` and `commit_tool_call` wait for their commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callassist import caller_text
from callassist.call.transcript import Turn
from callassist.realtime.pricing import Usage
from callassist.store.models import (
    CallRow,
    CallSegmentRow,
    MessageRow,
    ToolCallRow,
    TranscriptEntryRow,
    UsageRow,
)
from callassist.store.writer import Operation, RecordWriter, WriteJob
from callassist.tools.registry import ToolOutcome

log = logging.getLogger(__name__)

NANO = Decimal(1_000_000_000)


def nanodollars(cost: Decimal) -> int:
    return int((cost * NANO).to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class CallSummaryFields:
    """What the post-call summary found (any part may be missing)."""

    summary: str | None = None
    caller_name: str | None = None
    reason: str | None = None
    follow_up: bool | None = None
    urgency: str | None = None
    raw: str | None = None


class CallRecorder:
    """One call's side of the record: snapshots in, nothing awaited (except a message's commit)."""

    def __init__(
        self,
        writer: RecordWriter,
        call_sid: str,
        *,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self._writer = writer
        self.call_sid = call_sid
        self._log = logger or log

    # What the bridge reports ---------------------------------------------------------------------

    def call_started(
        self,
        *,
        started_at: datetime,
        stream_sid: str | None,
        caller_number: str | None,
        called_number: str | None,
        caller_name: str | None,
        is_owner: bool,
        dial_status: str | None,
        model: str,
    ) -> None:
        row = {
            "call_sid": self.call_sid,
            "stream_sid": stream_sid,
            "caller_number": caller_number,
            "called_number": called_number,
            "caller_name": caller_name,
            "is_owner": is_owner,
            "dial_status": dial_status,
            "model": model,
            "started_at": started_at,
        }

        async def write(session: AsyncSession) -> None:
            existing = await session.get(CallRow, self.call_sid)
            if existing is None:
                session.add(CallRow(**row))
            else:  # the same call streamed again (e.g. after a transfer back): keep its history
                existing.ended_at = None
                existing.outcome = None

        self._submit("call started", write)

    def turn(self, turn: Turn) -> None:
        """A new transcript entry, or a change to one already recorded (an interrupted turn cut)."""
        values = {
            "role": turn.role,
            "text": turn.text,
            "spoken_at": turn.spoken_at,
            "item_id": turn.item_id,
            "response_id": turn.response_id,
            "interrupted": turn.interrupted,
            "heard_ms": turn.heard_ms,
            "audio_ms": turn.audio_ms,
            "latency_ms": turn.latency_ms,
        }
        if not turn.recorded or turn.item_id is None:
            turn.recorded = True
            self._insert(f"{turn.role} turn", TranscriptEntryRow, {"call_sid": self.call_sid, **values})
            return

        async def change(session: AsyncSession) -> None:
            await session.execute(
                update(TranscriptEntryRow)
                .where(
                    TranscriptEntryRow.call_sid == self.call_sid, TranscriptEntryRow.item_id == turn.item_id
                )
                .values(text=values["text"], interrupted=values["interrupted"], heard_ms=values["heard_ms"])
            )

        self._submit(f"{turn.role} turn change", change)

    def tool_call(self, outcome: ToolOutcome) -> None:
        """Record a tool call (batched), unless it was recorded already."""
        if outcome.recorded:
            return
        outcome.recorded = True
        self._insert(f"tool call {outcome.name}", ToolCallRow, self._tool_row(outcome))

    async def commit_tool_call(self, outcome: ToolOutcome) -> None:
        """Record a tool call and wait until it is committed (for tools that changed something: the
        caller is told only then). Marks the outcome recorded at once, so it is never written twice."""
        if outcome.recorded:
            return
        outcome.recorded = True
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        row = self._tool_row(outcome)
        self._writer.submit(
            WriteJob(
                f"tool call {outcome.name}", None, done, self._log, table=ToolCallRow.__table__, values=row
            )
        )
        await done

    def _tool_row(self, outcome: ToolOutcome) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "call_id": outcome.call_id,
            "name": outcome.name,
            "arguments": outcome.arguments,
            "result": outcome.output_json,
            "ok": outcome.ok,
            "started_at": datetime.fromtimestamp(outcome.started_at, UTC),
            "duration_ms": round(outcome.duration_s * 1000),
        }

    def segment_started(self, seq: int, kind: str, started_at: datetime) -> None:
        """Who the caller is with from now on (a warm transfer: assistant, hold, owner)."""
        row = {"call_sid": self.call_sid, "seq": seq, "kind": kind, "started_at": started_at}
        self._insert(f"{kind} segment", CallSegmentRow, row)

    def segment_ended(self, seq: int, ended_at: datetime, outcome: str | None) -> None:
        async def end(session: AsyncSession) -> None:
            await session.execute(
                update(CallSegmentRow)
                .where(CallSegmentRow.call_sid == self.call_sid, CallSegmentRow.seq == seq)
                .values(ended_at=ended_at, outcome=outcome)
            )

        self._submit("segment end", end)

    def usage(
        self,
        *,
        kind: str,
        ref: str | None,
        purpose: str | None,
        status: str | None,
        model: str,
        tokens: Usage,
        cost: Decimal,
        seconds: float | None = None,
    ) -> None:
        cost_nano = nanodollars(cost)
        row = {
            "call_sid": self.call_sid,
            "kind": kind,
            "ref": ref,
            "purpose": purpose,
            "status": status,
            "model": model,
            "text_in": tokens.text_in,
            "audio_in": tokens.audio_in,
            "cached_text": tokens.cached_text,
            "cached_audio": tokens.cached_audio,
            "text_out": tokens.text_out,
            "audio_out": tokens.audio_out,
            "seconds": seconds,
            "cost_nanousd": cost_nano,
        }

        # The call's total is summed from these when it ends (and by the start-up sweep after a crash).
        self._insert(f"{kind} usage", UsageRow, row)

    async def message(
        self,
        *,
        caller_number: str | None,
        caller_name: str | None,
        callback_number: str | None,
        message: str,
        urgency: str,
    ) -> int:
        """Store a message and wait until it is committed (the assistant only then confirms it)."""
        # Normalised here too, whoever calls: name and message are the caller's words.
        caller_name = caller_text.name(caller_name)
        message = caller_text.one_line(message, caller_text.MESSAGE_CHARS)

        async def write(session: AsyncSession) -> int:
            created = await session.execute(
                insert(MessageRow)
                .values(
                    call_sid=self.call_sid,
                    caller_number=caller_number,
                    caller_name=caller_name,
                    callback_number=callback_number,
                    message=message,
                    urgency=urgency,
                    created_at=datetime.now(UTC),
                )
                .returning(MessageRow.id)
            )
            return int(created.scalar_one())

        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit("message", write, done)
        return int(await done)

    def call_ended(
        self,
        *,
        ended_at: datetime,
        outcome: str,
        greeting_latency_ms: int | None,
        reconnects: int,
        summary: CallSummaryFields | None,
        caller_name: str | None,
        after: Operation | None = None,
    ) -> None:
        """Complete the call row; `after` runs in the same transaction (e.g. queueing notices)."""
        values: dict[str, Any] = {
            "ended_at": ended_at,
            "outcome": outcome,
            "greeting_latency_ms": greeting_latency_ms,
            "reconnects": reconnects,
        }
        caller_name = caller_text.name(caller_name)  # from a tool, the summary or the contact book
        if caller_name:
            values["caller_name"] = caller_name
        if summary is not None:
            values.update(
                summary=summary.summary,
                reason=summary.reason,
                follow_up=summary.follow_up,
                urgency=summary.urgency,
                summary_json=summary.raw,
            )
            if summary.caller_name and not caller_name:
                values["caller_name"] = summary.caller_name

        async def finish(session: AsyncSession) -> None:
            await session.execute(
                update(CallRow)
                .where(CallRow.call_sid == self.call_sid)
                .values(**values, cost_nanousd=call_cost(self.call_sid))
            )
            if after is not None:
                # In a savepoint: a failure to queue notices must not lose the call's end.
                try:
                    async with session.begin_nested():
                        await after(session)
                except Exception:
                    self._log.exception("could not queue the owner's notices")

        self._submit("call ended", finish)

    async def close(self, within_s: float = 10.0) -> None:
        """Wait until everything this call recorded is written (bounded)."""
        if not await self._writer.flushed(within_s):
            self._log.error("call record: writes still pending after %.0fs", within_s)

    def _submit(self, what: str, operation: Operation, done: asyncio.Future[Any] | None = None) -> None:
        self._writer.submit(WriteJob(what, operation, done, self._log))

    def _insert(self, what: str, table: Any, values: dict[str, Any]) -> None:
        self._writer.submit(WriteJob(what, None, None, self._log, table=table.__table__, values=values))


def call_cost(call_sid: str) -> Any:
    """SQL for the call's total cost: the sum of its usage records."""
    return (
        select(func.coalesce(func.sum(UsageRow.cost_nanousd), 0))
        .where(UsageRow.call_sid == call_sid)
        .scalar_subquery()
    )


def parse_summary(text: str) -> CallSummaryFields:
    """The model's summary JSON, tolerating prose around it; plain text becomes the summary.

    Every field is the caller's influence (the model summarises what they said): each is one clean
    line, bounded (caller_text), before it is stored and quoted in the caller's next call.
    """
    start, end = text.find("{"), text.rfind("}")
    try:
        data = json.loads(text[start : end + 1]) if start >= 0 and end > start else None
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return CallSummaryFields(summary=caller_text.optional_line(text, caller_text.SUMMARY_CHARS), raw=text)

    def string(key: str, limit: int) -> str | None:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        return caller_text.optional_line(str(value), limit)

    urgency = (string("urgency", 20) or "").lower()
    follow = data.get("follow_up_needed", data.get("follow_up"))
    return CallSummaryFields(
        summary=string("summary", caller_text.SUMMARY_CHARS),
        caller_name=string("caller_name", caller_text.NAME_CHARS),
        reason=string("reason", caller_text.REASON_CHARS),
        follow_up=follow if isinstance(follow, bool) else None,
        urgency=urgency if urgency in ("low", "normal", "high", "urgent") else None,
        raw=text,
    )
