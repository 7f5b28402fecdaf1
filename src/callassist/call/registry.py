"""The live calls of this server: admission while running, a clean goodbye for each on shutdown.

A Media Stream goes through two gates. From the handshake to its `start` it is *pre-start*: a
small pool of its own (`PRE_START_LIMIT`) with a short deadline (media/twilio.py START_TIMEOUT_S),
because a handshake can be replayed while its call's token is unclaimed (each carries its call's
token in its URL and is refused before accept once that token is claimed, or while another stream
of the call is open) and each such stream may already hold an OpenAI connection.
Only a stream admitted at `start` (its call's token claimed
in the store) takes one of CALLASSIST_MAX_CALLS' slots, so streams that never send `start`, or
send one that is refused, can't keep real callers out.
When the pool is full, the stream that has waited longest without a `start` makes room, if it has
waited longer than Twilio ever takes (`EVICT_AFTER_S`): a flood must then be fast, not just wide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from callassist import observability as obs

if TYPE_CHECKING:
    from callassist.call.call import Call
    from callassist.media.twilio import TwilioMediaStream

log = logging.getLogger(__name__)
CLEANUP_S = 3.5  # after the goodbye: tools (1 s), summary (1.5 s), close (1 s), record flush
PRE_START_LIMIT = 32  # streams waiting for `start` at once (a burst of real calls on a busy loop fits)
EVICT_AFTER_S = 0.5  # Twilio sends `connected` and `start` right after the handshake


class StreamTicket:
    """One Media Stream's place, from the handshake to its end."""

    __slots__ = ("_live", "_registry", "_waiting", "call", "call_sid", "opened_at", "stream")

    def __init__(self, registry: CallRegistry, call_sid: str | None = None) -> None:
        self._registry = registry
        self.call_sid = call_sid
        self.opened_at = time.monotonic()
        self.stream: TwilioMediaStream | None = None
        self.call: Call | None = None
        self._waiting = True  # in the pre-start pool
        self._live = False  # holds a call slot

    @property
    def waiting(self) -> bool:
        return self._waiting

    def start_received(self) -> None:
        """A `start` arrived: the stream leaves the pool while it is admitted (a forged token is
        refused at once, a real one within the store's few milliseconds)."""
        self._leave_pool()

    def start_call(self, call: Call) -> bool:
        """The stream was admitted at `start`: it takes a call slot, if one is free (False: all
        CALLASSIST_MAX_CALLS slots are taken)."""
        self._leave_pool()
        self.call = call
        self._live = self._registry.add(call)
        return self._live

    def close(self) -> None:
        """The stream is over (and whatever it opened closed): whatever it held is given back."""
        self._leave_pool()
        if self._live and self.call is not None:
            self._registry.remove(self.call)
        self._live = False
        self._registry._closed(self)

    def _evictable(self, now: float) -> bool:
        stream = self.stream
        return now - self.opened_at >= EVICT_AFTER_S and (stream is None or not stream.started)

    def _leave_pool(self) -> None:
        if self._waiting:
            self._waiting = False
            self._registry._left_pool(self)


class CallRegistry:
    def __init__(self, max_calls: int | None = None, *, pre_start_limit: int = PRE_START_LIMIT) -> None:
        self._calls: set[Call] = set()
        self._by_sid: dict[str, Call] = {}
        self._empty = asyncio.Event()
        self._empty.set()
        self._pool: dict[StreamTicket, None] = {}  # pre-start streams, oldest first
        self._streams: set[StreamTicket] = set()  # every stream from its handshake to its end
        self._by_call: dict[str, StreamTicket] = {}  # the one open stream of each call
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self.max_calls = max_calls
        self.pre_start_limit = pre_start_limit
        self.accepting = True

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def pre_start(self) -> int:
        return len(self._pool)

    @property
    def full(self) -> bool:
        return self.max_calls is not None and len(self._calls) >= self.max_calls

    def has_stream(self, call_sid: str) -> bool:
        """A stream of this call is open (waiting for `start` or live)."""
        return call_sid in self._by_call

    def open_stream(self, call_sid: str | None = None) -> StreamTicket | None:
        """A place in the pre-start pool for a new stream, or None if the pool is full of streams
        that are all still young enough to be Twilio's, or if `call_sid` has a stream open already
        (one stream per call: a second handshake for it is a replay)."""
        if call_sid is not None and call_sid in self._by_call:
            obs.STREAMS_REFUSED.labels(reason="call-has-stream").inc()
            return None
        if len(self._pool) >= self.pre_start_limit and not self._evict_one():
            obs.STREAMS_REFUSED.labels(reason="pre-start-full").inc()
            return None
        ticket = StreamTicket(self, call_sid)
        if call_sid is not None:
            self._by_call[call_sid] = ticket
        self._pool[ticket] = None
        self._streams.add(ticket)
        self._no_streams.clear()
        obs.STREAMS_PRE_START.inc()
        return ticket

    def _left_pool(self, ticket: StreamTicket) -> None:
        del self._pool[ticket]
        obs.STREAMS_PRE_START.dec()

    def _closed(self, ticket: StreamTicket) -> None:
        self._streams.discard(ticket)
        if ticket.call_sid is not None and self._by_call.get(ticket.call_sid) is ticket:
            del self._by_call[ticket.call_sid]
        if not self._streams:
            self._no_streams.set()

    async def wait_no_streams(self, within_s: float) -> None:
        """Until every Media Stream has ended, and what it opened is closed (calls or not);
        TimeoutError after `within_s`."""
        await asyncio.wait_for(self._no_streams.wait(), within_s)

    def _evict_one(self) -> bool:
        now = time.monotonic()
        victim = next((ticket for ticket in self._pool if ticket._evictable(now)), None)
        if victim is None:
            return False
        victim._leave_pool()
        obs.STREAMS_REFUSED.labels(reason="evicted").inc()
        if victim.stream is not None:
            victim.stream.evict()
        return True

    def add(self, call: Call) -> bool:
        """Take a call slot for an admitted stream; False if all are taken."""
        if self.full:
            return False
        self._calls.add(call)
        self._by_sid[call.call_sid] = call
        self._empty.clear()
        return True

    def remove(self, call: Call) -> None:
        self._calls.discard(call)
        if self._by_sid.get(call.call_sid) is call:
            del self._by_sid[call.call_sid]
        if not self._calls:
            self._empty.set()

    def find(self, call_sid: str) -> Call | None:
        """The live call with this CallSid, if there is one."""
        return self._by_sid.get(call_sid)

    async def wait_idle(self, within_s: float) -> None:
        """Until no call is live (and its record is complete); TimeoutError after `within_s`."""
        await asyncio.wait_for(self._empty.wait(), within_s)

    async def drain(self, grace_s: float) -> None:
        """Stop taking calls; let each live call say goodbye and end within `grace_s`, and its record
        be completed (a few seconds more: summary, socket close, last writes)."""
        self.accepting = False
        if not self._calls:
            return
        log.info("shutting down: ending %d live call(s) within %.0fs", len(self._calls), grace_s)
        await asyncio.gather(*(call.wind_down(grace_s) for call in list(self._calls)), return_exceptions=True)
        try:
            await self.wait_idle(CLEANUP_S)
        except TimeoutError:
            log.warning("%d call(s) still open after the grace period", len(self._calls))
