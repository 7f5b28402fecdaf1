"""A simulated phone caller that plays Twilio's part faithfully against a callassist server.

`CallerSimulator.place_call()` does what Twilio does for an inbound call: it POSTs the signed voice webhook,
follows the TwiML (`<Dial>` answered or not, `<Connect><Stream>`, `<Say>`, `<Hangup/>`...), opens the signed
Media Streams WebSocket, sends `connected` + `start`, then streams caller audio in 20 ms frames at real-time
pace. When the server closes the stream, the `<Connect action>` URL is fetched and its TwiML followed; when
the `<Stream>` has a `statusCallback`, stream-started / stream-stopped / stream-error are POSTed to it,
signed, as Twilio does. Audio the server sends back goes through Twilio's playback model
(`playback.Playback`): buffered, played at 8000 bytes/s, marks echoed when their audio has played, `clear`
honoured. Everything observable is recorded on the `SimulatedCall` as timestamped events, and server-side
protocol mistakes land in `violations` instead of crashing the simulator. Protocol facts come from Twilio's
docs: https://www.twilio.com/docs/voice/media-streams/websocket-messages (the stream's messages),
https://www.twilio.com/docs/voice/twiml/stream, https://www.twilio.com/docs/voice/twiml/connect and
https://www.twilio.com/docs/voice/twiml/dial (the TwiML), and
https://www.twilio.com/docs/usage/webhooks/webhooks-security (the signatures).

Timing: all times are `time.monotonic()` seconds. Caller frames go out on an absolute schedule (t0 + n·20 ms),
and mark echoes are scheduled for the exact moment their audio finishes, so neither drifts under load. A
turn's latency counts from the caller's last loud frame (see `audio.speech_frames`), not from the end of the
clip's trailing silence.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from callassist.simulator import twiml as tw
from callassist.simulator.audio import (
    BYTES_PER_MS,
    FRAME_BYTES,
    FRAME_MS,
    ULAW_SILENCE,
    frames,
    speak,
    speech_frames,
)
from callassist.simulator.playback import PassedMark, Playback

__all__ = [
    "CallEndedError",
    "CallEvent",
    "CallerSimulator",
    "SimulatedCall",
    "SimulatorError",
    "StreamRejected",
    "WebhookError",
]

FRAME_SECONDS = FRAME_MS / 1000
SILENCE_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES
_SILENCE_B64 = base64.b64encode(SILENCE_FRAME).decode("ascii")
# Field order as in Twilio's example (https://www.twilio.com/docs/voice/media-streams/websocket-messages);
# formatted by hand because it runs 50×/s per call.
_MEDIA_TEMPLATE = (
    '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
    '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
)
DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")
WEBHOOK_TIMEOUT_S = 15.0  # Twilio gives a voice webhook 15 s before error 11200
STREAM_OPEN_TIMEOUT_S = 10.0
# Events that only a live media stream produces: waiting for one after the stream closed is futile.
_STREAM_KINDS = frozenset(
    {
        "stream_open",
        "start_sent",
        "media_in",
        "mark_in",
        "mark_echo",
        "clear_in",
        "speech_start",
        "speech_end",
        "utterance_end",
        "dtmf_sent",
        "stop_sent",
        "violation",
    }
)
_ACTIVITY_KINDS = frozenset({"media_in", "clear_in", "stream_closed", "call_ended"})


class SimulatorError(RuntimeError):
    """The simulated call could not go ahead; the message is meant for a human, one line."""

    def __init__(self, message: str, *, call: SimulatedCall | None = None) -> None:
        super().__init__(message)
        self.call = call


class WebhookError(SimulatorError):
    """A webhook could not be reached, answered non-2xx (Twilio 11200) or returned no TwiML (12100)."""

    def __init__(self, message: str, *, status: int | None = None, call: SimulatedCall | None = None) -> None:
        super().__init__(message, call=call)
        self.status = status


class StreamRejected(SimulatorError):
    """The media stream WebSocket was refused (HTTP status) or closed before `start` could be sent."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        close_code: int | None = None,
        call: SimulatedCall | None = None,
    ) -> None:
        super().__init__(message, call=call)
        self.status = status
        self.close_code = close_code


class CallEndedError(SimulatorError):
    """Audio or DTMF was to be sent on a call whose media stream is not (or no longer) open."""


@dataclass(frozen=True, slots=True)
class CallEvent:
    t: float  # time.monotonic()
    kind: str
    detail: dict[str, Any]


@dataclass(slots=True)
class _Waiter:
    kinds: frozenset[str]
    after: float
    predicate: Callable[[CallEvent], bool] | None
    future: asyncio.Future[CallEvent]


@dataclass(slots=True)
class _Utterance:
    frames: list[bytes]
    future: asyncio.Future[None]
    speech_frames: int  # frames up to the end of the speech in them (the rest is trailing silence)
    index: int = 0


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(slots=True)
class _Link:
    """Where the simulated Twilio sends things, and how it signs them."""

    base_url: str
    validator: RequestValidator | None

    def local_url(self, public_url: str, *, websocket: bool = False) -> str:
        """Same path on the simulator's base host: the public URL may name a tunnel we can't reach."""
        base = urlsplit(self.base_url)
        scheme = base.scheme
        if websocket:
            scheme = "wss" if scheme == "https" else "ws"
        path = urlsplit(public_url).path or "/"
        query = "" if websocket else urlsplit(public_url).query
        return urlunsplit((scheme, base.netloc, path, query, ""))

    def sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        if self.validator is None:
            return {}
        return {"X-Twilio-Signature": self.validator.compute_signature(url, params)}


class SimulatedCall:
    """One simulated inbound call: its TwiML history, media stream, audio in both directions and events."""

    def __init__(self, *, call_sid: str, account_sid: str, from_number: str, to_number: str) -> None:
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = _new_sid("MZ")
        self.from_number = from_number
        self.to_number = to_number
        self.twiml_log: list[str] = []  # every TwiML document received, verbatim
        self.verbs: list[str] = []  # every verb followed, described in one line
        self.stream_url: str | None = None  # the <Stream url> exactly as in the TwiML
        self.stream_opened = False
        self.custom_parameters: dict[str, str] = {}
        self.dial_status: str | None = None
        self.audio_sent = bytearray()
        self.audio_received = bytearray()
        self.events: list[CallEvent] = []
        self.violations: list[str] = []  # server protocol mistakes (Twilio would log 31950/31951)
        self.warnings: list[str] = []  # things real Twilio would refuse or treat differently
        self.errors: list[str] = []
        self.greeting_latency_ms: float | None = None
        self.turn_latencies_ms: list[float] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.end_reason: str | None = None
        self.stream_statuses: list[tuple[str, int | None]] = []  # statusCallback events posted, answers

        self._heard = bytearray()
        self._playback = Playback()
        self._ws: ClientConnection | None = None
        self._out: asyncio.Queue[str | None] = asyncio.Queue()
        self._seq = 0
        self._t0 = 0.0
        self._live = False  # between `start` sent and `stop` sent / socket closed
        self._hung_up = False
        self._speech: deque[_Utterance] = deque()
        self._waiters: list[_Waiter] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._follower: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._start_sent_at: float | None = None
        self._last_media_at: float | None = None
        self._turn_since: float | None = None
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._stream_done = asyncio.Event()
        self._call_done = asyncio.Event()
        # Posts one <Stream statusCallback> event (set by the simulator when the TwiML asks for them).
        self._status: Callable[[str, str | None], Coroutine[Any, Any, None]] | None = None
        self._started_reported = False
        self._callbacks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "live" if self._live else (self.end_reason or "setting up")
        return f"<SimulatedCall {self.call_sid} from {self.from_number} {state}>"

    # ----- public API ---------------------------------------------------------------------------------------

    @property
    def audio_heard(self) -> bytearray:
        """What the caller actually heard so far: received audio as played in real time, cut at each clear."""
        self._sync()
        return self._heard

    @property
    def playing(self) -> bool:
        self._sync()
        return self._playback.buffered_bytes > 0

    @property
    def buffered_ms(self) -> float:
        self._sync()
        return self._playback.buffered_bytes / BYTES_PER_MS

    @property
    def live(self) -> bool:
        """The media stream is open and the caller is still on it."""
        return self._live

    @property
    def stream_ended(self) -> bool:
        """The media stream has closed (or the call ended without one)."""
        return self._stream_done.is_set()

    @property
    def ended(self) -> bool:
        """The whole call is over (stream closed and the remaining TwiML followed)."""
        return self._call_done.is_set()

    @property
    def stream_closed_by(self) -> Literal["caller", "server"] | None:
        """Who closed the media stream: the caller hanging up, or the server; None while it is open
        (or if it never opened)."""
        for event in self.events:
            if event.kind == "stream_closed":
                by = event.detail["by"]
                return "caller" if by == "caller" else "server"
        return None

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events if event.kind == kind)

    async def say(self, ulaw: bytes) -> None:
        """Stream μ-law audio in place of silence (20 ms frames, real time); returns after the last frame."""
        if not self._live:
            raise CallEndedError(f"cannot speak on {self.call_sid}: the media stream is not open")
        chunks = frames(bytes(ulaw))
        if not chunks:
            return
        # Without a loud frame, the whole clip counts as speech.
        spoken = speech_frames(chunks) or len(chunks)
        utterance = _Utterance(frames=chunks, future=self._loop.create_future(), speech_frames=spoken)
        self._speech.append(utterance)
        await utterance.future

    async def say_text(self, text: str) -> None:
        """Speak `text` with espeak-ng, then `say()` it."""
        await self.say(await asyncio.to_thread(speak, text))

    async def send_dtmf(self, digit: str) -> None:
        """Send one keypad press as Twilio's `dtmf` message."""
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        if not self._live:
            raise CallEndedError(f"cannot send DTMF on {self.call_sid}: the media stream is not open")
        seq = self._next_seq()
        self._send(
            json.dumps(
                {
                    "event": "dtmf",
                    "streamSid": self.stream_sid,
                    "sequenceNumber": str(seq),
                    "dtmf": {"track": "inbound_track", "digit": digit.upper()},
                }
            )
        )
        self._emit("dtmf_sent", digit=digit.upper(), seq=seq)

    async def wait_for(
        self,
        kind: str,
        *,
        after: float = 0.0,
        predicate: Callable[[CallEvent], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (public API asked for a timeout argument)
    ) -> CallEvent:
        """The first event of `kind` at or after time `after` (matching `predicate`), waiting if need be.

        Raises TimeoutError naming what was awaited, at once if the stream (or call) ended without it.
        """
        for event in self.events:
            if event.kind == kind and event.t >= after and (predicate is None or predicate(event)):
                return event
        what = f"{kind!r} event" + (" matching the predicate" if predicate else "")
        if self._impossible(frozenset({kind})):
            raise TimeoutError(f"{self.call_sid}: no {what}; the {self._gone()} ended first ({self._why()})")
        waiter = self._add_waiter(frozenset({kind}), after, predicate)
        found = await self._await_waiter(waiter, timeout)
        if found is None:
            raise TimeoutError(f"{self.call_sid}: no {what} within {timeout:g}s")
        return found

    async def wait_until_quiet(
        self,
        quiet_ms: int = 600,
        timeout: float = 15.0,  # noqa: ASYNC109
        *,
        after: float = 0.0,
    ) -> None:
        """Wait until assistant audio has arrived (at or after `after`), then nothing played for quiet_ms."""
        deadline = time.monotonic() + timeout
        quiet = quiet_ms / 1000
        while True:
            now = time.monotonic()
            self._sync(now)
            started = self._last_media_at is not None and self._last_media_at >= after
            if started and self._stream_done.is_set():
                return  # nothing more can play
            if not started and self._impossible(frozenset({"media_in"})):
                raise TimeoutError(f"{self.call_sid}: no assistant audio; the {self._gone()} ended first")
            if started:
                drain = self._playback.drain_time()
                if drain is None:
                    # Empty payloads never enter the buffer: then quiet counts from the last media message.
                    idle_since = self._playback.idle_since or self._last_media_at or now
                    if now - idle_since >= quiet:
                        return
                    wake = idle_since + quiet
                else:
                    wake = drain + quiet
            else:
                wake = deadline
            if now >= deadline:
                phase = f"go quiet for {quiet_ms} ms" if started else "start"
                raise TimeoutError(f"{self.call_sid}: assistant audio did not {phase} within {timeout:g}s")
            waiter = self._add_waiter(_ACTIVITY_KINDS, now, None)
            await self._await_waiter(waiter, max(0.0, min(wake, deadline) - now))

    async def hang_up(self) -> None:
        """The caller hangs up: Twilio sends `stop` and closes the WebSocket; no further TwiML runs.

        If the server already closed the stream, Twilio is following the TwiML after it (the `<Connect
        action>` URL, typically `<Hangup/>`): that is let run to its end first, so the call ends as the
        server had it end, not as a hang-up by the caller.
        """
        if self._call_done.is_set() or self._hung_up:
            await self._settle_callbacks()
            return
        if self.stream_closed_by == "server":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WEBHOOK_TIMEOUT_S + 1):
                    await self._call_done.wait()
            if self._call_done.is_set():
                await self._settle_callbacks()
                return
        self._hung_up = True
        if self._follower is not None and self._ws is None:
            # Still fetching TwiML: nothing to stop on the wire.
            self._follower.cancel()
            self._end("caller hung up")
            return
        if self._live:
            now = time.monotonic()
            self._stop_playback(now)
            self._cancel_sender()
            seq = self._next_seq()
            self._send(
                json.dumps(
                    {
                        "event": "stop",
                        "sequenceNumber": str(seq),
                        "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                        "streamSid": self.stream_sid,
                    }
                )
            )
            self._live = False
            self._emit("stop_sent", seq=seq)
            self._out.put_nowait(None)  # the writer closes the socket after `stop` is on the wire
            try:
                async with asyncio.timeout(5.0):
                    await self._stream_done.wait()
            except TimeoutError:
                self._abort_stream()
        if not self._call_done.is_set():
            if self._follower is not None:
                self._follower.cancel()
            self._end("caller hung up")
        await self._settle_callbacks()

    async def wait_closed(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the media stream has ended, whichever side closed it (or the call ended without one)."""
        try:
            async with asyncio.timeout(timeout):
                await self._stream_done.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.call_sid}: media stream still open after {timeout:g}s") from None

    async def wait_ended(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the whole call is over (e.g. the `<Hangup/>` after `</Connect>` was reached)."""
        try:
            async with asyncio.timeout(timeout):
                await self._call_done.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.call_sid}: call still going after {timeout:g}s") from None
        await self._settle_callbacks()

    async def _settle_callbacks(self, timeout: float = WEBHOOK_TIMEOUT_S) -> None:  # noqa: ASYNC109
        """Let the statusCallback requests in flight finish (each is bounded by the webhook timeout)."""
        if self._callbacks:
            await asyncio.wait(set(self._callbacks), timeout=timeout)

    def _report_stream(self, event: str, error: str | None = None) -> None:
        """POST a <Stream statusCallback> event in the background, as Twilio does (if one was asked for)."""
        if self._status is None:
            return
        if event == "stream-started":
            self._started_reported = True
        elif event == "stream-stopped" and not self._started_reported:
            return
        task = self._loop.create_task(self._status(event, error), name=f"sim-status-{self.call_sid[-6:]}")
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

    # ----- events -------------------------------------------------------------------------------------------

    def _emit(self, kind: str, *, t: float | None = None, **detail: Any) -> CallEvent:
        event = CallEvent(time.monotonic() if t is None else t, kind, detail)
        self.events.append(event)
        if self._waiters:
            for waiter in list(self._waiters):
                if kind not in waiter.kinds or event.t < waiter.after:
                    continue
                try:
                    matched = waiter.predicate is None or waiter.predicate(event)
                except Exception as exc:  # a test's predicate bug must surface in the test, not here
                    self._waiters.remove(waiter)
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
                    continue
                if matched:
                    self._waiters.remove(waiter)
                    if not waiter.future.done():
                        waiter.future.set_result(event)
        return event

    def _add_waiter(
        self, kinds: frozenset[str], after: float, predicate: Callable[[CallEvent], bool] | None
    ) -> _Waiter:
        waiter = _Waiter(kinds, after, predicate, self._loop.create_future())
        self._waiters.append(waiter)
        return waiter

    async def _await_waiter(self, waiter: _Waiter, timeout: float) -> CallEvent | None:  # noqa: ASYNC109
        try:
            done, _ = await asyncio.wait({waiter.future}, timeout=timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if not waiter.future.done():
                waiter.future.cancel()
        return waiter.future.result() if done else None

    def _impossible(self, kinds: frozenset[str]) -> bool:
        if self._call_done.is_set():
            return True
        return self._stream_done.is_set() and kinds <= _STREAM_KINDS

    def _gone(self) -> str:
        return "call" if self._call_done.is_set() else "media stream"

    def _why(self) -> str:
        if self.close_code is not None:
            return f"close code {self.close_code}"
        return self.end_reason or "stream closed"

    def _release_waiters(self, kinds: Iterable[str] | None) -> None:
        """Fail waiters that can no longer be satisfied (all of them if `kinds` is None)."""
        for waiter in list(self._waiters):
            if kinds is None or waiter.kinds <= frozenset(kinds):
                self._waiters.remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_exception(
                        TimeoutError(f"{self.call_sid}: the {self._gone()} ended ({self._why()})")
                    )

    # ----- playback -----------------------------------------------------------------------------------------

    def _sync(self, now: float | None = None) -> None:
        """Bring playback up to `now`: extend audio_heard and echo the marks whose audio has played."""
        if not self._live:
            return
        if now is None:
            now = time.monotonic()
        for mark in self._playback.advance(now, self._heard):
            self._echo(mark, now)
        self._schedule_mark_timer()

    def _echo(self, mark: PassedMark, now: float) -> None:
        seq = self._next_seq()
        self._send(
            json.dumps(
                {
                    "event": "mark",
                    "sequenceNumber": str(seq),
                    "streamSid": self.stream_sid,
                    "mark": {"name": mark.name},
                }
            )
        )
        self._emit(
            "mark_echo",
            t=now,
            name=mark.name,
            due=mark.due,
            late_ms=(now - mark.due) * 1000,
            cleared=mark.cleared,
            seq=seq,
        )

    def _schedule_mark_timer(self) -> None:
        due = self._playback.next_mark_due() if self._live else None
        if due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = due
        if due is not None:
            self._timer = self._loop.call_later(max(0.0, due - time.monotonic()), self._on_mark_timer)

    def _on_mark_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        self._sync()

    def _stop_playback(self, now: float) -> int:
        """Play what was due by `now`, then drop the rest (the caller is gone). Returns the bytes dropped."""
        self._sync(now)
        dropped, _ = self._playback.clear(now)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = None
        return dropped

    # ----- the media stream ---------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, message: str) -> None:
        # One writer task sends in queue order, so sequenceNumbers reach the server in order.
        self._out.put_nowait(message)

    async def _open(self, ws: ClientConnection, parameters: dict[str, str]) -> None:
        """Send `connected` + `start` and start the stream tasks."""
        self._ws = ws
        self.stream_opened = True
        self.custom_parameters = dict(parameters)
        self._emit("stream_open", url=self.stream_url)
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        seq = self._next_seq()
        start = {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": dict(parameters),
            },
            "streamSid": self.stream_sid,
        }
        await ws.send(json.dumps(start))
        self._t0 = time.monotonic()
        self._start_sent_at = self._t0
        self._live = True
        self._emit("start_sent", t=self._t0, seq=seq, stream_sid=self.stream_sid)
        self._report_stream("stream-started")
        name = self.call_sid[-6:]
        self._tasks = [
            asyncio.create_task(self._receiver(ws), name=f"sim-recv-{name}"),
            asyncio.create_task(self._writer(ws), name=f"sim-send-{name}"),
            asyncio.create_task(self._sender(), name=f"sim-audio-{name}"),
        ]

    async def _sender(self) -> None:
        """Caller audio: one 20 ms frame per tick on an absolute schedule, speech in place of silence."""
        t0 = self._t0
        speech = self._speech
        n = 0
        while True:
            delay = t0 + n * FRAME_SECONDS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            finished: _Utterance | None = None
            spoken: _Utterance | None = None
            if speech:
                utterance = speech[0]
                if utterance.index == 0:
                    self._emit("speech_start", frames=len(utterance.frames))
                frame = utterance.frames[utterance.index]
                utterance.index += 1
                payload = base64.b64encode(frame).decode("ascii")
                if utterance.index == utterance.speech_frames:
                    spoken = utterance
                if utterance.index == len(utterance.frames):
                    finished = speech.popleft()
            else:
                frame, payload = SILENCE_FRAME, _SILENCE_B64
            self._send(_MEDIA_TEMPLATE % (self._next_seq(), n + 1, n * FRAME_MS, payload, self.stream_sid))
            self.audio_sent += frame
            n += 1
            if spoken is not None:
                # The caller went quiet with this frame (Twilio sends a frame once its 20 ms are
                # recorded): the turn's latency counts from here, not from the end of the clip's silence.
                now = time.monotonic()
                self._turn_since = now
                trailing_ms = (len(spoken.frames) - spoken.speech_frames) * FRAME_MS
                self._emit("speech_end", t=now, frames=spoken.speech_frames, trailing_silence_ms=trailing_ms)
            if finished is not None:
                self._emit("utterance_end", frames=len(finished.frames))
                if not finished.future.done():
                    finished.future.set_result(None)

    async def _writer(self, ws: ClientConnection) -> None:
        queue = self._out
        while True:
            message = await queue.get()
            try:
                if message is None:
                    await ws.close()
                    return
                await ws.send(message)
            except ConnectionClosed:
                return

    async def _receiver(self, ws: ClientConnection) -> None:
        try:
            while True:
                message = await ws.recv()
                try:
                    self._on_message(message)
                except Exception as exc:  # a simulator bug: keep the call going, make it visible
                    self.errors.append(f"simulator error handling a server message: {exc!r}")
                    self._emit("error", message=self.errors[-1])
        except ConnectionClosed:
            pass
        finally:
            self._on_stream_closed(ws)

    def _violation(self, message: str, now: float) -> None:
        self.violations.append(message)
        self._emit("violation", t=now, message=message)

    def _on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        if not self._live:
            return  # after `stop` Twilio no longer listens
        if isinstance(message, bytes):
            self._violation(
                f"binary frame of {len(message)} bytes; Twilio accepts text frames only (31950)", now
            )
            return
        try:
            data = json.loads(message)
        except ValueError:
            self._violation(f"message is not JSON (31950): {message[:80]!r}", now)
            return
        if not isinstance(data, dict):
            self._violation(f"message is not a JSON object (31950): {message[:80]!r}", now)
            return
        event = data.get("event")
        if event not in ("media", "mark", "clear"):
            self._violation(f"unknown event {event!r}; Twilio accepts media, mark, clear (31951)", now)
            return
        if data.get("streamSid") != self.stream_sid:
            self._violation(
                f"{event} with streamSid {data.get('streamSid')!r}, expected {self.stream_sid}", now
            )
            return
        if event == "media":
            self._on_media(data, now)
        elif event == "mark":
            self._on_mark(data, now)
        else:
            self._on_clear(now)

    def _on_media(self, data: dict[str, Any], now: float) -> None:
        media = data.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            self._violation("media without a string media.payload (31951)", now)
            return
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._violation(f"media.payload is not valid base64 (31951): {payload[:40]!r}", now)
            return
        self._sync(now)
        self.audio_received += audio
        self._playback.add_audio(audio, now)
        self._last_media_at = now
        if self.greeting_latency_ms is None and self._start_sent_at is not None:
            self.greeting_latency_ms = (now - self._start_sent_at) * 1000
        if self._turn_since is not None:
            self.turn_latencies_ms.append((now - self._turn_since) * 1000)
            self._turn_since = None
        self._emit(
            "media_in", t=now, bytes=len(audio), buffered_ms=self._playback.buffered_bytes / BYTES_PER_MS
        )

    def _on_mark(self, data: dict[str, Any], now: float) -> None:
        mark = data.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            self._violation("mark without a string mark.name (31951)", now)
            return
        self._sync(now)
        self._emit("mark_in", t=now, name=name, buffered_ms=self._playback.buffered_bytes / BYTES_PER_MS)
        immediate = self._playback.add_mark(name, now)
        if immediate is not None:
            self._echo(immediate, now)
        self._schedule_mark_timer()

    def _on_clear(self, now: float) -> None:
        self._sync(now)
        dropped, released = self._playback.clear(now)
        self._emit(
            "clear_in",
            t=now,
            heard_bytes=len(self._heard),
            dropped_bytes=dropped,
            marks_released=[mark.name for mark in released],
        )
        for mark in released:
            self._echo(mark, now)
        self._schedule_mark_timer()

    def _cancel_sender(self) -> None:
        for task in self._tasks:
            if task.get_name().startswith("sim-audio-"):
                task.cancel()
        while self._speech:
            utterance = self._speech.popleft()
            if not utterance.future.done():
                utterance.future.set_exception(
                    CallEndedError(f"{self.call_sid}: the media stream ended while speaking")
                )

    def _on_stream_closed(self, ws: ClientConnection) -> None:
        if self._stream_done.is_set():
            return
        now = time.monotonic()
        unplayed = self._stop_playback(now) if self._live else 0
        self._live = False
        self._cancel_sender()
        # Let the writer finish rather than cancel it: it may be inside close(), best not interrupted.
        self._out.put_nowait(None)
        self.close_code = ws.close_code
        self.close_reason = ws.close_reason
        by = "caller" if self._hung_up else "server"
        self._emit(
            "stream_closed",
            t=now,
            by=by,
            code=self.close_code,
            reason=self.close_reason,
            unplayed_bytes=unplayed,
        )
        if by == "server" and unplayed:
            self._warn(
                f"server closed the stream with {unplayed / BYTES_PER_MS:.0f} ms of audio still queued "
                "(the caller never heard it)"
            )
        self._report_stream("stream-stopped")
        self._stream_done.set()
        self._release_waiters(_STREAM_KINDS)

    def _abort_stream(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._ws is not None:
            self._ws.transport.abort()
            self._on_stream_closed(self._ws)

    # ----- call lifecycle (driven by CallerSimulator) -------------------------------------------------------

    def _record_verb(self, verb: tw.Verb) -> None:
        self.verbs.append(verb.describe())
        self._emit("verb", verb=type(verb).__name__, description=verb.describe())

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self._emit("warning", message=message)

    def _end(self, reason: str) -> None:
        if self._call_done.is_set():
            return
        if self._ws is not None and not self._stream_done.is_set():
            self._abort_stream()
        self.end_reason = reason
        self._emit("call_ended", reason=reason)
        self._stream_done.set()
        self._call_done.set()
        if not self._ready.done():
            self._ready.set_result(None)
        self._release_waiters(None)

    def _fail(self, error: SimulatorError) -> None:
        error.call = self
        self.errors.append(str(error))
        self._emit("error", message=str(error))
        if not self._ready.done():
            self._ready.set_exception(error)
        self._end("error")


class CallerSimulator:
    """Places simulated inbound calls against a callassist server, playing Twilio's side faithfully."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        auth_token: str | None = None,
        account_sid: str | None = None,
        public_base_url: str | None = None,
        incoming_path: str = "/voice/incoming",
    ) -> None:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be http(s)://host[:port], got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.public_base_url = (public_base_url or base_url).rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid or _new_sid("AC")
        self.incoming_path = incoming_path
        self._link = _Link(self.base_url, RequestValidator(auth_token) if auth_token else None)

    def webhook_params(
        self, *, call_sid: str, from_number: str, to_number: str, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The form fields Twilio POSTs to the voice webhook for an inbound call."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call_sid,
            "CallStatus": "ringing",
            "Called": to_number,
            "CalledCity": "",
            "CalledCountry": "US",
            "CalledState": "CA",
            "CalledZip": "",
            "Caller": from_number,
            "CallerCity": "SAN FRANCISCO",
            "CallerCountry": "US",
            "CallerState": "CA",
            "CallerZip": "94103",
            "Direction": "inbound",
            "From": from_number,
            "FromCity": "SAN FRANCISCO",
            "FromCountry": "US",
            "FromState": "CA",
            "FromZip": "94103",
            "To": to_number,
            "ToCity": "",
            "ToCountry": "US",
            "ToState": "CA",
            "ToZip": "",
        }
        params.update(extra or {})
        return params

    async def place_call(
        self,
        *,
        from_number: str = "+15551230000",
        to_number: str = "+15559870000",
        owner_answers: bool = False,
        call_sid: str | None = None,
        extra_params: dict[str, str] | None = None,
    ) -> SimulatedCall:
        """Ring the server. Returns once `start` is on the stream, or once the call ended without a stream.

        Raises WebhookError / StreamRejected (both SimulatorError, `.call` set) if Twilio would have failed
        the call before the stream started. A server that accepts the stream and then closes it (e.g. 1008)
        is not an error here: see `call.close_code` after `wait_closed()`.
        """
        call = SimulatedCall(
            call_sid=call_sid or _new_sid("CA"),
            account_sid=self.account_sid,
            from_number=from_number,
            to_number=to_number,
        )
        params = self.webhook_params(
            call_sid=call.call_sid, from_number=from_number, to_number=to_number, extra=extra_params
        )
        call._follower = asyncio.create_task(
            self._follow(call, params, owner_answers), name=f"sim-twiml-{call.call_sid[-6:]}"
        )
        try:
            await asyncio.shield(call._ready)
        except asyncio.CancelledError:
            call._follower.cancel()
            call._end("cancelled")
            raise
        return call

    # ----- Twilio's TwiML interpreter ----------------------------------------------------------------------

    async def _follow(self, call: SimulatedCall, params: dict[str, str], owner_answers: bool) -> None:
        try:
            url = self.public_base_url + self.incoming_path
            verbs = await self._fetch(call, url, "POST", params, what="voice webhook")
            while True:
                next_request: tuple[str, str, dict[str, str]] | None = None
                for verb in verbs:
                    call._record_verb(verb)
                    if isinstance(verb, tw.Hangup):
                        call._end("hangup")
                        return
                    if isinstance(verb, tw.Reject):
                        call._end(f"rejected ({verb.reason})")
                        return
                    if isinstance(verb, tw.Redirect):
                        next_request = (
                            urljoin(url, verb.url),
                            verb.method,
                            self._later(params, "in-progress"),
                        )
                        break
                    if isinstance(verb, tw.Dial):
                        next_request = self._dial(call, verb, url, params, owner_answers)
                        if next_request is not None:
                            break
                    elif isinstance(verb, tw.Connect):
                        outcome = await self._connect(call, verb, url)
                        if outcome == "caller":
                            return  # hang_up() ends the call; Twilio runs no more TwiML for a gone caller
                        if verb.action:
                            next_request = (
                                urljoin(url, verb.action),
                                verb.method,
                                self._later(params, "in-progress"),
                            )
                            break
                    elif isinstance(verb, tw.Unsupported):
                        call._warn(f"<{verb.tag}> is not simulated; skipped")
                    # <Say> and <Pause> are recorded only: the simulator does not wait them out.
                if next_request is None:
                    call._end("twiml finished")  # no verbs left: Twilio hangs up
                    return
                url, method, request_params = next_request
                verbs = await self._fetch(call, url, method, request_params, what="TwiML request")
        except SimulatorError as exc:
            call._fail(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            call._fail(SimulatorError(f"simulator bug while following TwiML: {exc!r}"))

    @staticmethod
    def _later(params: dict[str, str], status: str) -> dict[str, str]:
        return {**params, "CallStatus": status}

    def _dial(
        self, call: SimulatedCall, verb: tw.Dial, url: str, params: dict[str, str], owner_answers: bool
    ) -> tuple[str, str, dict[str, str]] | None:
        # Resolved at once instead of ringing for `timeout` (+ Twilio's ~5 s buffer,
        # https://www.twilio.com/docs/voice/twiml/dial).
        answered = owner_answers and bool(verb.targets)
        status = "completed" if answered else "no-answer"
        call.dial_status = status
        call._emit("dial", targets=list(verb.targets), status=status, timeout=verb.timeout)
        if not verb.action:
            return None  # Twilio continues with the next verb
        # answerOnBridge keeps the inbound leg unanswered (ringing) until someone picks up.
        call_status = "ringing" if verb.answer_on_bridge and not answered else "in-progress"
        dial_params = {
            **self._later(params, call_status),
            "DialCallStatus": status,
            "DialCallSid": _new_sid("CA"),
            "DialCallDuration": "30" if answered else "0",
            "DialBridged": "true" if answered else "false",
        }
        return urljoin(url, verb.action), verb.method, dial_params

    async def _request(
        self, public_url: str, method: str, params: dict[str, str], *, what: str
    ) -> tuple[int, str]:
        """One webhook request the way Twilio makes it (signed against the public URL): (status, body)."""
        local = self._link.local_url(public_url)
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        if method == "GET":
            # For GET, Twilio puts the parameters in the query string and signs the full URL.
            separator = "&" if urlsplit(public_url).query else "?"
            signed_url = public_url + separator + urlencode(params)
            headers.update(self._link.sign(signed_url, {}))
            request_kwargs: dict[str, Any] = {"params": params}
        else:
            headers.update(self._link.sign(public_url, params))
            request_kwargs = {"data": params}
        try:
            timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, local, headers=headers, **request_kwargs) as response,
            ):
                return response.status, await response.text()
        except TimeoutError:
            raise WebhookError(f"{what} {local} did not answer within {WEBHOOK_TIMEOUT_S:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise WebhookError(f"cannot reach the server at {local}: {reason}") from None

    async def _fetch(
        self, call: SimulatedCall, public_url: str, method: str, params: dict[str, str], *, what: str
    ) -> list[tw.Verb]:
        """Request TwiML the way Twilio does (signed against the public URL) and parse it."""
        local = self._link.local_url(public_url)
        call._emit("webhook", url=public_url, method=method, params=dict(params))
        status, body = await self._request(public_url, method, params, what=what)
        if not 200 <= status < 300:
            raise WebhookError(
                f"{what} {local} answered HTTP {status}: {body.strip()[:200] or '(empty body)'}",
                status=status,
            )
        call.twiml_log.append(body)
        call._emit("twiml", url=public_url, status=status, body=body)
        try:
            return tw.parse_twiml(body)
        except tw.TwimlError as exc:
            raise WebhookError(f"{what} {local} returned no valid TwiML: {exc}", status=status) from None

    async def _connect(
        self, call: SimulatedCall, verb: tw.Connect, doc_url: str
    ) -> Literal["caller", "server", "failed"]:
        """Run a `<Connect><Stream>` to its end: open, stream, and wait until either side closes."""
        stream = verb.stream
        if stream is None or not stream.url:
            call._warn("<Connect> without a <Stream url>: nothing to connect")
            return "failed"
        if call.stream_opened or call.stream_url is not None:
            call._warn("a second <Connect><Stream> is not simulated; skipped")
            return "failed"
        call.stream_url = stream.url
        if stream.status_callback:
            call._status = self._status_reporter(call, stream, urljoin(doc_url, stream.status_callback))
        parts = urlsplit(urljoin(doc_url, stream.url))
        if parts.scheme != "wss":
            call._warn(f"Stream url {stream.url!r} is not wss://; real Twilio refuses it (31922)")
        elif parts.port not in (None, 443):
            call._warn(f"Stream url {stream.url!r} is not on port 443; real Twilio needs it (31910)")
        if parts.query:
            call._warn(
                f"Stream url {stream.url!r} has a query string; Twilio drops it, use <Parameter> (31920)"
            )
        local = self._link.local_url(stream.url, websocket=True)
        # Signed exactly as written in the TwiML (wss://), with no params: the upgrade is a GET
        # (https://www.twilio.com/docs/usage/webhooks/webhooks-security,
        # https://github.com/twilio-labs/twilio-aspnet/issues/162).
        headers = self._link.sign(stream.url, {})
        try:
            ws = await connect(
                local,
                additional_headers=headers,
                user_agent_header="Twilio.TmeWs/1.0",
                compression=None,
                open_timeout=STREAM_OPEN_TIMEOUT_S,
                ping_interval=None,
                close_timeout=5,
                max_size=None,  # Twilio accepts media messages "of any size"
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            self._stream_failed(
                call,
                StreamRejected(
                    f"the server refused the media stream {local} with HTTP {status}"
                    + (" (bad or missing X-Twilio-Signature?)" if status in (401, 403) else ""),
                    status=status,
                ),
            )
            return "failed"
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._stream_failed(call, StreamRejected(f"cannot open the media stream {local}: {exc}"))
            return "failed"
        try:
            await call._open(ws, stream.parameters)
        except ConnectionClosed:
            call._on_stream_closed(ws)
            self._stream_failed(
                call,
                StreamRejected(
                    f"the server closed the media stream before `start` was sent "
                    f"(code {ws.close_code}{': ' + ws.close_reason if ws.close_reason else ''})",
                    close_code=ws.close_code,
                ),
            )
            return "failed"
        if not call._ready.done():
            call._ready.set_result(None)
        await call._stream_done.wait()
        return "caller" if call._hung_up else "server"

    def _status_reporter(
        self, call: SimulatedCall, stream: tw.Stream, url: str
    ) -> Callable[[str, str | None], Coroutine[Any, Any, None]]:
        """Posts <Stream statusCallback> events: AccountSid, CallSid, StreamSid, StreamName (when the
        stream is named), StreamEvent, StreamError (errors only), Timestamp; signed as any webhook.
        Twilio ignores the answer except to log a failure in its debugger: here, a warning."""

        async def report(event: str, error: str | None) -> None:
            params = {
                "AccountSid": call.account_sid,
                "CallSid": call.call_sid,
                "StreamSid": call.stream_sid,
                "StreamEvent": event,
                "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
            if stream.name:
                params["StreamName"] = stream.name
            if error is not None:
                params["StreamError"] = error
            status: int | None = None
            try:
                status, _ = await self._request(
                    url, stream.status_callback_method, params, what="stream statusCallback"
                )
            except WebhookError as exc:
                call._warn(f"{event} statusCallback failed: {exc}")
            else:
                if not 200 <= status < 300:
                    call._warn(f"{event} statusCallback {url} answered HTTP {status}")
            call.stream_statuses.append((event, status))
            call._emit("stream_status", event=event, status=status, error=error)

        return report

    @staticmethod
    def _stream_failed(call: SimulatedCall, error: StreamRejected) -> None:
        # Twilio logs the failure and carries on with the next verb; the caller of place_call gets the error.
        call._report_stream("stream-error", str(error))
        error.call = call
        call.errors.append(str(error))
        call._emit("stream_rejected", message=str(error), status=error.status, close_code=error.close_code)
        if not call._ready.done():
            call._ready.set_exception(error)
