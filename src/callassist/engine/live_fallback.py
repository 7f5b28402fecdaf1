"""Which engine a call gets (CALLASSIST_ENGINE), and GPT-Live's fallback to Realtime.

With `live`, a call starts on GPT-Live; if GPT-Live refuses us at the start (HTTP 401/403 at the
handshake, or an error about our session.start: an account without access, a model refused), the
call carries on with Realtime when CALLASSIST_LIVE_FALLBACK=realtime (the default), else it ends as
"assistant unavailable" (the caller gets the voicemail). Said once in the log at WARNING (later
calls at INFO): an account without access would otherwise log it on every call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from openai import AsyncOpenAI

from callassist.call.events import CallEvents
from callassist.engine.base import Engine, EngineUnavailable, SetupHook
from callassist.engine.events import EngineEvent
from callassist.engine.live import LiveEngine
from callassist.engine.realtime import RealtimeEngine
from callassist.live.billing import LiveBilling, UsageRecorder
from callassist.live.socket import LiveRefused
from callassist.realtime.pricing import PriceTable
from callassist.settings import Settings
from callassist.tools.registry import CallEffect, ToolRegistry

log = logging.getLogger(__name__)
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
_said = False  # the refusal was logged at WARNING once in this process


def build_engine(
    client: AsyncOpenAI, settings: Settings, tools: ToolRegistry, logger: Logger
) -> RealtimeEngine | FallbackEngine:
    """The engine for one call, as CALLASSIST_ENGINE says."""
    if settings.engine != "live":
        return RealtimeEngine(client, settings, logger=logger)
    live = LiveEngine(
        client,
        settings,
        logger=logger,
        ends_call=lambda name: CallEffect.END_CALL in tools.call_effects(name),
    )
    fallback = None
    if settings.live_fallback == "realtime":
        fallback = lambda: RealtimeEngine(client, settings, logger=logger)  # noqa: E731
    return FallbackEngine(live, fallback, logger=logger)


def engine_model(settings: Settings) -> str:
    """The model a call is recorded with."""
    return settings.live_model if settings.engine == "live" else settings.realtime_model


def bill(
    engine: Engine, recorder: UsageRecorder, prices: PriceTable, settings: Settings, events: CallEvents
) -> None:
    """GPT-Live's cost goes to the call's record (Realtime's is costed by the call's journal)."""
    if isinstance(engine, FallbackEngine):
        engine.live.billing = LiveBilling(
            recorder,
            prices,
            live_model=settings.live_model,
            backend_model=settings.live_backend_model,
            publish=events.publish,
        )


def _refused(exc: EngineUnavailable) -> bool:
    return isinstance(exc.__cause__, LiveRefused)


class FallbackEngine:
    """GPT-Live, or Realtime once GPT-Live refused us at the start. Every request goes to the
    engine in use; the caller's frames go to it too (one attribute lookup more per frame)."""

    def __init__(
        self, live: LiveEngine, fallback: Callable[[], Engine] | None, *, logger: Logger = log
    ) -> None:
        self.live = live
        self._fallback = fallback
        self._log = logger
        self.engine: Engine = live

    @property
    def fell_back(self) -> bool:
        return self.engine is not self.live

    async def _refused_by_live(self, exc: EngineUnavailable) -> None:
        global _said
        level = logging.INFO if _said else logging.WARNING
        _said = True
        if self._fallback is None:
            self._log.log(
                level, "GPT-Live refused this call (%s); no fallback (CALLASSIST_LIVE_FALLBACK=none)", exc
            )
            raise exc
        self._log.log(level, "GPT-Live refused this call (%s): it goes on with OpenAI Realtime", exc)
        frames = self.live.take_buffered_audio()
        await self.live.close()
        self.engine = self._fallback()
        await self.engine.connect()
        for frame in frames:  # what the caller said meanwhile: kept by the new engine until ready
            await self.engine.send_audio(frame)

    async def connect(self) -> None:
        try:
            await self.live.connect()
        except EngineUnavailable as exc:
            if not _refused(exc):
                raise
            await self._refused_by_live(exc)

    async def configure(self, setup: SetupHook) -> None:
        try:
            await self.engine.configure(setup)
        except EngineUnavailable as exc:
            if self.fell_back or not _refused(exc):
                raise
            await self._refused_by_live(exc)
            await self.engine.configure(setup)

    def events(self) -> AsyncIterator[EngineEvent]:
        return self.engine.events()  # asked for once configured: the engine in use is settled

    async def close(self) -> None:
        await self.engine.close()

    @property
    def ready(self) -> bool:
        return self.engine.ready

    @property
    def switching(self) -> bool:
        return self.engine.switching

    async def wait_ready(self, within_s: float) -> bool:
        return await self.engine.wait_ready(within_s)

    async def settled(self, within_s: float) -> bool:
        return await self.engine.settled(within_s)

    @property
    def buffered_frames(self) -> int:
        return self.engine.buffered_frames

    @property
    def session_age(self) -> float:
        return self.engine.session_age

    @property
    def reconnects(self) -> int:
        return self.engine.reconnects

    @property
    def rotations(self) -> int:
        return self.engine.rotations

    async def rotate(self, quiet: Callable[[], bool]) -> bool:
        return await self.engine.rotate(quiet)

    def send_audio(self, payload: str) -> Coroutine[Any, Any, None]:
        # The hot path (a frame every 20 ms): the engine's own coroutine, no second one around it.
        return self.engine.send_audio(payload)

    async def commit_input(self) -> bool:
        return await self.engine.commit_input()

    async def request_response(self, request: str, *, audio_only: bool = False) -> bool:
        return await self.engine.request_response(request, audio_only=audio_only)

    async def request_summary(self, instructions: str) -> bool:
        return await self.engine.request_summary(instructions)

    async def cancel_response(self, response_id: str | None = None) -> bool:
        return await self.engine.cancel_response(response_id)

    async def truncate(self, item_id: str, heard_ms: int) -> bool:
        return await self.engine.truncate(item_id, heard_ms)

    async def add_note(self, text: str) -> bool:
        return await self.engine.add_note(text)

    async def hold(self, on: bool) -> None:
        await self.engine.hold(on)

    async def add_tool_output(self, call_id: str, output_json: str) -> bool:
        return await self.engine.add_tool_output(call_id, output_json)
