"""One simulated inbound call, as the code under test sees it: what the caller does (speak, press keys,
wait, hang up) and how the call ends.

`SimulatedCall` is built in layers, one job each: `record.CallRecord` (identity, observations, events and
waiting on them), `stream.MediaStream` (Twilio's side of the media stream) and, here, the caller's actions
and the call's lifecycle. `caller.CallerSimulator` places the call and follows its TwiML.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from callassist.simulator.audio import BYTES_PER_MS, frames, speak, speech_frames
from callassist.simulator.errors import CallEndedError, SimulatorError
from callassist.simulator.owner import Owner
from callassist.simulator.record import ACTIVITY_KINDS
from callassist.simulator.stream import WEBHOOK_TIMEOUT_S, MediaStream, Utterance

DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")


class SimulatedCall(MediaStream):
    """One simulated inbound call: its TwiML history, media stream, audio in both directions and events."""

    def __init__(self, *, call_sid: str, account_sid: str, from_number: str, to_number: str) -> None:
        super().__init__(
            call_sid=call_sid, account_sid=account_sid, from_number=from_number, to_number=to_number
        )
        self._follower: asyncio.Task[None] | None = None  # the CallerSimulator following the TwiML
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._params: dict[str, str] = {}  # the voice webhook's parameters (set by CallerSimulator)
        self._owner: Owner = Owner.no_answer  # what the owner's phone does when a <Dial> rings it

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

    async def say(self, ulaw: bytes) -> None:
        """Stream μ-law audio in place of silence (20 ms frames, real time); returns after the last frame."""
        if not self._live:
            raise CallEndedError(f"cannot speak on {self.call_sid}: the media stream is not open")
        chunks = frames(bytes(ulaw))
        if not chunks:
            return
        # Without a loud frame, the whole clip counts as speech.
        spoken = speech_frames(chunks) or len(chunks)
        utterance = Utterance(frames=chunks, future=self._loop.create_future(), speech_frames=spoken)
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
            waiter = self._add_waiter(ACTIVITY_KINDS, now, None)
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
            await self._stop_stream()
        if not self._call_done.is_set():
            follower = self._follower
            if follower is not None and not follower.done():
                follower.cancel()
                # Let the verb running clean up first (a conference sees the caller leave).
                await asyncio.wait({follower}, timeout=WEBHOOK_TIMEOUT_S)
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

    # ----- call lifecycle (driven by CallerSimulator) -------------------------------------------------------

    async def _stop_stream(self) -> None:
        """Twilio's side of the stream's end while the server still has it open: play out what was
        due, send `stop`, close the WebSocket (the caller hung up, or the call got new TwiML)."""
        if not self._live:
            return
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

    async def _end_stream_for_redirect(self) -> None:
        """The call's TwiML was replaced through the REST API: a running `<Connect><Stream>` ends as
        when the call ends, with `stop` and the WebSocket closed (Media Streams messages page:
        https://www.twilio.com/docs/voice/media-streams/websocket-messages#stop-message). The
        stream's statusCallback then gets stream-stopped, as for any end of the stream."""
        if self._live:
            self._redirected = True
            await self._stop_stream()

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
