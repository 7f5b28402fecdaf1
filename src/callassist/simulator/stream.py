"""Twilio's side of a call's media stream (the WebSocket), as `SimulatedCall` plays it.

`connected` + `start` are sent, then caller audio in 20 ms frames at real-time pace: silence, or speech
queued by `say()`. What the server sends is checked as Twilio would (a mistake is a violation recorded,
never a crash) and goes through Twilio's playback model (`playback.Playback`): buffered, played at 8000
bytes/s, marks echoed when their audio has played, `clear` honoured. When the `<Stream>` has a
`statusCallback`, stream-started / stream-stopped / stream-error are reported through it. Protocol facts:
https://www.twilio.com/docs/voice/media-streams/websocket-messages.

Timing: all times are `time.monotonic()` seconds. Caller frames go out on an absolute schedule (t0 + n·20 ms),
and mark echoes are scheduled for the exact moment their audio finishes, so neither drifts under load. A
turn's latency counts from the caller's last loud frame (see `audio.speech_frames`), not from the end of the
clip's trailing silence.

One reason it is a little over 400 lines: it is Twilio's whole side of one stream (the messages it
sends, the pacing, the playback model that the marks and clears act on), whose parts share its clock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from callassist.simulator.audio import BYTES_PER_MS, FRAME_BYTES, FRAME_MS, ULAW_SILENCE
from callassist.simulator.errors import CallEndedError
from callassist.simulator.ids import new_sid
from callassist.simulator.playback import PassedMark, Playback
from callassist.simulator.record import STREAM_KINDS, CallRecord

FRAME_SECONDS = FRAME_MS / 1000
SILENCE_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES
_SILENCE_B64 = base64.b64encode(SILENCE_FRAME).decode("ascii")
# Field order as in Twilio's example (https://www.twilio.com/docs/voice/media-streams/websocket-messages);
# formatted by hand because it runs 50×/s per call.
_MEDIA_TEMPLATE = (
    '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
    '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
)
WEBHOOK_TIMEOUT_S = 15.0  # Twilio gives a voice webhook 15 s before error 11200


@dataclass(slots=True)
class Utterance:
    frames: list[bytes]
    future: asyncio.Future[None]
    speech_frames: int  # frames up to the end of the speech in them (the rest is trailing silence)
    index: int = 0


class MediaStream(CallRecord):
    """A call's media stream as Twilio runs it; the base of `SimulatedCall`, which drives it."""

    def __init__(self, *, call_sid: str, account_sid: str, from_number: str, to_number: str) -> None:
        super().__init__(
            call_sid=call_sid, account_sid=account_sid, from_number=from_number, to_number=to_number
        )
        self._heard = bytearray()
        self._playback = Playback()
        self._ws: ClientConnection | None = None
        self._out: asyncio.Queue[str | None] = asyncio.Queue()
        self._seq = 0
        self._t0 = 0.0
        self._live = False  # between `start` sent and `stop` sent / socket closed
        self._hung_up = False
        self._redirected = False  # the call's TwiML was replaced through the REST API
        self._speech: deque[Utterance] = deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._start_sent_at: float | None = None
        self._last_media_at: float | None = None
        self._turn_since: float | None = None
        # Posts one <Stream statusCallback> event (set by the simulator when the TwiML asks for them).
        self._status: Callable[[str, str | None], Coroutine[Any, Any, None]] | None = None
        self._started_reported = False
        self._callbacks: set[asyncio.Task[None]] = set()

    def _new_stream(self) -> None:
        """A later `<Connect><Stream>` on the same call, once the last stream has ended (the call was
        redirected through the REST API, e.g. back to the assistant): a new WebSocket with its own
        StreamSid, `connected` + `start`, sequence numbers from 1 again. What the caller heard and
        said so far (`audio_heard`, `audio_sent`, `audio_received`) and the events are kept."""
        assert self._stream_done.is_set(), "the last media stream is still open"
        self.previous_stream_sids.append(self.stream_sid)
        self.stream_sid = new_sid("MZ")
        self.stream_opened = False
        self.stream_url = None
        self.custom_parameters = {}
        self.close_code = None
        self.close_reason = None
        self._stream_epoch = len(self.events)
        self._playback = Playback()
        self._ws = None
        self._out = asyncio.Queue()
        self._seq = 0
        self._t0 = 0.0
        self._live = False
        self._redirected = False
        self._speech = deque()
        self._tasks = []
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_due = None
        self._start_sent_at = None
        self._last_media_at = None
        self._turn_since = None
        self._status = None
        self._started_reported = False
        self._stream_done = asyncio.Event()

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
            finished: Utterance | None = None
            spoken: Utterance | None = None
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
        if self._stream_done.is_set() or ws is not self._ws:
            return  # already over, or an earlier stream of the call
        now = time.monotonic()
        unplayed = self._stop_playback(now) if self._live else 0
        self._live = False
        self._cancel_sender()
        # Let the writer finish rather than cancel it: it may be inside close(), best not interrupted.
        self._out.put_nowait(None)
        self.close_code = ws.close_code
        self.close_reason = ws.close_reason
        by = "caller" if self._hung_up else "redirect" if self._redirected else "server"
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
        self._release_waiters(STREAM_KINDS)

    def _abort_stream(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._ws is not None:
            self._ws.transport.abort()
            self._on_stream_closed(self._ws)
