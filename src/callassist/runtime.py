"""The composition root: everything a request or a call needs, built once per server (`Runtime`),
started and stopped with it, and handed to routes as a typed FastAPI dependency (`RuntimeDep`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends
from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from callassist.calendar.base import Calendar
from callassist.calendar.booking import BookingService
from callassist.calendar.factory import open_calendar
from callassist.call.aftercall import CallFacts, close_unfinished_calls, owner_notice
from callassist.call.deps import CallDeps, EndReason
from callassist.call.events import (
    AssistantLost,
    CallEnded,
    CallEvent,
    CallEvents,
    CostAdded,
    TurnHeard,
    count_calls,
)
from callassist.call.registry import CallRegistry
from callassist.dashboard.auth import FailureLimiter
from callassist.dashboard.health import HealthMonitor
from callassist.dashboard.live import LiveCalls
from callassist.notify.notices import (
    build_notifiers,
    close_notifiers,
    enqueue_call_notices,
    enqueue_owner_notices,
)
from callassist.notify.outbox import OutboxWorker, Sender
from callassist.notify.sms import TwilioSms
from callassist.realtime.pricing import PriceTable
from callassist.settings import Settings
from callassist.store.admission import StreamAdmissions
from callassist.store.contacts import caller_memory
from callassist.store.db import Database, describe_failure
from callassist.store.models import utc_now
from callassist.store.writer import RecordWriter
from callassist.telephony.owner_line import TwilioOwnerLine
from callassist.telephony.signature import SignatureChecker, StreamTokens
from callassist.tools import all_tools
from callassist.tools.registry import ToolRegistry
from callassist.tools.services import ToolServices

log = logging.getLogger(__name__)
HEALTH_NOTICE_GAP_S = 1800.0  # at most one "assistant is down" notice per half hour


@dataclass
class Runtime:
    """Everything a request or a call needs, built once per server."""

    settings: Settings
    openai: AsyncOpenAI
    signatures: SignatureChecker
    stream_tokens: StreamTokens
    registry: CallRegistry
    database: Database
    tools: ToolRegistry
    prices: PriceTable
    records: RecordWriter
    admissions: StreamAdmissions
    calendar: Calendar | None = None
    tool_services: ToolServices | None = None
    deps: CallDeps | None = None
    # What every call publishes (calls started and ended, turns, tools, costs): metrics and this
    # runtime subscribe, and so can a live dashboard.
    events: CallEvents = field(default_factory=lambda: CallEvents(count_calls))
    senders: dict[str, Sender] = field(default_factory=dict)
    code_sender: TwilioSms | None = None  # one-time codes to confirm a caller's number
    owner_line: TwilioOwnerLine | None = None  # rings the owner for a warm transfer
    # Calls whose assistant failed (OpenAI unreachable): /voice/stream-ended apologises to them.
    assistant_failures: OrderedDict[str, None] = field(default_factory=OrderedDict)
    outbox: OutboxWorker | None = None
    # Refused owner requests per client (API, calendar feed): repeated ones get 429.
    owner_failures: FailureLimiter = field(default_factory=FailureLimiter)
    # The calls in progress as the dashboard's live page shows them (fed by `events`).
    live: LiveCalls = field(default_factory=LiveCalls)
    health: HealthMonitor | None = None  # the dashboard's health panel and its Prometheus gauges
    ready: bool = False
    # The assistant's health as the last calls saw it: degraded from a call that could not reach
    # OpenAI until a call the model answers; the owner is told once at each change.
    openai_degraded: bool = False
    _last_called: str | None = None  # the number the last call came in on (SMS notices' sender)
    _health_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _down_noticed_at: float | None = None  # when the owner was last told the assistant is down
    _down_unresolved: bool = False  # ... and not yet that it is back

    def call_deps(self) -> CallDeps:
        """What each call gets from the server."""
        self.events.subscribe(self._on_call_event)
        return CallDeps(
            settings=self.settings,
            openai=self.openai,
            admissions=self.admissions,
            tools=self.tools,
            records=self.records,
            prices=self.prices,
            tool_services=self.tool_services,
            load_memory=self.load_memory,
            after_call=self.after_call,
            notices_queued=self.outbox.wake if self.outbox else None,
            events=self.events,
            owner_line=self.owner_line,
        )

    def _on_call_event(self, event: CallEvent) -> None:
        if isinstance(event, AssistantLost):
            self.assistant_failed(event.call_sid)
        elif isinstance(event, CallEnded):
            if event.reason == EndReason.openai_unavailable.value:
                self._assistant_health(degraded=True)
        elif isinstance(event, TurnHeard):
            if event.turn.role == "assistant":  # the model answered a call
                self._assistant_health(degraded=False)
        elif isinstance(event, CostAdded) and event.kind == "response":
            self._assistant_health(degraded=False)

    def _assistant_health(self, *, degraded: bool) -> None:
        """Record a change of the assistant's health and tell the owner, once per change."""
        if degraded == self.openai_degraded:
            return
        self.openai_degraded = degraded
        if degraded:
            log.error("the assistant is down (OpenAI unreachable): callers get the voicemail")
        else:
            log.info("the assistant is back: a call was answered")
        # Intermittent failures flip this on every other call: the owner hears of a failure at most
        # once per HEALTH_NOTICE_GAP_S, and of the recovery only after a failure they heard of.
        now = time.monotonic()
        if degraded:
            if self._down_noticed_at is not None and now - self._down_noticed_at < HEALTH_NOTICE_GAP_S:
                return
            self._down_noticed_at, self._down_unresolved = now, True
        elif not self._down_unresolved:
            return
        else:
            self._down_unresolved = False
        task = asyncio.get_running_loop().create_task(self._health_notice(degraded), name="health-notice")
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    async def _health_notice(self, degraded: bool) -> None:
        if not self.senders:
            return
        now = utc_now()
        when = now.astimezone(self.settings.zone).strftime("%H:%M")
        if degraded:
            subject = "callassist: the assistant is down"
            text = (
                f"callassist could not reach OpenAI at {when}: callers get a voicemail instead of the "
                "assistant until it answers again. Check OPENAI_API_KEY and OpenAI's status."
            )
        else:
            subject = "callassist: the assistant is back"
            text = f"callassist reached OpenAI again at {when}: the assistant answers calls again."
        key = f"assistant-{'down' if degraded else 'up'}:{now.isoformat()}"
        try:
            async with self.database.session() as session:
                await enqueue_owner_notices(
                    session, self.settings, key=key, text=text, subject=subject, sms_sender=self._last_called
                )
        except Exception as exc:
            log.error("could not queue the owner's notice that %s: %s", subject, describe_failure(exc))
            return
        if self.outbox is not None:
            self.outbox.wake()

    def assistant_failed(self, call_sid: str) -> None:
        self.assistant_failures[call_sid] = None
        while len(self.assistant_failures) > 1000:
            self.assistant_failures.popitem(last=False)

    def after_call(
        self, call_sid: str, called: str | None, facts: CallFacts
    ) -> Callable[[AsyncSession], Awaitable[Any]] | None:
        """The notices about this call, queued in the same transaction that completes its record."""
        self._last_called = called or self._last_called
        notice = owner_notice(facts, self.settings.zone)
        if notice is None or not self.senders:
            return None
        subject, text = notice

        async def queue(session: AsyncSession) -> None:
            await enqueue_call_notices(
                session, self.settings, call_sid=call_sid, text=text, subject=subject, sms_sender=called
            )

        return queue

    async def load_memory(self, number: str) -> tuple[str | None, list[str], bool]:
        """The caller's contact name, what their last calls were about, and whether the owner
        marked them VIP. The owner's private note about a contact is never given to the model on a
        caller's call."""
        async with self.database.session(read_only=True) as session:
            memory = await caller_memory(
                session, number, calls=self.settings.history_calls, zone=self.settings.zone
            )
        return memory.name, list(memory.past_calls), memory.vip

    async def caller_history(self, number: str) -> list[str]:
        """What a caller's earlier calls were about, once their number is confirmed during a call."""
        return (await self.load_memory(number))[1]

    async def start(self) -> None:
        """The I/O part of start-up: schema upgrade, calendar connection."""
        revision = await self.database.prepare()  # DatabaseUnavailable: one line saying why
        log.info("database %s at revision %s", self.database.url_for_display, revision)
        self.records.start()
        self.calendar = await open_calendar(self.settings, self.database)
        booking = BookingService(self.calendar, self.settings.hours, self.settings.zone)
        self.senders = build_notifiers(self.settings)
        self.code_sender = build_code_sender(self.settings)
        self.owner_line = TwilioOwnerLine(self.settings) if self.settings.transfer_possible else None
        self.tool_services = ToolServices(
            owner_name=self.settings.owner_name,
            booking=booking,
            codes=self.code_sender,
            caller_history=self.caller_history,
        )
        await close_unfinished_calls(self.database, self.settings, notify=bool(self.senders))
        if self.senders:
            self.outbox = OutboxWorker(self.database, self.senders)
            self.outbox.start()
        self.live.attach(self.database)
        self.events.subscribe(self.live.publish)
        self.health = HealthMonitor(self)
        self.health.start()
        self.deps = self.call_deps()

    async def stop(self) -> None:
        self.live.close()
        if self.health is not None:
            await self.health.stop()
        if self._health_tasks:  # a down/up notice being queued gets to finish
            await asyncio.wait(set(self._health_tasks), timeout=2.0)
        # Streams' claims made in memory reach the store (bounded), with the call records.
        await asyncio.gather(self.records.stop(), self.admissions.settled(within_s=10.0))
        if self.outbox is not None:
            await self.outbox.stop(grace_s=1.0)  # what is not sent yet stays queued for the next start
        await close_notifiers(self.senders)
        if self.code_sender is not None:
            await self.code_sender.aclose()
        if self.owner_line is not None:
            await self.owner_line.aclose()
        if self.calendar is not None:
            await self.calendar.close()
        await self.database.close()
        await self.openai.close()


def build_runtime(settings: Settings) -> Runtime:
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "missing"
    openai = AsyncOpenAI(api_key=api_key, base_url=settings.openai_base_url)
    secret = settings.twilio_auth_token
    token = secret.get_secret_value() if secret is not None and settings.signatures_required else None
    tools = all_tools(
        default_timeout_s=settings.tool_timeout_seconds,
        transfer=settings.transfer if settings.transfer_possible else "never",
    )
    database = Database.from_url(settings.database)
    # Derived from the auth token when there is one, so tokens survive a restart mid-call set-up.
    stream_tokens = StreamTokens(secret=token)
    return Runtime(
        settings=settings,
        openai=openai,
        signatures=SignatureChecker(token, settings.public_url, settings.stream_url()),
        stream_tokens=stream_tokens,
        registry=CallRegistry(settings.max_calls),
        database=database,
        tools=tools,
        prices=PriceTable.from_json(settings.prices),
        records=RecordWriter(database),
        admissions=StreamAdmissions(database, stream_tokens),
    )


def build_code_sender(settings: Settings) -> TwilioSms | None:
    """Texts for one-time codes, sent from the number the caller dialled: any Twilio account can."""
    if not (settings.twilio_account_sid and settings.signatures_required):
        return None
    assert settings.twilio_auth_token is not None
    return TwilioSms(
        settings.twilio_account_sid,
        settings.twilio_auth_token.get_secret_value(),
        from_number=settings.twilio_phone_number,
        api_base_url=settings.twilio_api_base_url,
    )


def describe_startup(settings: Settings) -> list[str]:
    """What the person starting the server should know, one line each (no secrets)."""
    lines = [
        f"callassist answering for {settings.owner_name} with "
        f"{settings.live_model if settings.engine == 'live' else settings.realtime_model} "
        f"(voice {settings.voice}, {settings.turn_detection.value}, time zone {settings.timezone})",
        f"Twilio voice webhook: {settings.public_url}/voice/incoming  (stream: {settings.stream_url()})",
        f"Dashboard: {settings.public_url}/dashboard"
        + ("" if settings.admin_token else "  (this machine only: CALLASSIST_ADMIN_TOKEN is not set)"),
    ]
    if not settings.signatures_required:
        lines.append(
            "TWILIO_AUTH_TOKEN is not set: webhooks and streams are accepted from loopback clients "
            "only (local trials); set it before connecting a real number."
        )
    if settings.owner_phone and settings.ring_owner_seconds > 0:
        lines.append(f"Ringing the owner for {settings.ring_owner_seconds}s before the assistant answers.")
    if settings.openai_base_url:
        lines.append(f"OpenAI endpoint: {settings.openai_base_url}")
    if PriceTable.from_json(settings.prices).prices_for(settings.realtime_model) is None:
        lines.append(
            f"No prices known for {settings.realtime_model}: call costs will read $0 (set CALLASSIST_PRICES)."
        )
    lines.append(f"Calendar: {settings.calendar}; working hours {settings.hours.describe()}")
    return lines


async def get_runtime(connection: HTTPConnection) -> Runtime:
    """The server's Runtime, for a request or a WebSocket (the app factory puts it in `app.state`).
    A coroutine so FastAPI calls it in the event loop, not in its thread pool."""
    runtime: Runtime = connection.app.state.runtime
    return runtime


# A route's parameter `runtime: RuntimeDep` gets the server's Runtime (HTTP and WebSocket routes alike).
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
