"""One GPT-Live WebSocket for one call: connect, start, send, receive, reconnect, close.

The SDK opens the socket (`client.live.connect`: URL, authentication, no query parameters) and reads
it (`recv_bytes`); what we send is written to the websocket under its connection, a frame that can
go at once going at once (realtime/sending.py measured why: the SDK's send path costs ~30 µs a caller
frame). A session starts with `session.start` and is usable once `session.started` came back
(SessionStartEvent's docstring); a refusal then (an `error` about our session.start, or HTTP 401/403
at the handshake) raises LiveRefused, which the call may answer by falling back to Realtime. A socket
that drops is replaced (`replace`, once the engine has handled what came before it) with backoff,
and the new session started with the conversation so far as `input` items (the engine's start
hook); caller audio is kept meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from openai import AsyncOpenAI
from openai.resources.live.live import AsyncLiveConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callassist.live.config import START_ID
from callassist.realtime.sending import Send, connection_options, immediate, no_socket

log = logging.getLogger(__name__)

RECONNECT_BACKOFF: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# As for Realtime (realtime/session.py): the first connect gives up early so a caller gets the
# voicemail within about 3 s; a reconnect mid-call keeps trying longer.
CONNECT_DEADLINE_S = 2.0
RECONNECT_DEADLINE_S = 15.0
# session.start -> session.started: the first within the caller's voicemail budget (as the connect),
# a replacement's within the reconnect's patience.
START_TIMEOUT_S = 2.0
RESTART_TIMEOUT_S = 5.0
MAX_BUFFERED_AUDIO_FRAMES = 10 * 50  # ~10 s of 20 ms frames, replayed to the next session
_APPEND_PREFIX = '{"type":"session.input_audio.append","audio":"'


class LiveUnavailable(Exception):
    """GPT-Live could not be reached after every retry."""


class LiveRefused(LiveUnavailable):
    """GPT-Live refused this account or model (HTTP 401/403, or an error about our session.start):
    retrying won't help; Realtime might."""


@dataclass(slots=True, frozen=True)
class Restarted:
    """The socket dropped (or was rotated on purpose) and a new session has started."""

    downtime_s: float
    close_code: int | None
    rotated: bool = False


# Called before every session.start, with True for a session replacing a lost one: returns the
# session.start event, then the events to send once the session has started.
StartHook = Callable[[bool], Awaitable[tuple[dict[str, Any], Sequence[dict[str, Any]]]]]


def live_sender(connection: AsyncLiveConnection | None) -> Send:
    """How to send on this connection: the websocket the SDK's connection wraps (`_connection`,
    openai's _websocket_connection.py), written at once when it can be; else the SDK's send_raw."""
    if connection is None:
        return no_socket
    socket = getattr(connection, "_connection", None)
    send = getattr(socket, "send", None)
    if not callable(send):
        return connection.send_raw
    return immediate(socket, send) or send


class LiveSocket:
    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        start: StartHook,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
        backoff: Sequence[float] = RECONNECT_BACKOFF,
        connect_timeout: float = 10.0,
    ) -> None:
        self._client = client
        self._start = start
        self._log = logger
        self._backoff = tuple(backoff)
        self._connect_timeout = connect_timeout
        self._connection: AsyncLiveConnection | None = None
        self._send: Send = no_socket
        self._ready = False
        self._ready_event = asyncio.Event()
        self._closing = False
        self._rotating = False
        self._buffered: deque[str] = deque(maxlen=MAX_BUFFERED_AUDIO_FRAMES)
        self._switching = asyncio.Lock()
        self.session_id: str | None = None
        self.reconnects = 0
        self.rotations = 0
        self.started_at: float | None = None

    # Connecting and starting ---------------------------------------------------------------------

    async def _open(self) -> AsyncLiveConnection:
        options = connection_options(self._connect_timeout)
        return await self._client.live.connect(websocket_connection_options=options).enter()

    async def connect(self) -> None:
        self._use(await self._connect_with_retries(first=True))

    def _use(self, connection: AsyncLiveConnection) -> None:
        self._connection = connection
        self._send = live_sender(connection)

    async def _connect_with_retries(self, *, first: bool) -> AsyncLiveConnection:
        last: BaseException | None = None
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
                return await asyncio.wait_for(self._open(), min(self._connect_timeout, remaining))
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise LiveRefused(f"GPT-Live refused the connection (HTTP {status})") from exc
                last = exc
            except Exception as exc:  # OSError, timeouts, a socket closed at once, the SDK's own types
                last = exc
            self._log.warning(
                "GPT-Live %s attempt %d failed: %s",
                "connect" if first else "reconnect",
                attempt,
                _describe(last),
            )
        raise LiveUnavailable(f"could not reach GPT-Live: {_describe(last)}")

    async def start(self, *, replacing: bool = False) -> None:
        """Send session.start and wait for session.started; then the hook's follow-up events and the
        caller audio kept meanwhile. Raises LiveRefused if the service refuses our session.start."""
        connection = self._require()
        start_event, after = await self._start(replacing)
        await self._send(json.dumps(start_event))
        async with asyncio.timeout(RESTART_TIMEOUT_S if replacing else START_TIMEOUT_S):
            while True:
                data = orjson.loads(await connection.recv_bytes())
                kind = data.get("type")
                if kind == "session.started":
                    self.session_id = str(data.get("session", {}).get("id", ""))
                    break
                if kind == "error":
                    error = data.get("error") or {}
                    code, message = str(error.get("code")), str(error.get("message"))
                    if error.get("client_event_id") in (START_ID, None):
                        raise LiveRefused(f"GPT-Live refused the session ({code}): {message}")
                    self._log.warning("GPT-Live error before the session started: %s", code)
        for event in after:
            await self._send(json.dumps(event))
        buffered = self._buffered
        while buffered:
            await self._send(_APPEND_PREFIX + buffered[0] + '"}')
            buffered.popleft()  # only once sent: a drop meanwhile leaves it for the next session
        self._ready = True
        self._ready_event.set()
        self.started_at = time.monotonic()

    def _require(self) -> AsyncLiveConnection:
        if self._connection is None:
            raise LiveUnavailable("not connected")
        return self._connection

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def switching(self) -> bool:
        return self._switching.locked()

    @property
    def buffered_frames(self) -> int:
        return len(self._buffered)

    @property
    def session_age(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def take_buffered(self) -> list[str]:
        """The caller frames kept for the next session, handed over (another engine takes them)."""
        frames = list(self._buffered)
        self._buffered.clear()
        return frames

    async def wait_ready(self, within_s: float) -> bool:
        if self._ready:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready_event.wait(), within_s)
        return self._ready

    async def settled(self, within_s: float) -> bool:
        try:
            await asyncio.wait_for(self._switching.acquire(), within_s)
        except TimeoutError:
            return False
        self._switching.release()
        return self._ready

    def _not_ready(self) -> None:
        self._ready = False
        self._ready_event.clear()

    # Sending ---------------------------------------------------------------------------------------

    async def send_audio(self, payload: str) -> None:
        """One caller frame (base64 μ-law), forwarded as is: one write; kept if the session is down."""
        if not self._ready:
            self._buffered.append(payload)
            return
        try:
            await self._send(_APPEND_PREFIX + payload + '"}')
        except ConnectionClosed:
            self._not_ready()
            self._buffered.append(payload)

    async def send(self, event: dict[str, Any]) -> bool:
        """One client event; False if the session is down (the reader reconnects)."""
        if not self._ready or self._connection is None:
            self._log.info("dropped %s while GPT-Live is reconnecting", event.get("type"))
            return False
        try:
            await self._send(json.dumps(event))
        except ConnectionClosed:
            self._not_ready()
            return False
        return True

    # Receiving -------------------------------------------------------------------------------------

    async def recv(self) -> bytes:
        """The next raw server frame. Raises ConnectionClosed when the socket closed (then `replace`).
        "Canceling this method is safe" (the SDK's recv_bytes docstring)."""
        return await self._require().recv_bytes()

    async def replace(self, closed: ConnectionClosed) -> Restarted | None:
        """After recv() raised `closed`: None if we are closing (the end), else a new session,
        started with the conversation so far. Raises LiveUnavailable if none can be had."""
        if self._closing:
            return None
        code = closed.rcvd.code if closed.rcvd is not None else None
        rotated, self._rotating = self._rotating, False
        if not rotated:
            self._log.warning("GPT-Live closed the session (%s); reconnecting", code)
        self._not_ready()
        dropped_at = time.monotonic()
        async with self._switching:
            await self._reestablish()
        if rotated:
            self.rotations += 1
        else:
            self.reconnects += 1
        return Restarted(time.monotonic() - dropped_at, code, rotated)

    async def _reestablish(self) -> None:
        for _ in range(3):
            self._use(await self._connect_with_retries(first=False))
            try:
                await self.start(replacing=True)
                return
            except (ConnectionClosed, TimeoutError) as exc:
                self._log.warning("the new GPT-Live session failed while starting: %s", _describe(exc))
        raise LiveUnavailable("GPT-Live keeps closing new sessions while they start")

    async def rotate(self) -> None:
        """Move to a fresh session now (a quiet moment, ahead of the session's expiry): the socket is
        closed, and `replace` starts a new one with the conversation so far."""
        connection = self._connection
        if connection is None or self._closing or not self._ready:
            return
        self._rotating = True
        self._not_ready()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 1.0)

    # Closing ---------------------------------------------------------------------------------------

    def closing(self) -> None:
        """We are ending the session (session.close is on its way): the socket closing after
        session.closed is the end, not a drop to reconnect from."""
        self._closing = True

    async def close(self) -> None:
        self._closing = True
        self._not_ready()
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 1.0)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"
