"""One OpenAI Realtime connection for one call: connect, configure, send, receive, reconnect.

The session owns the socket. The SDK opens it (URL, authentication) and reads it (`recv_bytes`);
what we send goes straight to the websocket under the SDK's connection: the SDK's `send_raw` adds
a send queue and task lookups on every caller frame (about 30 µs, the biggest share of our CPU per
call-minute; see bench/). The engine gets small typed events for the hot deltas, parsed with orjson;
everything else is parsed with the SDK's own event types. When the socket drops it reconnects with backoff,
lets the engine re-send its configuration (and context) before any audio, then carries on. Before
the 60-minute cap, the call can `rotate()` the call to a fresh session at a quiet moment instead.

One reason it is a little over 400 lines: the socket's whole life (connect, configure, reconnect,
rotation, close) shares one state; split, each part would reach into the others'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel, ValidationError
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callassist.engine.events import AssistantWords, AudioOut
from callassist.realtime.sending import Send, connection_options, no_socket, sender

log = logging.getLogger(__name__)

# Delays before each (re)connect attempt: the first is immediate (the 60-minute cap, a blip).
RECONNECT_BACKOFF: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# A caller hears silence meanwhile: give up on the first connect after this long, so the call falls
# back to voicemail within 3 s of the stream starting (the connect starts at the stream's accept; the
# stream's close and Twilio's <Connect action> request take the rest). A 401/403 gives up at once; a
# refused socket, 429/503 and a handshake that never completes are retried until this deadline.
# Reconnects mid-call keep the longer RECONNECT_DEADLINE_S (the caller knows someone is there).
CONNECT_DEADLINE_S = 2.0
RECONNECT_DEADLINE_S = 15.0
# Caller audio kept while reconnecting, replayed to the new session so nothing said is lost.
MAX_BUFFERED_AUDIO_FRAMES = 10 * 50  # ~10 s of 20 ms frames
# Moving to a fresh session ahead of the cap: how long an opened spare waits for a quiet moment.
ROTATE_WAIT_S = 30.0
ROTATE_POLL_S = 0.1
_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'


@dataclass(slots=True, frozen=True)
class OtherEvent:
    """An event the engine doesn't act on: only its type, without the cost of a typed parse."""

    type: str


@dataclass(slots=True, frozen=True)
class Reconnected:
    """The socket dropped and a new server session is ready (configured, context replayed)."""

    attempt: int
    downtime_s: float
    close_code: int | None
    rotated: bool = False  # moved on purpose, ahead of the session cap (nothing was lost)


SessionEvent = AudioOut | AssistantWords | Reconnected | OtherEvent | RealtimeServerEvent


class RealtimeUnavailable(Exception):
    """OpenAI could not be reached (or refused us) after every retry."""


# Called after every (re)connect, before anything else is sent; returns the events to send first.
SetupHook = Callable[[bool], Awaitable[Sequence[dict[str, Any]]]]


class RealtimeSession:
    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        *,
        setup: SetupHook,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
        typed_events: Mapping[str, type[BaseModel]] | None = None,
        backoff: Sequence[float] = RECONNECT_BACKOFF,
        connect_timeout: float = 10.0,
    ) -> None:
        """typed_events: the event types to parse, each into its SDK model (None: all, by the SDK).
        Events nobody reads arrive as OtherEvent: the SDK's parse costs ~100x a JSON parse."""
        self._client = client
        self._typed_events = typed_events
        self._model = model
        self._setup = setup
        self._log = logger
        self._backoff = tuple(backoff)
        self._connect_timeout = connect_timeout
        self._connection: AsyncRealtimeConnection | None = None
        self._sender: tuple[AsyncRealtimeConnection | None, Send] = (None, no_socket)
        self._ready = False  # configured and accepting audio
        self._ready_event = asyncio.Event()
        self._closing = False
        self._buffered_audio: deque[str] = deque(maxlen=MAX_BUFFERED_AUDIO_FRAMES)
        # Held while the socket is being replaced (a reconnect or a rotation), so only one happens.
        self._switching = asyncio.Lock()
        self._rotated: Reconnected | None = None  # a rotation events() has yet to report
        self._retiring: set[AsyncRealtimeConnection] = set()  # rotated away from, being closed
        self.reconnects = 0
        self.rotations = 0
        self.connected_at: float | None = None

    # Connection ---------------------------------------------------------------------------------

    async def _connect(self) -> AsyncRealtimeConnection:
        options = connection_options(self._connect_timeout)
        manager = self._client.realtime.connect(model=self._model, websocket_connection_options=options)
        return await manager.enter()

    async def connect(self) -> None:
        """Open the socket (no configuration yet). Raises RealtimeUnavailable if it can't."""
        self._connection = await self._connect_with_retries(first=True)

    async def configure(self, *, reconnect: bool = False) -> None:
        """Send the setup events, then any caller audio buffered meanwhile. If the new
        socket drops while this happens, a fresh one is set up (within the reconnect deadline)."""
        try:
            await self._configure(reconnect)
        except ConnectionClosed as exc:
            self._log.warning("OpenAI closed the session during setup: %s", _describe(exc))
            await self._reestablish(reconnect=reconnect)

    async def _configure(self, reconnect: bool) -> None:
        connection = self._require_connection()
        # Audio that arrived meanwhile follows the setup, all of it and in order (a caller's "Hello?"
        # as the line opens may interrupt the greeting; the model then answers that instead).
        for event in await self._setup(reconnect):
            await sender(connection)(json.dumps(event))
        buffered = self._buffered_audio
        while buffered:
            await sender(connection)(_APPEND_PREFIX + buffered[0] + '"}')
            buffered.popleft()  # only once sent: a socket that drops meanwhile leaves it for the next
        self._ready = True
        self._ready_event.set()
        self.connected_at = time.monotonic()

    async def wait_ready(self, within_s: float) -> bool:
        """Wait until a configured session accepts events (after a reconnect, say)."""
        if self._ready:
            return True
        try:
            await asyncio.wait_for(self._ready_event.wait(), within_s)
        except TimeoutError:
            return False
        return self._ready

    def _not_ready(self) -> None:
        self._ready = False
        self._ready_event.clear()

    async def _connect_with_retries(self, *, first: bool) -> AsyncRealtimeConnection:
        last_error: BaseException | None = None
        deadline = time.monotonic() + (CONNECT_DEADLINE_S if first else RECONNECT_DEADLINE_S)
        for attempt, delay in enumerate(self._backoff, start=1):
            if self._closing:
                break
            if delay:
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                connection = await asyncio.wait_for(self._connect(), min(self._connect_timeout, remaining))
                if self._closing:  # the call ended while we were connecting: don't leave it open
                    with contextlib.suppress(Exception):
                        await connection.close()
                    raise RealtimeUnavailable("the call ended while connecting")
                return connection
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise RealtimeUnavailable(
                        f"OpenAI refused the connection (HTTP {status}): check OPENAI_API_KEY"
                    ) from exc
                last_error = exc
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                last_error = exc
            except Exception as exc:  # the SDK wraps some failures in its own types
                last_error = exc
            self._log.warning(
                "OpenAI %s attempt %d failed: %s",
                "connect" if first else "reconnect",
                attempt,
                _describe(last_error),
            )
        raise RealtimeUnavailable(f"could not reach OpenAI Realtime: {_describe(last_error)}")

    def _require_connection(self) -> AsyncRealtimeConnection:
        if self._connection is None:
            raise RealtimeUnavailable("not connected")
        return self._connection

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def buffered_frames(self) -> int:
        """Caller frames held for the next session (they arrived while it was down)."""
        return len(self._buffered_audio)

    # Sending -------------------------------------------------------------------------------------

    async def send_audio(self, payload: str) -> None:
        """Forward one caller audio frame (base64 μ-law) as-is; kept for the next session if down."""
        if not self._ready:
            self._buffered_audio.append(payload)
            return
        connection = self._connection
        current = self._sender
        if current[0] is not connection:
            current = self._sender = (connection, sender(connection))
        try:
            await current[1](_APPEND_PREFIX + payload + '"}')
        except ConnectionClosed:
            if connection is self._connection:
                self._not_ready()
                self._buffered_audio.append(payload)
            else:  # rotated away from meanwhile: the frame goes the current way
                await self.send_audio(payload)

    async def send(self, event: dict[str, Any]) -> bool:
        """Send one client event. Returns False if the socket is down (the receiver reconnects)."""
        connection = self._connection
        if not self._ready or connection is None:
            self._log.info("dropped %s while OpenAI is reconnecting", event.get("type"))
            return False
        try:
            await sender(connection)(json.dumps(event))
        except ConnectionClosed:
            if connection is self._connection:
                self._not_ready()
            return False
        return True

    # Receiving -----------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Server events, across reconnects, until close() is called or OpenAI stays unreachable."""
        while not self._closing:
            connection = self._require_connection()
            try:
                raw = await connection.recv_bytes()
            except ConnectionClosed as exc:
                if self._closing:
                    return
                if connection is not self._connection:
                    # Rotated away from: its successor already carries the call.
                    rotated, self._rotated = self._rotated, None
                    if rotated is not None:
                        yield rotated
                    continue
                close_code = exc.rcvd.code if exc.rcvd is not None else None
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                self._not_ready()
                self._log.warning("OpenAI closed the session (%s %s); reconnecting", close_code, reason)
                dropped_at = time.monotonic()
                async with self._switching:
                    await self._reestablish()
                self.reconnects += 1
                yield Reconnected(self.reconnects, time.monotonic() - dropped_at, close_code)
                continue
            if connection is not self._connection:
                continue  # rotated away from (at a quiet moment): what it still says is moot
            event = self._parse(connection, raw)
            if event is not None:
                yield event

    async def _reestablish(self, *, reconnect: bool = True) -> None:
        """Connect and configure a new server session; a session that drops while being set up
        is retried too, a bounded number of times."""
        for _ in range(3):
            self._connection = await self._connect_with_retries(first=False)
            try:
                await self._configure(reconnect)
                return
            except ConnectionClosed as exc:
                self._log.warning("OpenAI closed the new session during setup: %s", _describe(exc))
        raise RealtimeUnavailable("OpenAI keeps closing new sessions during setup")

    def _parse(self, connection: AsyncRealtimeConnection, raw: bytes) -> SessionEvent | None:
        try:
            data = orjson.loads(raw)
            kind = data.get("type")
            if kind == "response.output_audio.delta":
                return AudioOut(data["response_id"], data["item_id"], data["delta"])
            if kind == "response.output_audio_transcript.delta":
                return AssistantWords(data["item_id"], data["delta"])
            if not isinstance(kind, str):
                raise ValueError("event without a type")
        except (ValueError, KeyError, AttributeError, TypeError, RecursionError) as exc:  # orjson's too
            self._log.warning("ignored an unreadable event from OpenAI: %s", _describe(exc))
            return None
        if self._typed_events is None:
            return connection.parse_event(raw)
        model = self._typed_events.get(kind)
        if model is None:
            return OtherEvent(kind)
        try:
            # pydantic's own validation of the SDK's model: 4-25x faster than the SDK's parse (a
            # pure-Python walk of the union), and the same model for anything that fits its types.
            return model.model_validate(data)  # type: ignore[return-value]  # a RealtimeServerEvent
        except ValidationError:
            # A value the SDK's types don't know yet (a new status, say): the SDK's parse never
            # refuses one, and the event still arrives.
            return connection.parse_event(raw)

    async def rotate(self, quiet: Callable[[], bool], *, within_s: float = ROTATE_WAIT_S) -> bool:
        """Move the call to a fresh server session before the old one hits OpenAI's 60-minute cap.

        The new socket is opened while the old one still carries the call. The switch itself waits
        for `quiet()` (nobody speaking, no response or tool under way: the call knows): then the
        caller's audio is held for the few milliseconds the setup takes, replayed to the new session,
        and the old socket is closed. False if nothing changed (no new session could be opened, no
        quiet moment came, or the socket was being replaced already): the old session carries on
        and the cap's reconnect remains.
        """
        if self._closing or not self._ready or self._switching.locked():
            return False
        old = self._connection
        started = time.monotonic()
        try:
            fresh = await self._connect_with_retries(first=False)
        except RealtimeUnavailable as exc:
            self._log.warning("could not open a new OpenAI session to move to: %s", exc)
            return False
        deadline = time.monotonic() + within_s
        switched = False
        try:
            while not (quiet() and self._ready and self._connection is old and not self._closing):
                if time.monotonic() > deadline or self._closing or self._connection is not old:
                    return False
                await asyncio.sleep(ROTATE_POLL_S)
            async with self._switching:
                if self._closing or not self._ready or self._connection is not old or not quiet():
                    return False
                self._not_ready()  # caller audio waits in the buffer until the new session is set up
                self._connection = fresh
                switched = True
                try:
                    await self._configure(reconnect=True)
                except Exception as exc:
                    # Closing the new socket too makes events() reconnect from scratch once the
                    # old one is closed: the call never sits on a session that isn't configured.
                    self._log.warning("the new OpenAI session failed during setup: %s", _describe(exc))
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(fresh.close(), timeout=2.0)
                    return True
                self.rotations += 1
                self._rotated = Reconnected(self.reconnects, time.monotonic() - started, None, rotated=True)
        finally:
            retired = old if switched else fresh
            if retired is not None:
                self._retiring.add(retired)  # close() closes it if this task is cancelled first
                # Longer than the socket's own close timeout, so a close is never cut half-way.
                with contextlib.suppress(TimeoutError, ConnectionClosed, OSError):
                    await asyncio.wait_for(retired.close(), timeout=2.0)
                self._retiring.discard(retired)
        return True

    @property
    def switching(self) -> bool:
        """Is the socket being replaced right now (a reconnect or a rotation)?"""
        return self._switching.locked()

    async def settled(self, within_s: float) -> bool:
        """Wait (a bounded time) until no switch to a new socket is under way."""
        try:
            await asyncio.wait_for(self._switching.acquire(), within_s)
        except TimeoutError:
            return False
        self._switching.release()
        return self._ready

    # Closing -------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the socket normally; `events()` then ends."""
        self._closing = True
        self._not_ready()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(TimeoutError, ConnectionClosed, OSError):
                await asyncio.wait_for(connection.close(), timeout=1.0)
            # Keep the object so a concurrent events() sees ConnectionClosed and returns.
            self._connection = connection
        for retired in list(self._retiring):
            with contextlib.suppress(TimeoutError, ConnectionClosed, OSError):
                await asyncio.wait_for(retired.close(), timeout=1.0)

    @property
    def session_age(self) -> float:
        return 0.0 if self.connected_at is None else time.monotonic() - self.connected_at


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"
