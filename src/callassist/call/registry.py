"""The live calls of this server: admission while running, a clean goodbye for each on shutdown."""

from __future__ import annotations

import asyncio
import logging

from callassist.call.bridge import CallBridge

log = logging.getLogger(__name__)
CLEANUP_S = 3.5  # after the goodbye: tools (1 s), summary (1.5 s), close (1 s), record flush


class CallRegistry:
    def __init__(self) -> None:
        self._calls: set[CallBridge] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self.accepting = True

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, bridge: CallBridge) -> None:
        self._calls.add(bridge)
        self._empty.clear()

    def remove(self, bridge: CallBridge) -> None:
        self._calls.discard(bridge)
        if not self._calls:
            self._empty.set()

    async def wait_idle(self, within_s: float) -> None:
        """Until no call is live (and its record is complete); TimeoutError after `within_s`."""
        await asyncio.wait_for(self._empty.wait(), within_s)

    async def drain(self, grace_s: float) -> None:
        """Stop taking calls; let each live call say goodbye and end within `grace_s`, and its record
        be completed (a few seconds more: summary, socket close, last writes)."""
        self.accepting = False
        if not self._calls:
            return
        log.info("shutting down: ending %d live call(s) within %.0fs", len(self._calls), grace_s)
        await asyncio.gather(*(call.wind_down(grace_s) for call in list(self._calls)), return_exceptions=True)
        try:
            await self.wait_idle(CLEANUP_S)
        except TimeoutError:
            log.warning("%d call(s) still open after the grace period", len(self._calls))
