"""What every call needs from the server (built once, by the runtime), and how a call can end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from openai import AsyncOpenAI

from callassist import observability as obs
from callassist.call.events import CallEvents, count_calls
from callassist.realtime.pricing import PriceTable
from callassist.settings import Settings
from callassist.store.admission import StreamAdmissions
from callassist.store.writer import RecordWriter
from callassist.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from callassist.call.aftercall import CallFacts

# OpenAI connections opened ahead of `start` for streams not admitted yet, server-wide.
PRECONNECT_LIMIT = 10


class EndReason(StrEnum):
    caller_hung_up = "caller-hung-up"
    twilio_disconnected = "twilio-disconnected"
    assistant_hung_up = "assistant-hung-up"
    openai_unavailable = "openai-unavailable"
    server_shutdown = "server-shutdown"
    time_limit = "time-limit"
    rejected = "rejected"
    no_start = "no-start"
    busy = "busy"  # admitted, but every CALLASSIST_MAX_CALLS slot was taken
    twilio_unresponsive = "twilio-unresponsive"  # Twilio stopped reading the stream
    transferred = "transferred"  # put through to the owner (warm transfer)
    owner_hung_up = "owner-hung-up"  # the owner ended it from the dashboard


class TransferFailed(Exception):
    """Twilio refused or couldn't be reached (the text is for the log: no caller data in it)."""


class OwnerLine(Protocol):
    """How the owner is rung and the caller moved to them (Twilio's REST API in production:
    telephony/transfer.py; a stand-in in tests)."""

    async def ring(self, call_sid: str, called_number: str | None, whisper: str) -> str:
        """Ring the owner's phone with `whisper` and a key to take the call; the owner leg's id."""
        ...

    async def put_through(self, call_sid: str) -> None:
        """Move the caller's call to the owner (who pressed 1). TransferFailed if Twilio refused
        (the caller hung up meanwhile)."""
        ...

    async def hang_up(self, leg_sid: str) -> None:
        """End the owner's leg (ringing or answered)."""
        ...


# Loads (contact name, notes about earlier calls, VIP) for a caller number.
MemoryLoader = Callable[[str], Awaitable[tuple[str | None, list[str], bool]]]
# Given an ended call's facts (and its CallSid and dialled number), a store operation to run in the
# call's final transaction (the owner's notices), or None.
AfterCall = Callable[[str, str | None, "CallFacts"], Any]


class Preconnects:
    """The model connections opened before a stream is admitted, to have the session ready by the
    time Twilio's `start` is checked. Anyone holding a captured handshake can open streams, so they
    are capped: at most `limit` exist at once, each counted until it is closed or its stream is
    admitted; a stream beyond the cap connects once admitted (its greeting comes a little later)."""

    def __init__(self, limit: int = PRECONNECT_LIMIT) -> None:
        self.limit = limit
        self.held = 0

    def take(self) -> bool:
        if self.held >= self.limit:
            return False
        self.held += 1
        obs.REALTIME_PRECONNECTED.inc()
        return True

    def give_back(self) -> None:
        self.held -= 1
        obs.REALTIME_PRECONNECTED.dec()


@dataclass
class CallDeps:
    """What every call needs from the server, built once."""

    settings: Settings
    openai: AsyncOpenAI
    admissions: StreamAdmissions
    tools: ToolRegistry
    records: RecordWriter
    prices: PriceTable
    tool_services: Any = None
    load_memory: MemoryLoader | None = None
    after_call: AfterCall | None = None
    notices_queued: Callable[[], None] | None = None
    events: CallEvents = field(default_factory=lambda: CallEvents(count_calls))
    preconnects: Preconnects = field(default_factory=Preconnects)  # shared by the server's calls
    owner_line: OwnerLine | None = None  # rings the owner for a warm transfer (call/transfer.py)
