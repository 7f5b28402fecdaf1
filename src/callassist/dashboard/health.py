"""The server's health as the owner sees it: is the assistant answering, are Twilio and the calendar
usable, how the owner's notices are doing, how many calls are live. The dashboard's health panel
shows it and Prometheus reads the same facts as gauges on /metrics (`HealthMonitor` refreshes them
every `CHECK_EVERY_S` and whenever the panel is opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.calendar.base import CalendarEvent
from callassist.store.db import describe_failure
from callassist.store.models import OutboxRow
from callassist.telephony.rest import credentials_valid

if TYPE_CHECKING:
    from callassist.calendar.base import Calendar
    from callassist.call.registry import CallRegistry
    from callassist.settings import Settings
    from callassist.store.db import Database


class Runtime(Protocol):
    """What the health needs of the server's runtime (callassist.runtime.Runtime), named here so
    this module doesn't import the composition root that builds it."""

    settings: Settings
    openai_degraded: bool
    calendar: Calendar | None
    database: Database
    registry: CallRegistry
    ready: bool


log = logging.getLogger(__name__)
CALENDAR_DEADLINE_S = 2.0
CHECK_EVERY_S = 60.0
FIRST_CHECK_S = 10.0  # after start-up: the server's own start is not slowed by a calendar request

OPENAI_UP = Gauge(
    "callassist_openai_up", "1 while the assistant answers calls (0: the last call couldn't reach OpenAI)"
)
TWILIO_SIGNED = Gauge(
    "callassist_twilio_signatures", "1 when TWILIO_AUTH_TOKEN is set (webhooks are signature-checked)"
)
TWILIO_CREDENTIALS = Gauge(
    "callassist_twilio_credentials_valid",
    "1 when Twilio accepted TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN at the last check (0: refused "
    "or not reachable; texts and transfers need them)",
)
CALENDAR_UP = Gauge("callassist_calendar_up", "1 when the calendar answered its last check")
NOTICES_PENDING = Gauge("callassist_notices_pending", "Owner notices waiting to be delivered")
NOTICES_FAILED = Gauge("callassist_notices_failed", "Owner notices given up for good")


@dataclass(frozen=True)
class Fact:
    name: str
    ok: bool | None  # None: not configured (neither good nor bad), or not known just now
    detail: str
    unknown: bool = False  # ok is None because it could not be checked, not because it is off

    @property
    def label(self) -> str:
        if self.ok:
            return "OK"
        return "problem" if self.ok is False else "unknown" if self.unknown else "not set"


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


async def twilio_credentials(runtime: Runtime) -> bool | None:
    """Twilio's answer about the account's credentials (None: not configured, or not reachable)."""
    settings = runtime.settings
    if not (settings.twilio_account_sid and settings.signature_token):
        return None
    return await credentials_valid(
        settings.twilio_account_sid, settings.signature_token, api_base_url=settings.twilio_api_base_url
    )


def facts(
    runtime: Runtime, outbox: Outbox | None, calendar_ok: bool, twilio_ok: bool | None = None
) -> list[Fact]:
    settings = runtime.settings
    openai = Fact(
        "OpenAI",
        not runtime.openai_degraded,
        "unreachable on the last call: callers get the voicemail"
        if runtime.openai_degraded
        else "answering (as the last calls saw it)",
    )
    if not settings.signatures_required:
        twilio = Fact("Twilio", None, "no auth token: only this machine's simulator can call")
    elif not settings.twilio_account_sid:
        twilio = Fact(
            "Twilio", True, "webhooks are signature-checked; no TWILIO_ACCOUNT_SID: no texts, no transfers"
        )
    elif twilio_ok is False:
        twilio = Fact("Twilio", False, "Twilio refused TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN: check them")
    elif twilio_ok is None:
        twilio = Fact(
            "Twilio", None, "webhooks are signature-checked; Twilio's API could not be reached", unknown=True
        )
    else:
        twilio = Fact("Twilio", True, "credentials valid; webhooks are signature-checked")
    calendar = Fact(
        "Calendar",
        calendar_ok,
        f"{settings.calendar}: {'reachable' if calendar_ok else 'could not be read just now'}",
    )
    if outbox is None:
        notices = Fact("Notices", False, "the database could not be read")
    else:
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


class HealthMonitor:
    """Checks the health every `every_s` (and on demand) and keeps the gauges up to date."""

    def __init__(
        self, runtime: Runtime, every_s: float = CHECK_EVERY_S, first_s: float = FIRST_CHECK_S
    ) -> None:
        self._runtime = runtime
        self._every_s = every_s
        self._first_s = first_s
        self._task: asyncio.Task[None] | None = None
        self.last: list[Fact] = []
        # Read when scraped: never stale (the process's one runtime; the last one built in tests).
        OPENAI_UP.set_function(lambda: 0.0 if runtime.openai_degraded else 1.0)
        TWILIO_SIGNED.set_function(lambda: 1.0 if runtime.settings.signatures_required else 0.0)

    async def check(self) -> list[Fact]:
        runtime = self._runtime
        calendar_ok = await upcoming(runtime, days=1) is not None
        twilio_ok = await twilio_credentials(runtime)
        TWILIO_CREDENTIALS.set(1 if twilio_ok else 0)
        outbox: Outbox | None
        try:
            async with runtime.database.session(read_only=True) as session:
                outbox = await outbox_state(session)
        except Exception as exc:
            log.warning("the health check could not read the notices: %s", type(exc).__name__)
            outbox = None
        self.last = facts(runtime, outbox, calendar_ok, twilio_ok)
        CALENDAR_UP.set(1 if calendar_ok else 0)
        if outbox is not None:
            NOTICES_PENDING.set(outbox.pending)
            NOTICES_FAILED.set(outbox.failed)
        return self.last

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self._first_s)
        while True:
            try:
                await self.check()
            except Exception as exc:
                log.error("the health check failed: %s", describe_failure(exc))
            await asyncio.sleep(self._every_s)
