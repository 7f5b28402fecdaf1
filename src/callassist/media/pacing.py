"""PacedLeg: the assistant's audio handed to a media leg close to real time, a small lead ahead.

Realtime stops a cut-off answer by truncation: the call clears Twilio's queue and tells the model
what was heard. GPT-Live has no truncation (the model stops speaking on its own when the caller
talks over it, its context append-only), and the service streams audio faster than it plays: what
is already queued at Twilio keeps playing after the model stopped. So for such an engine the leg is
given audio only `lead_ms` ahead of what plays: after the model stops, the caller hears at most
that much more (plus Twilio's own buffer), and a clear drops the rest before it was ever sent.

The lead (DEFAULT_LEAD_MS): GPT-Live's deltas come about every 100 ms, and our loop or the network
may hold one back by a few tens of ms; 200 ms (two deltas) keeps Twilio's queue from running dry
between them while keeping what plays after the model stops within the issue's ~200 ms. It costs no
turn latency: the first chunk of an answer goes at once (nothing is queued ahead of it); only the
rest of a burst waits. What is held here is neither sent nor heard, so the tracker's figures (heard,
sent) stay Twilio's. Hook: wrap the call's leg where the opening composes it (see the report).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from callassist.media.leg import LegCounts, LegEnd, LegEvent, MediaLeg
from callassist.media.playback import BYTES_PER_S, Interrupted

DEFAULT_LEAD_MS = 200.0


class PacedLeg:
    """Any media leg, fed at real time plus a lead (see the module's docstring)."""

    def __init__(
        self,
        inner: MediaLeg,
        *,
        lead_ms: float = DEFAULT_LEAD_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self.counts: LegCounts = inner.counts
        self.lead_s = lead_ms / 1000
        self._clock = clock
        self._held: deque[tuple[str, str, int]] = deque()  # (item_id, payload, size), not sent yet
        self._played_out_at = 0.0  # when what was handed over will have played (real time)
        self._pacer: asyncio.Task[None] | None = None
        self._empty = asyncio.Event()
        self._empty.set()
        self.held_max = 0  # the most chunks ever held at once (for benchmarks)

    # The assistant's audio ------------------------------------------------------------------------

    async def play(self, item_id: str, payload: str, size: int) -> None:
        now = self._clock()
        if not self._held and self._played_out_at - now <= self.lead_s:
            await self._hand_over(item_id, payload, size, now)  # within the lead: at once
            return
        self._held.append((item_id, payload, size))
        self.held_max = max(self.held_max, len(self._held))
        self._empty.clear()
        if self._pacer is None or self._pacer.done():
            self._pacer = asyncio.create_task(self._pace(), name="paced-leg")

    async def _hand_over(self, item_id: str, payload: str, size: int, now: float) -> None:
        self._played_out_at = max(self._played_out_at, now) + size / BYTES_PER_S
        await self._inner.play(item_id, payload, size)

    async def _pace(self) -> None:
        held = self._held
        while held:
            wait_s = self._played_out_at - self.lead_s - self._clock()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
                continue  # cleared meanwhile, or more came: look again
            item_id, payload, size = held.popleft()
            await self._hand_over(item_id, payload, size, self._clock())
        self._empty.set()

    def _drop_held(self) -> None:
        self._held.clear()
        self._empty.set()
        self._played_out_at = self._clock()  # the inner leg's queue is cleared (or soon is)

    async def clear(self, *, barge_in: bool = True) -> list[Interrupted]:
        self._drop_held()  # never sent: never heard
        return await self._inner.clear(barge_in=barge_in)

    def forget_queued(self) -> list[Interrupted]:
        self._drop_held()
        return self._inner.forget_queued()

    @property
    def audible(self) -> bool:
        return bool(self._held) or self._inner.audible

    def heard_ms(self, item_id: str) -> float:
        return self._inner.heard_ms(item_id)

    def sent_ms(self, item_id: str) -> float:
        return self._inner.sent_ms(item_id)

    async def wait_drained(self, within_s: float) -> bool:
        deadline = self._clock() + within_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), within_s)
        if self._held:
            return False
        return await self._inner.wait_drained(max(0.0, deadline - self._clock()))

    # The rest is the inner leg's ------------------------------------------------------------------

    async def receive(self) -> LegEvent:
        return await self._inner.receive()

    @property
    def lost(self) -> LegEnd | None:
        return self._inner.lost

    async def wait_lost(self) -> LegEnd:
        return await self._inner.wait_lost()

    async def close(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer
        self._drop_held()
        await self._inner.close()
