"""TwilioMediaStream: a Twilio Media Stream websocket as the call's media leg.

It owns the socket, Twilio's wire format (`telephony/media_stream.py`) and the playback tracker
fed by Twilio's mark echoes. Before the call exists it reads `connected` and `start` (bounded);
then it hands the call frames and key presses, plays the assistant's chunks with a mark after
every MARK_EVERY_MS of audio (and the first of each item), and clears Twilio's buffer on a barge-in.
A mark per chunk would double what goes to Twilio and come back as many echoes; the heard position
is read from the playback clock between marks anyway (media/playback.py), and the last chunks get
their mark when someone waits for the playback to end (`wait_drained`). Bad frames are counted
and skipped; a Twilio that stops reading ends the leg instead of hanging the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from enum import StrEnum
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from callassist import observability as obs
from callassist.media.direct import DirectChannel
from callassist.media.leg import CallerAudio, Keypress, LegClosed, LegCounts, LegEnd, LegEvent, TrackedLeg
from callassist.media.playback import Interrupted, PlaybackTracker
from callassist.telephony.media_stream import (
    Connected,
    Dtmf,
    InboundMessage,
    Mark,
    MediaStreamError,
    Outbound,
    Start,
    Stop,
    parse_inbound,
)

log = logging.getLogger(__name__)
MARK_EVERY_MS = 100
MARK_EVERY_BYTES = MARK_EVERY_MS * 8  # μ-law: 8 bytes per ms

# Twilio sends `connected` and `start` right after the handshake: a stream silent this long is not
# Twilio's, and it holds a pre-start place (and maybe an OpenAI connection) meanwhile.
START_TIMEOUT_S = 3.0
# A Twilio peer that stops reading fills the socket's buffers and then every send waits: a send (or
# close) that can't complete in this long ends the leg instead of hanging the call.
SEND_TIMEOUT_S = 5.0
_LOGGED_BAD_FRAMES = 5


class NoStart(StrEnum):
    """Why a stream never became a call."""

    disconnected = "disconnected"  # the socket closed before `start`
    hung_up = "hung-up"  # Twilio sent `stop` before `start`
    timed_out = "timed-out"  # no `start` within START_TIMEOUT_S
    evicted = "evicted"  # its pre-start place was given to a newer stream


class TwilioMediaStream(TrackedLeg):
    def __init__(
        self,
        websocket: WebSocket,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        super().__init__(PlaybackTracker())
        self._unmarked: str | None = None  # the mark of the last chunk sent, if not sent yet
        self._unmarked_bytes = 0
        self._marked_item: str | None = None
        self._socket = websocket
        channel = DirectChannel(getattr(websocket, "scope", {}))  # the server's own receive and write
        self._receive = channel.receive  # None: the framework's
        self._write = channel.write
        self._log = logger
        self._out: Outbound | None = None
        self._open = True
        self._closed: LegClosed | None = None  # what receive() reports from now on
        self._start_deadline: asyncio.Timeout | None = None
        self._sender: asyncio.Task[Any] | None = None  # the task sending right now
        self._send_started: float | None = None  # when the send under way began
        self._watchdog: asyncio.Task[None] | None = None
        self._stuck = False
        self._evicted = False
        self.started = False
        self.counts = LegCounts()

    # Before the call ------------------------------------------------------------------------------

    async def wait_for_start(self) -> Start | NoStart:
        """Twilio's `start`, within START_TIMEOUT_S (`connected` before it carries nothing we need)."""
        try:
            async with asyncio.timeout(START_TIMEOUT_S) as deadline:
                self._start_deadline = deadline
                if self._evicted:
                    deadline.reschedule(asyncio.get_running_loop().time())
                while True:
                    message = await self._next_message()
                    if message is None:
                        return NoStart.disconnected
                    if isinstance(message, Start):
                        self.started = True
                        self._out = Outbound(message.stream_sid)
                        return message
                    if isinstance(message, Stop):
                        return NoStart.hung_up
        except TimeoutError:
            return NoStart.evicted if self._evicted else NoStart.timed_out
        finally:
            self._start_deadline = None

    def evict(self) -> None:
        """Another stream needs this one's pre-start place: stop waiting for `start` now."""
        if self.started or self._evicted:
            return
        self._evicted = True
        if self._start_deadline is not None:
            self._start_deadline.reschedule(asyncio.get_running_loop().time())

    # The caller's side ----------------------------------------------------------------------------

    async def receive(self) -> LegEvent:
        """The next caller frame or key press; LegClosed once the stream is over. Marks feed the
        playback tracker here; bad frames are counted and skipped."""
        tracker = self._tracker
        while True:
            if self._closed is not None:
                return self._closed
            message = await self._next_message()
            if isinstance(message, CallerAudio):
                self.counts.frames_in += 1
                return message
            if type(message) is Mark:
                tracker.marked(message.name)
            elif message is None:
                self._closed = LegClosed(self._lost or LegEnd.disconnected)
            elif isinstance(message, Stop):
                self._log.info("Twilio sent stop")
                self._closed = LegClosed(LegEnd.hung_up)
            elif isinstance(message, Dtmf):
                return Keypress(message.digit)
            elif isinstance(message, (Start, Connected)):
                self._log.info("ignored a repeated %s message", type(message).__name__.lower())

    async def _next_message(self) -> InboundMessage | None:
        """The next usable message (bad frames are counted and skipped), or None once the stream
        is gone."""
        while True:
            try:
                message = await (self._receive or self._socket.receive)()
            except Exception as exc:  # the socket died under us
                self._log.info("Twilio stream lost: %s", exc)
                self._open = False
                return None
            text = message.get("text")
            if text is None:
                if message["type"] == "websocket.disconnect":
                    self._open = False
                    return None
                self._bad_frame("binary frame")
                continue
            try:
                return parse_inbound(text)
            except MediaStreamError as exc:
                self._bad_frame(str(exc))

    def _bad_frame(self, reason: str) -> None:
        self.counts.bad_frames += 1
        obs.TWILIO_BAD_FRAMES.inc()
        count = self.counts.bad_frames
        if count <= _LOGGED_BAD_FRAMES or count % 100 == 0:
            self._log.warning("ignored a bad Media Stream frame (%d so far): %s", count, reason)

    # The assistant's side -------------------------------------------------------------------------

    async def play(self, item_id: str, payload: str, size: int) -> None:
        out = self._out
        if out is None or not self._open:
            return
        mark = self._tracker.sent(item_id, size)
        self.counts.chunks_out += 1
        self._unmarked_bytes += size
        if self._unmarked_bytes < MARK_EVERY_BYTES and item_id == self._marked_item:
            self._unmarked = mark  # marked later: with the next mark, or when drained is awaited
            await self._send(out.media(payload))
            return
        self._unmarked, self._unmarked_bytes, self._marked_item = None, 0, item_id
        await self._send(out.media(payload), out.mark(mark))

    async def wait_drained(self, within_s: float) -> bool:
        unmarked, self._unmarked = self._unmarked, None
        if unmarked is not None and self._out is not None:
            self._unmarked_bytes = 0
            await self._send(self._out.mark(unmarked))  # the last chunks: echoed once played
        return await super().wait_drained(within_s)

    async def clear(self, *, barge_in: bool = True) -> list[Interrupted]:
        cuts = self._tracker.interrupt() if self._tracker.audible else []
        self._unmarked, self._unmarked_bytes, self._marked_item = None, 0, None
        if cuts and self._out is not None:
            await self._send(self._out.clear())  # what was heard is fixed; now stop the playback
            if barge_in:
                self.counts.barge_ins += 1
                obs.BARGE_INS.inc()
        return cuts

    def forget_queued(self) -> list[Interrupted]:
        """The line is closing: whatever is still queued at Twilio is never heard."""
        return self._tracker.interrupt()

    async def _send(self, *texts: str) -> None:
        """Send to Twilio, in order: at once when the socket takes it (media/direct.py), else
        through the framework. A peer that stops reading fills the socket's buffers and then a send
        waits for ever: one watchdog per stream cancels a send stuck for SEND_TIMEOUT_S and the leg
        is lost instead (a deadline per send, `asyncio.timeout`, cost ~20 µs per chunk)."""
        if not self._open:
            return
        if self._send_started is None and self._write is not None and self._write(texts):
            return  # written at once, in one system call (media/direct.py)
        self._sender = asyncio.current_task()
        self._send_started = time.monotonic()
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch_sends(), name="twilio-send-watchdog")
        try:
            for text in texts:
                await self._socket.send_text(text)
        except asyncio.CancelledError:
            if not self._stuck:
                raise
            if self._sender is not None:
                self._sender.uncancel()  # ours, not the caller's: the task carries on
            obs.TWILIO_SEND_TIMEOUTS.inc()
            self._log.warning(
                "Twilio stopped reading the stream (a send waited %.0fs): ending the call", SEND_TIMEOUT_S
            )
            self._lose(LegEnd.unresponsive)  # no close: it would wait for the same full buffer
        except Exception as exc:
            self._log.info("Twilio stream closed while sending: %s", exc)
            self._lose(LegEnd.disconnected)
        finally:
            self._send_started = None

    async def _watch_sends(self) -> None:
        # Until the stream is closed and no send is in flight: a send stuck when the call closes
        # the line is still ended (its task has more to do, the summary among it).
        while self._open or self._send_started is not None:
            await asyncio.sleep(min(1.0, SEND_TIMEOUT_S / 4))
            started = self._send_started
            if started is not None and time.monotonic() - started > SEND_TIMEOUT_S and self._sender:
                self._stuck = True
                self._sender.cancel()
                return

    def _lose(self, reason: LegEnd) -> None:
        self._open = False
        super()._lose(reason)

    async def close(self, code: int = 1000) -> None:
        """Close the stream; Twilio continues with the TwiML after <Connect> (a hang-up)."""
        if not self._open:
            return
        self._open = False
        if self._socket.application_state == WebSocketState.CONNECTED:
            # Bounded: the close frame waits behind whatever a peer that stopped reading left queued.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self._socket.close(code=code)
