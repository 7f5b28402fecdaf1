"""The media leg protocol: the caller's side of a call, whatever carries it.

A leg delivers the caller's audio frames and key presses, plays the assistant's audio, and says,
when the caller interrupts, how much of each assistant item they heard. `TwilioMediaStream` is the
phone implementation; `MemoryLeg` (tests) another; a SIP leg would be a third. Audio stays the
base64 G.711 μ-law strings the carrier and the model exchange: nothing is decoded on the way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from callassist.media.playback import Interrupted, PlaybackTracker


@dataclass(slots=True)  # not frozen: built 50 times a second per call, and a frozen init costs 10x
class CallerAudio:
    """One frame of the caller's audio: base64 μ-law, forwarded unchanged; `size` decoded bytes."""

    payload: str
    size: int


@dataclass(slots=True, frozen=True)
class Keypress:
    digit: str


class LegEnd(StrEnum):
    hung_up = "hung-up"  # the carrier said the call is over
    disconnected = "disconnected"  # the connection dropped
    unresponsive = "unresponsive"  # the carrier stopped reading what we send


@dataclass(slots=True, frozen=True)
class LegClosed:
    reason: LegEnd


LegEvent = CallerAudio | Keypress | LegClosed


@dataclass(slots=True)
class LegCounts:
    """What crossed the leg, for the call's last log line."""

    frames_in: int = 0
    chunks_out: int = 0
    bad_frames: int = 0
    barge_ins: int = 0


class MediaLeg(Protocol):
    counts: LegCounts

    async def receive(self) -> LegEvent:
        """The next event from the caller's side; LegClosed once it is gone (and from then on)."""

    async def play(self, item_id: str, payload: str, size: int) -> None:
        """Queue one chunk (`size` bytes once decoded) of the assistant item `item_id` for the caller."""

    async def clear(self, *, barge_in: bool = True) -> list[Interrupted]:
        """The caller interrupted (or the hold audio stops, `barge_in=False`): drop what is still
        queued; what was heard of each item."""

    @property
    def audible(self) -> bool:
        """Is assistant audio still queued or playing?"""

    def heard_ms(self, item_id: str) -> float:
        """How much of the item the caller has heard so far."""

    def sent_ms(self, item_id: str) -> float:
        """How much of the item was sent to the caller (heard, or queued to be)."""

    async def wait_drained(self, within_s: float) -> bool:
        """Until everything queued has played (True), or `within_s` passes (False)."""

    @property
    def lost(self) -> LegEnd | None:
        """Why the leg can no longer carry the call (a send failed), None while it can."""

    async def wait_lost(self) -> LegEnd:
        """Until the leg is lost while sending (receive() reports the caller's own hang-up)."""

    def forget_queued(self) -> list[Interrupted]:
        """The line is closing: whatever is still queued is never heard; what was, of each item."""

    async def close(self) -> None:
        """End the caller's side (the carrier continues with what follows, e.g. a hang-up)."""


class TrackedLeg:
    """What every leg that plays through a PlaybackTracker shares: the questions about playback,
    and being lost (a send that failed) as a value and as something to wait for."""

    def __init__(self, tracker: PlaybackTracker) -> None:
        self._tracker = tracker
        self._lost: LegEnd | None = None
        self._lost_event = asyncio.Event()

    def _lose(self, reason: LegEnd) -> None:
        if self._lost is None:
            self._lost = reason
            self._lost_event.set()

    @property
    def audible(self) -> bool:
        return self._tracker.audible

    def heard_ms(self, item_id: str) -> float:
        return self._tracker.heard_ms(item_id)

    def sent_ms(self, item_id: str) -> float:
        item = self._tracker.item(item_id)
        return item.sent_ms if item is not None else 0.0

    async def wait_drained(self, within_s: float) -> bool:
        return await self._tracker.wait_drained(within_s)

    @property
    def lost(self) -> LegEnd | None:
        return self._lost

    async def wait_lost(self) -> LegEnd:
        await self._lost_event.wait()
        assert self._lost is not None  # set with the event
        return self._lost
