"""The health panel: is the assistant reachable, are Twilio and the calendar usable, how the owner's
notices are doing. Each fact is checked here, quickly (the calendar with a short deadline)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.calendar.base import CalendarEvent
from callassist.runtime import Runtime
from callassist.store.models import OutboxRow

log = logging.getLogger(__name__)
CALENDAR_DEADLINE_S = 2.0


@dataclass(frozen=True)
class Fact:
    name: str
    ok: bool | None  # None: not configured (neither good nor bad)
    detail: str


@dataclass(frozen=True)
class Outbox:
    pending: int
    failed: int
    last_error: str | None


async def outbox_state(session: AsyncSession) -> Outbox:
    counts = dict(
        (status, count)
        for status, count in await session.execute(
            select(OutboxRow.status, func.count(OutboxRow.id)).group_by(OutboxRow.status)
        )
    )
    last_error = await session.scalar(
        select(OutboxRow.last_error)
        .where(OutboxRow.last_error.is_not(None))
        .order_by(OutboxRow.created_at.desc(), OutboxRow.id.desc())
        .limit(1)
    )
    return Outbox(int(counts.get("pending", 0)), int(counts.get("failed", 0)), last_error)


async def upcoming(runtime: Runtime, days: int = 14) -> list[CalendarEvent] | None:
    """The calendar's next `days` days, or None when the calendar can't be read right now."""
    if runtime.calendar is None:
        return None
    now = datetime.now(UTC)
    try:
        async with asyncio.timeout(CALENDAR_DEADLINE_S):
            events = await runtime.calendar.events_between(now, now + timedelta(days=days))
    except Exception as exc:  # a CalDAV server down, refusing, slow: the page says so
        log.warning("the dashboard could not read the calendar: %s", type(exc).__name__)
        return None
    return sorted(events, key=lambda event: event.start)


async def facts(runtime: Runtime, outbox: Outbox, calendar_ok: bool) -> list[Fact]:
    settings = runtime.settings
    openai = Fact(
        "OpenAI",
        not runtime.openai_degraded,
        "unreachable on the last call: callers get the voicemail"
        if runtime.openai_degraded
        else "answering (as the last calls saw it)",
    )
    twilio = Fact(
        "Twilio",
        True if settings.signatures_required else None,
        "auth token set: webhooks are signature-checked"
        if settings.signatures_required
        else "no auth token: only this machine's simulator can call",
    )
    calendar = Fact(
        "Calendar",
        calendar_ok,
        f"{settings.calendar}: {'reachable' if calendar_ok else 'could not be read just now'}",
    )
    notices = Fact(
        "Notices",
        outbox.failed == 0,
        f"{outbox.pending} waiting, {outbox.failed} given up"
        + (f"; last error: {outbox.last_error}" if outbox.last_error else ""),
    )
    calls = Fact(
        "Calls",
        runtime.ready and runtime.registry.accepting,
        f"{len(runtime.registry)} live"
        + ("" if runtime.registry.accepting else "; shutting down, not taking calls"),
    )
    return [openai, twilio, calendar, notices, calls]
