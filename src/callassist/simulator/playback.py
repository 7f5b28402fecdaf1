"""Twilio's outbound playback model for a bidirectional Media Stream, as a pure clock-driven object.

Twilio buffers every `media` payload the server sends and plays it in order at 8000 bytes/s; a `mark` is
echoed once all audio queued before it has played (at once if nothing is queued); `clear` drops the buffer and
echoes every pending mark immediately (https://www.twilio.com/docs/voice/media-streams/websocket-messages).
Nothing here reads a clock or does I/O: the caller passes `now` (seconds, any monotonic clock) and acts on
what comes back, which keeps the model exact and testable.

Positions are tracked as absolute byte counts, and a playback *run* (audio playing without a gap) is anchored
at the time it started, so play times are computed, never accumulated: no drift however long the call.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callassist.simulator.audio import BYTES_PER_MS

BYTES_PER_SECOND = BYTES_PER_MS * 1000
# Guards the float -> byte conversion so a timer firing exactly at a due time plays the last byte.
_EPSILON_BYTES = 1e-6


@dataclass(frozen=True, slots=True)
class PassedMark:
    """A mark the playback reached (or a clear released): echo it to the server."""

    name: str
    due: float  # when the audio before it finished playing (for a cleared mark: the clear time)
    cleared: bool = False


class Playback:
    """The caller's playback buffer: audio and marks in order, played in real time."""

    __slots__ = (
        "_chunks",
        "_consumed",
        "_enqueued",
        "_head",
        "_idle_since",
        "_marks",
        "_run_base",
        "_run_start",
    )

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already played
        self._enqueued = 0  # total audio bytes ever queued
        self._consumed = 0  # total audio bytes played or dropped
        self._marks: deque[tuple[str, int]] = deque()  # (name, _enqueued when the mark arrived)
        self._run_start = 0.0  # time the current playback run started ...
        self._run_base = 0  # ... and _consumed at that time
        self._idle_since: float | None = None  # when the buffer last became empty (None: nothing played yet)

    @property
    def buffered_bytes(self) -> int:
        """Audio bytes queued but not yet played, as of the last `advance`."""
        return self._enqueued - self._consumed

    @property
    def idle_since(self) -> float | None:
        """When playback last ran dry (None if no audio ever arrived or audio is still queued)."""
        return self._idle_since if self._enqueued == self._consumed else None

    @property
    def pending_marks(self) -> int:
        return len(self._marks)

    def _time_at(self, offset: int) -> float:
        return self._run_start + (offset - self._run_base) / BYTES_PER_SECOND

    def drain_time(self) -> float | None:
        """When the queued audio will have finished playing (None if nothing is queued)."""
        if self._enqueued == self._consumed:
            return None
        return self._time_at(self._enqueued)

    def next_mark_due(self) -> float | None:
        """When the oldest pending mark should be echoed (None if no mark is pending)."""
        if not self._marks:
            return None
        return self._time_at(self._marks[0][1])

    def advance(self, now: float, heard: bytearray) -> list[PassedMark]:
        """Play everything due by `now`: append it to `heard`, return the marks passed on the way."""
        buffered = self._enqueued - self._consumed
        if buffered == 0:
            return []
        target = self._run_base + int((now - self._run_start) * BYTES_PER_SECOND + _EPSILON_BYTES)
        count = min(target - self._consumed, buffered)
        if count <= 0:
            return []
        remaining = count
        chunks = self._chunks
        while remaining:
            chunk = chunks[0]
            available = len(chunk) - self._head
            if available <= remaining:
                heard += chunk[self._head :] if self._head else chunk
                chunks.popleft()
                self._head = 0
                remaining -= available
            else:
                heard += chunk[self._head : self._head + remaining]
                self._head += remaining
                remaining = 0
        self._consumed += count
        passed: list[PassedMark] = []
        marks = self._marks
        while marks and marks[0][1] <= self._consumed:
            name, offset = marks.popleft()
            passed.append(PassedMark(name, self._time_at(offset)))
        if self._consumed == self._enqueued:
            self._idle_since = self._time_at(self._consumed)
        return passed

    def add_audio(self, data: bytes, now: float) -> None:
        """Queue audio received at `now` (call `advance(now, ...)` first)."""
        if not data:
            return
        if self._enqueued == self._consumed:
            # Audio arriving into an empty buffer starts playing on arrival.
            self._run_start = now
            self._run_base = self._consumed
        self._chunks.append(data)
        self._enqueued += len(data)

    def add_mark(self, name: str, now: float) -> PassedMark | None:
        """Queue a mark received at `now` (call `advance` first); returns it if it is due at once."""
        if self._enqueued == self._consumed:
            return PassedMark(name, now)
        self._marks.append((name, self._enqueued))
        return None

    def clear(self, now: float) -> tuple[int, list[PassedMark]]:
        """Drop all queued audio at `now` (call `advance` first); returns (dropped bytes, released marks)."""
        dropped = self._enqueued - self._consumed
        released = [PassedMark(name, now, cleared=True) for name, _ in self._marks]
        self._marks.clear()
        self._chunks.clear()
        self._head = 0
        self._consumed = self._enqueued
        if dropped:
            self._idle_since = now
        return dropped, released
