"""PlaybackTracker: from the media leg's mark echoes, how much of each assistant item the caller heard.

We send a mark after every outbound audio chunk; Twilio echoes it once the audio queued before it
has played. Between echoes the audio plays in real time, so the heard position is read from a
clock anchored on the current run of uninterrupted playback (from the first chunk sent into an
empty queue until the queue runs dry or is cleared): every echo says "this many bytes of the run
had played by now", and arrives late, never early (Twilio's send, the network, our event loop), so
each echo gives a latest possible start of the run; the earliest of these is the best anchor. The
last echo alone would make the estimate run short by that echo's lateness (tens of ms on a loaded
loop), so a truncate would drop words the caller heard. Before the first echo of a run, the run
counts from when its first chunk was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

BYTES_PER_MS = 8  # G.711 μ-law at 8 kHz
BYTES_PER_S = 8000
AUDIBLE_GRACE_S = 0.3  # unconfirmed audio counts as playing this long past its estimated end
_KEEP_ITEMS = 64


@dataclass(slots=True)
class _Chunk:
    seq: int
    item_id: str
    size: int
    sent_at: float
    run: int  # the playback run it belongs to
    end: int  # bytes of its run up to the end of this chunk


@dataclass(slots=True)
class ItemAudio:
    """Audio of one assistant item: what we sent to Twilio and what Twilio confirmed played."""

    sent_bytes: int = 0
    played_bytes: int = 0

    @property
    def sent_ms(self) -> float:
        return self.sent_bytes / BYTES_PER_MS


@dataclass(slots=True, frozen=True)
class Interrupted:
    """An item cut off by a barge-in: the caller heard `heard_ms` of its `sent_ms`."""

    item_id: str
    heard_ms: int
    sent_ms: int


class PlaybackTracker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: deque[_Chunk] = deque()
        self._items: OrderedDict[str, ItemAudio] = OrderedDict()
        self._seq = 0
        # The current run of uninterrupted playback: its number, bytes sent into it, and when it
        # started: at the latest (from echoes; None before the first) and at the earliest (its send).
        self._run = 0
        self._run_bytes = 0
        self._run_sent_at = 0.0
        self._run_echoed_start: float | None = None
        self._drained = asyncio.Event()
        self._drained.set()

    # Events from the bridge ----------------------------------------------------------------------

    def sent(self, item_id: str, size: int) -> str:
        """Record a chunk sent to Twilio; returns the mark name to send right after it."""
        now = self._clock()
        self._seq += 1
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = ItemAudio()
            if len(self._items) > _KEEP_ITEMS:
                self._items.popitem(last=False)
        item.sent_bytes += size
        if not self._pending or now > self._run_start() + self._run_bytes / BYTES_PER_S:
            # Twilio's queue is empty (or should be by now: it ran dry): playback restarts now.
            self._run += 1
            self._run_bytes = 0
            self._run_sent_at = now
            self._run_echoed_start = None
        self._run_bytes += size
        self._pending.append(_Chunk(self._seq, item_id, size, now, self._run, self._run_bytes))
        self._drained.clear()
        return str(self._seq)

    def marked(self, name: str) -> None:
        """Twilio echoed a mark: every chunk up to it has played."""
        try:
            seq = int(name)
        except ValueError:
            return  # not ours
        now = self._clock()
        # Marks echoed after a clear belong to chunks we already dropped: their seq is below the queue.
        while self._pending and self._pending[0].seq <= seq:
            chunk = self._pending.popleft()
            item = self._items.get(chunk.item_id)
            if item is not None:
                item.played_bytes += chunk.size
            if chunk.run == self._run:
                # Played by now at the latest: the run started no later than this.
                start = now - chunk.end / BYTES_PER_S
                if self._run_echoed_start is None or start < self._run_echoed_start:
                    self._run_echoed_start = start
        if not self._pending:
            self._drained.set()

    def interrupt(self) -> list[Interrupted]:
        """The caller barged in and Twilio's buffer is being cleared: what did they hear of each item
        still queued? The playing item is heard partly; items queued behind it not at all."""
        heard = self._heard_pending(self._clock())
        result: list[Interrupted] = []
        for item_id in dict.fromkeys(chunk.item_id for chunk in self._pending):
            item = self._items.get(item_id)
            if item is None:
                continue
            item.played_bytes = min(item.played_bytes + heard.get(item_id, 0), item.sent_bytes)
            result.append(Interrupted(item_id, item.played_bytes // BYTES_PER_MS, int(item.sent_ms)))
        self._pending.clear()
        self._drained.set()
        return result

    # Questions -----------------------------------------------------------------------------------

    @property
    def audible(self) -> bool:
        """Is assistant audio still queued at Twilio or playing? Sent and not confirmed played, and
        by the playback clock not over for more than AUDIBLE_GRACE_S (the last chunks' mark may
        not have been sent: media/twilio.py marks every 100 ms)."""
        if not self._pending:
            return False
        played_out = self._run_start() + self._run_bytes / BYTES_PER_S + AUDIBLE_GRACE_S
        return self._pending[-1].run != self._run or self._clock() < played_out

    def item(self, item_id: str) -> ItemAudio | None:
        return self._items.get(item_id)

    def heard_ms(self, item_id: str) -> float:
        """How much of `item_id` the caller has heard so far (played chunks, and by the clock those
        still queued)."""
        item = self._items.get(item_id)
        if item is None:
            return 0.0
        heard = item.played_bytes + self._heard_pending(self._clock()).get(item_id, 0)
        return min(heard, item.sent_bytes) / BYTES_PER_MS

    async def wait_drained(self, within_s: float) -> bool:
        """Wait until everything sent has played (True) or the timeout passes (False)."""
        try:
            await asyncio.wait_for(self._drained.wait(), within_s)
        except TimeoutError:
            return False
        return True

    def _run_start(self) -> float:
        """When the current run started playing: from its echoes (each late, none early) once there
        are any, else from its first send."""
        echoed = self._run_echoed_start
        return self._run_sent_at if echoed is None else max(echoed, self._run_sent_at)

    def _heard_pending(self, now: float) -> dict[str, int]:
        """Bytes of each item heard among the chunks not echoed yet: those of an earlier run all
        (the queue ran dry since: their echo is late), those of the current run by its clock."""
        heard: dict[str, int] = {}
        played = round((now - self._run_start()) * BYTES_PER_S)
        for chunk in self._pending:
            if chunk.run != self._run:
                part = chunk.size
            else:
                part = max(0, min(chunk.size, played - (chunk.end - chunk.size)))
                if part == 0:
                    break  # chunks behind an unheard one are unheard too
            heard[chunk.item_id] = heard.get(chunk.item_id, 0) + part
        return heard
