"""PlaybackTracker: from the media leg's mark echoes, how much of each assistant item the caller heard.

We send a mark after every outbound audio chunk; Twilio echoes it once the audio queued before it
has played. Between echoes the chunk at the head of the queue is playing in real time, so the
heard position inside it is interpolated from the clock: the estimate stays within a few ms even
when OpenAI sends large chunks.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

BYTES_PER_MS = 8  # G.711 μ-law at 8 kHz
_KEEP_ITEMS = 64


@dataclass(slots=True)
class _Chunk:
    seq: int
    item_id: str
    size: int
    sent_at: float


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
        self._last_echo_at = 0.0
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
        self._pending.append(_Chunk(self._seq, item_id, size, now))
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
            self._last_echo_at = now
        if not self._pending:
            self._drained.set()

    def interrupt(self) -> list[Interrupted]:
        """The caller barged in and Twilio's buffer is being cleared: what did they hear of each item
        still queued? The playing item is heard partly; items queued behind it not at all."""
        now = self._clock()
        result: list[Interrupted] = []
        head_partial = self._head_partial_bytes(now)
        seen: set[str] = set()
        for index, chunk in enumerate(self._pending):
            if chunk.item_id in seen:
                continue
            seen.add(chunk.item_id)
            item = self._items.get(chunk.item_id)
            if item is None:
                continue
            heard_bytes = item.played_bytes + (head_partial if index == 0 else 0)
            heard_bytes = min(heard_bytes, item.sent_bytes)
            item.played_bytes = heard_bytes
            result.append(Interrupted(chunk.item_id, heard_bytes // BYTES_PER_MS, int(item.sent_ms)))
        self._pending.clear()
        self._drained.set()
        return result

    # Questions -----------------------------------------------------------------------------------

    @property
    def audible(self) -> bool:
        """Is assistant audio still queued at Twilio (sent and not yet confirmed played)?"""
        return bool(self._pending)

    def item(self, item_id: str) -> ItemAudio | None:
        return self._items.get(item_id)

    def heard_ms(self, item_id: str) -> float:
        """How much of `item_id` the caller has heard so far (interpolated inside the playing chunk)."""
        item = self._items.get(item_id)
        if item is None:
            return 0.0
        heard = item.played_bytes
        if self._pending and self._pending[0].item_id == item_id:
            heard += self._head_partial_bytes(self._clock())
        return min(heard, item.sent_bytes) / BYTES_PER_MS

    async def wait_drained(self, within_s: float) -> bool:
        """Wait until everything sent has played (True) or the timeout passes (False)."""
        try:
            await asyncio.wait_for(self._drained.wait(), within_s)
        except TimeoutError:
            return False
        return True

    def _head_partial_bytes(self, now: float) -> int:
        if not self._pending:
            return 0
        head = self._pending[0]
        # The head started playing when the chunk before it finished, or on arrival if Twilio's
        # buffer had run dry.
        started = max(head.sent_at, self._last_echo_at)
        return max(0, min(head.size, int((now - started) * 1000 * BYTES_PER_MS)))
