"""MemoryLeg: a media leg in memory, for tests of the call logic without sockets or clocks.

The test is the caller: it `say()`s frames, presses keys, `hang_up()`s, and decides how much of the
assistant's audio has played (`played()`), which is what a barge-in's arithmetic reads. It shows
what a new leg (SIP, a browser) must do to carry a call.
"""

from __future__ import annotations

import asyncio
import binascii

from callassist.media.leg import CallerAudio, Keypress, LegClosed, LegCounts, LegEnd, LegEvent, TrackedLeg
from callassist.media.playback import Interrupted, PlaybackTracker


class MemoryLeg(TrackedLeg):
    def __init__(self) -> None:
        self._inbound: asyncio.Queue[LegEvent] = asyncio.Queue()
        self._now = 0.0
        super().__init__(PlaybackTracker(clock=lambda: self._now))
        self._marks: list[str] = []
        self._closed: LegClosed | None = None
        self.played_chunks: list[tuple[str, str]] = []  # (item_id, payload), in order
        self.counts = LegCounts()
        self.closed = False
        # Set while the call waits for the caller with nothing queued: all said so far was handled.
        self._drained = asyncio.Event()
        self._played = asyncio.Condition()

    # The test's side ------------------------------------------------------------------------------

    def say(self, audio: bytes) -> None:
        """One caller frame (μ-law bytes)."""
        payload = binascii.b2a_base64(audio, newline=False).decode("ascii")
        self._put(CallerAudio(payload, len(audio)))

    def press(self, digit: str) -> None:
        self._put(Keypress(digit))

    def hang_up(self) -> None:
        self._put(LegClosed(LegEnd.hung_up))

    def _put(self, event: LegEvent) -> None:
        self._inbound.put_nowait(event)
        self._drained.clear()

    async def handled(self, within_s: float = 2.0) -> None:
        """Until the call has taken in everything the caller said or pressed so far."""
        async with asyncio.timeout(within_s):
            await self._drained.wait()

    def played(self, chunks: int | None = None) -> None:
        """The caller heard the next `chunks` chunks (all queued ones if None)."""
        marks = self._marks if chunks is None else self._marks[:chunks]
        for mark in list(marks):
            self._tracker.marked(mark)
            self._marks.remove(mark)

    def advance(self, seconds: float) -> None:
        """Move the playback clock: the head chunk is heard in part."""
        self._now += seconds

    async def wait_for_chunk(self, item_id: str, within_s: float = 3.0) -> None:
        """Until a chunk of `item_id` has been played."""
        async with asyncio.timeout(within_s), self._played:
            await self._played.wait_for(lambda: any(item == item_id for item, _ in self.played_chunks))

    def fail_sending(self, reason: LegEnd = LegEnd.unresponsive) -> None:
        self._lose(reason)

    # The leg's side -------------------------------------------------------------------------------

    async def receive(self) -> LegEvent:
        if self._closed is not None:
            return self._closed
        if self._inbound.empty():
            self._drained.set()
        event = await self._inbound.get()
        if isinstance(event, CallerAudio):
            self.counts.frames_in += 1
        elif isinstance(event, LegClosed):
            self._closed = event
        return event

    async def play(self, item_id: str, payload: str, size: int) -> None:
        if self._lost is not None or self.closed:
            return
        self.played_chunks.append((item_id, payload))
        self.counts.chunks_out += 1
        self._marks.append(self._tracker.sent(item_id, size))
        async with self._played:
            self._played.notify_all()

    async def clear(self, *, barge_in: bool = True) -> list[Interrupted]:
        cuts = self._tracker.interrupt() if self._tracker.audible else []
        if cuts:
            self.counts.barge_ins += barge_in
            self._marks.clear()
        return cuts

    def forget_queued(self) -> list[Interrupted]:
        self._marks.clear()
        return self._tracker.interrupt()

    async def close(self) -> None:
        self.closed = True
